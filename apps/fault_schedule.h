// A schedule of faults for `asteroid train --faults faults.json`: which
// device to kill, freeze, thaw, slow down, cut off, heal or restart, at which
// round or after how many seconds of training. The faults go through the
// testbed's injection API (apps/testbed/emulated_cluster.h), so they are the
// same faults `asteroid inject` causes; each injection is logged with its
// time in faults.jsonl.
//
// File format (docs/default-job.md): a JSON array, or {"faults": [...]}, of
//   {"round": 40, "action": "kill", "device": "nano-1"}
//   {"after_s": 12.5, "action": "freeze", "device": "tx2-0"}
//   {"round": 60, "action": "slow", "device": "nx-0", "factor": 2}
//   {"round": 70, "action": "cut-link", "device": "nano-0", "peer": "tx2-0"}
// with exactly one of `round` (0-based global round, injected just before it
// starts for the first time) and `after_s` (seconds after the first round
// started). Actions: kill, freeze, thaw, slow (needs factor > 0), cut-link and
// heal-link (need peer: a device id, "hub" or "*"), restart.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "planner/types.h"

namespace asteroid::testbed {
class EmulatedCluster;
}

namespace asteroid::apps {

struct Fault {
  size_t index = 0;                // position in the file (for messages)
  std::optional<uint64_t> round;   // exactly one of round and after_s
  std::optional<double> after_s;
  std::string action;              // kill | freeze | thaw | slow | cut-link | heal-link | restart
  std::string device;
  std::string peer;                // cut-link / heal-link
  double factor = 1;               // slow

  // "round 40: kill nano-1", "after 12.5 s: slow nx-0 x2"
  std::string describe() const;
};

// Parses a fault schedule. Throws std::invalid_argument naming the file, the
// entry (faults[i]) and what was expected.
std::vector<Fault> load_faults(const std::string& path);
std::vector<Fault> faults_from_json(const std::string& json_text, const std::string& source);
// Every device (and peer) the schedule names is a device of `cluster`.
// Throws std::invalid_argument naming the file, the entry and the device.
void check_faults(const std::vector<Fault>& faults, const planner::Cluster& cluster, const std::string& source);

// Injects a schedule into a running emulated cluster. Round faults are
// injected by before_round() on the calling (training) thread through
// `owner`; time faults by a timer thread of its own (started by the first
// before_round(), stopped by finish()) through its own handle on the same
// cluster directory. Every injection, successful or not, is one line of the
// log file: {"t_s":..., "round":..., "action":..., "device":..., "ok":true}.
// A fault whose injection fails is logged with its error and training goes
// on (the supervisor sees whatever did happen).
class FaultInjector {
 public:
  // REQUIRES: `owner` outlives this object. `log_path` is created.
  FaultInjector(testbed::EmulatedCluster& owner, std::vector<Fault> faults, const std::string& log_path,
                std::function<void(const std::string&)> announce = {});
  ~FaultInjector();  // finish()
  FaultInjector(const FaultInjector&) = delete;
  FaultInjector& operator=(const FaultInjector&) = delete;

  // Before round `round` starts for the first time.
  void before_round(uint64_t round);
  // Stops the timer thread (bounded: at most one injection in progress) and
  // logs the faults that never came due as not reached. Idempotent.
  void finish();
  size_t injected() const { return injected_; }

 private:
  void inject(testbed::EmulatedCluster& cluster, const Fault& f);
  void timer_loop();

  testbed::EmulatedCluster& owner_;
  std::vector<Fault> faults_;
  std::vector<bool> done_;
  std::function<void(const std::string&)> announce_;
  std::mutex mutex_;  // log file, done_, timing
  std::condition_variable wake_;
  std::FILE* log_ = nullptr;
  std::thread timer_;
  bool stop_ = false, started_ = false, finished_ = false;
  std::chrono::steady_clock::time_point t0_;
  std::atomic<uint64_t> round_{0};
  std::atomic<size_t> injected_{0};
};

}  // namespace asteroid::apps
