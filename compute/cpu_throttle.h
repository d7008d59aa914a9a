// CpuThrottle: makes compute run as if on a fraction of one core, inside the
// process. The fallback of the emulated testbed where cgroup CPU quotas are
// not available (not root): a node started with `--cpu-share S` wraps each
// compute call in `throttle.run(...)`, which measures the CPU time the call
// used and then sleeps so that the call takes cpu_time / S of wall time.
//
//   CpuThrottle throttle = CpuThrottle::from_environment(cpu_share);
//   auto out = throttle.run([&] { return stage.forward(x); });
//
// Slow-down faults (`asteroid inject slow DEVICE FACTOR`) reach the node
// through a control file: the launcher sets ASTEROID_THROTTLE_FILE for the
// node, the throttle re-reads it at most every 100 ms, and its content (a
// number >= 1, "1" or no file = no slow-down) divides the share.
//
// What it measures: by default the calling thread's CPU time
// (CLOCK_THREAD_CPUTIME_ID), right when the compute runs on that thread; if
// the call fans out to worker threads (Torch intra-op threads), construct it
// with Clock::process so all of the process's CPU time during the call counts
// (then concurrent calls from two threads count each other's time too).
//
// Thread-safety: run() may be called from several threads at once; each
// call sleeps for its own debt. Header-only, no Torch.
#pragma once

#include <sys/stat.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>

namespace asteroid::compute {

class CpuThrottle {
 public:
  enum class Clock { thread, process };
  using Nanos = std::chrono::nanoseconds;

  // share: fraction of one core (e.g. 0.25); >= 1 or <= 0 means no throttling.
  explicit CpuThrottle(double share = 1.0, Clock clock = Clock::thread) : clock_(clock), base_share_(share) {}

  CpuThrottle(const CpuThrottle& o) : clock_(o.clock_) {
    std::lock_guard<std::mutex> lock(o.mu_);
    base_share_ = o.base_share_;
    slow_factor_ = o.slow_factor_;
    control_file_ = o.control_file_;
  }
  CpuThrottle& operator=(const CpuThrottle&) = delete;

  // The node's throttle: `share` if given (> 0), else $ASTEROID_CPU_SHARE,
  // else none; control file from $ASTEROID_THROTTLE_FILE.
  static CpuThrottle from_environment(std::optional<double> share = std::nullopt,
                                      Clock clock = Clock::thread) {
    double s = 1.0;
    if (share && *share > 0) {
      s = *share;
    } else if (const char* e = std::getenv("ASTEROID_CPU_SHARE")) {
      char* end = nullptr;
      double v = std::strtod(e, &end);
      if (end != e && v > 0) s = v;
    }
    CpuThrottle t(s, clock);
    if (const char* f = std::getenv("ASTEROID_THROTTLE_FILE")) t.set_control_file(f);
    return t;
  }

  // Runs f() and then sleeps for the call's share of throttling.
  template <class F>
  decltype(auto) run(F&& f) {
    Section s(*this);
    return std::forward<F>(f)();
  }

  // RAII form of run(): throttles the scope it lives in.
  class Section {
   public:
    explicit Section(CpuThrottle& t) : t_(t), cpu0_(t.cpu_now()), wall0_(std::chrono::steady_clock::now()) {}
    ~Section() { t_.settle(t_.cpu_now() - cpu0_, std::chrono::steady_clock::now() - wall0_); }
    Section(const Section&) = delete;
    Section& operator=(const Section&) = delete;

   private:
    CpuThrottle& t_;
    Nanos cpu0_;
    std::chrono::steady_clock::time_point wall0_;
  };

  void set_share(double share) {
    std::lock_guard<std::mutex> lock(mu_);
    base_share_ = share;
  }
  void set_slow_factor(double factor) {
    std::lock_guard<std::mutex> lock(mu_);
    slow_factor_ = factor >= 1 ? factor : 1;
  }
  void set_control_file(std::string path) {
    std::lock_guard<std::mutex> lock(mu_);
    control_file_ = std::move(path);
    next_check_ = {};
  }
  // The share in force: base share / slow factor (re-reads the control file).
  double share() {
    std::lock_guard<std::mutex> lock(mu_);
    poll_control_file();
    return effective_share();
  }
  double slow_factor() {
    std::lock_guard<std::mutex> lock(mu_);
    poll_control_file();
    return slow_factor_;
  }
  bool active() { return share() < 1.0; }
  // Total time slept so far.
  Nanos slept() const {
    std::lock_guard<std::mutex> lock(mu_);
    return slept_;
  }

  // The wall time a call that used `cpu` of CPU should take (for tests).
  static Nanos target_wall(Nanos cpu, double share) {
    if (!(share > 0) || share >= 1) return cpu;
    return Nanos(static_cast<long long>(static_cast<double>(cpu.count()) / share));
  }

 private:
  Nanos cpu_now() const {
    timespec ts{};
    ::clock_gettime(clock_ == Clock::thread ? CLOCK_THREAD_CPUTIME_ID : CLOCK_PROCESS_CPUTIME_ID, &ts);
    return Nanos(static_cast<long long>(ts.tv_sec) * 1000000000LL + ts.tv_nsec);
  }

  double effective_share() const {
    double s = base_share_ > 0 ? base_share_ : 1.0;
    return s / slow_factor_;
  }

  // REQUIRES: mu_ held.
  void poll_control_file() {
    if (control_file_.empty()) return;
    auto now = std::chrono::steady_clock::now();
    if (now < next_check_) return;
    next_check_ = now + std::chrono::milliseconds(100);
    struct stat sb;
    if (::stat(control_file_.c_str(), &sb) != 0) {
      slow_factor_ = 1.0;  // no file: no slow-down
      return;
    }
    std::ifstream in(control_file_);
    double f = 0;
    if (in >> f && f >= 1) slow_factor_ = f;  // unreadable or < 1: keep the last value
  }

  void settle(Nanos cpu, std::chrono::steady_clock::duration wall_d) {
    Nanos wall = std::chrono::duration_cast<Nanos>(wall_d);
    Nanos sleep{0};
    {
      std::lock_guard<std::mutex> lock(mu_);
      poll_control_file();
      double s = effective_share();
      if (s >= 1.0) return;
      // Target wall time minus what the call already took (slower when the
      // machine is busy: that counts too), plus what earlier sleeps overshot.
      sleep = target_wall(cpu, s) - wall + carry_;
      carry_ = Nanos(0);
      if (sleep <= Nanos(0)) {
        // No credit for calls that were already slow, except the overshoot
        // of earlier sleeps (negative carry), which is forgotten here.
        return;
      }
    }
    auto t0 = std::chrono::steady_clock::now();
    std::this_thread::sleep_for(sleep);
    Nanos actual = std::chrono::duration_cast<Nanos>(std::chrono::steady_clock::now() - t0);
    std::lock_guard<std::mutex> lock(mu_);
    slept_ += actual;
    // Oversleeping (timer slack) is paid back by the next call, up to 10 ms.
    carry_ = std::max(Nanos(-10000000), sleep - actual);
  }

  const Clock clock_;
  mutable std::mutex mu_;
  double base_share_ = 1.0;
  double slow_factor_ = 1.0;
  std::string control_file_;
  std::chrono::steady_clock::time_point next_check_{};
  Nanos carry_{0};
  Nanos slept_{0};
};

}  // namespace asteroid::compute
