#include "apps/testbed/process.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

extern char** environ;

namespace asteroid::testbed {

namespace {

// Reads fields 3 (state) and 22 (starttime) of /proc/PID/stat.
bool read_stat(pid_t pid, char& state, unsigned long long& start) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  if (!in) return false;
  std::string line;
  std::getline(in, line);
  auto close = line.rfind(')');  // comm may contain spaces and parentheses
  if (close == std::string::npos || close + 2 >= line.size()) return false;
  std::istringstream rest(line.substr(close + 2));
  std::string field;
  // rest starts at field 3.
  for (int i = 3; i <= 22 && (rest >> field); ++i) {
    if (i == 3) state = field.empty() ? 0 : field[0];
    if (i == 22) {
      start = std::stoull(field);
      return true;
    }
  }
  return false;
}

int decode_status(int st) {
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
  return -1;
}

void sleep_a_little(Millis total_elapsed) {
  // Poll quickly at first, then back off to 20 ms.
  std::this_thread::sleep_for(total_elapsed < Millis(50) ? Millis(2) : Millis(20));
}

enum ChildStep : int { kStepNetns = 1, kStepCgroup, kStepChdir, kStepExec, kStepIo, kStepSession };

const char* step_name(int step) {
  switch (step) {
    case kStepNetns: return "entering the network namespace (setns)";
    case kStepCgroup: return "joining the cgroup";
    case kStepChdir: return "changing directory";
    case kStepExec: return "exec";
    case kStepIo: return "redirecting output";
    case kStepSession: return "setsid";
  }
  return "starting";
}

[[noreturn]] void child_fail(int fd, int step) {
  int msg[2] = {step, errno};
  ssize_t w = ::write(fd, msg, sizeof msg);
  (void)w;
  _exit(127);
}

}  // namespace

unsigned long long process_start_time(pid_t pid) {
  char st = 0;
  unsigned long long start = 0;
  if (pid <= 0 || !read_stat(pid, st, start)) return 0;
  return start;
}

ProcessRef process_ref(pid_t pid) { return ProcessRef{pid, process_start_time(pid)}; }

char ProcessRef::state() const {
  char st = 0;
  unsigned long long start = 0;
  if (pid <= 0 || !read_stat(pid, st, start)) return 0;
  if (start_time != 0 && start != start_time) return 0;
  return st;
}

bool ProcessRef::alive() const {
  reap_if_child(pid);
  char st = state();
  return st != 0 && st != 'Z' && st != 'X' && st != 'x';
}

void reap_if_child(pid_t pid) {
  if (pid <= 0) return;
  int st = 0;
  // ECHILD when not our child: harmless.
  ::waitpid(pid, &st, WNOHANG);
}

std::vector<ProcessRef> stop_processes(const std::vector<ProcessRef>& procs, Millis grace,
                                       Millis kill_wait) {
  std::vector<ProcessRef> live;
  for (const auto& p : procs)
    if (p.alive()) live.push_back(p);
  for (const auto& p : live) {
    ::kill(p.pid, SIGTERM);
    ::kill(p.pid, SIGCONT);  // a frozen process must run to handle SIGTERM
  }
  auto wait_all = [&](Millis limit) {
    auto t0 = Clock::now();
    while (true) {
      std::vector<ProcessRef> still;
      for (const auto& p : live)
        if (p.alive()) still.push_back(p);
      live.swap(still);
      if (live.empty() || Clock::now() - t0 >= limit) return;
      sleep_a_little(std::chrono::duration_cast<Millis>(Clock::now() - t0));
    }
  };
  wait_all(grace);
  for (const auto& p : live) ::kill(p.pid, SIGKILL);
  wait_all(kill_wait);
  return live;
}

std::string find_executable(const std::string& name) {
  if (name.empty()) return {};
  if (name.find('/') != std::string::npos) return ::access(name.c_str(), X_OK) == 0 ? name : "";
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  dirs += ":/usr/sbin:/sbin:/usr/local/sbin";  // ip and tc live in sbin
  std::istringstream in(dirs);
  std::string dir;
  while (std::getline(in, dir, ':')) {
    if (dir.empty()) continue;
    std::string candidate = dir + "/" + name;
    struct stat sb;
    if (::stat(candidate.c_str(), &sb) == 0 && S_ISREG(sb.st_mode) &&
        ::access(candidate.c_str(), X_OK) == 0)
      return candidate;
  }
  return {};
}

std::string join_command(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) {
    if (!s.empty()) s += ' ';
    s += a.find_first_of(" \t'\"") == std::string::npos ? a : "'" + a + "'";
  }
  return s;
}

// ---- Subprocess ---------------------------------------------------------------

Subprocess Subprocess::spawn(const SpawnOptions& o) {
  if (o.argv.empty()) throw SpawnError("spawn: empty command");
  std::string exe = find_executable(o.argv[0]);
  if (exe.empty()) throw SpawnError("cannot start '" + o.argv[0] + "': not found or not executable");

  // Everything the child needs is prepared here: after fork() it may only
  // make async-signal-safe calls.
  std::vector<std::string> env_strings;
  for (char** e = environ; e && *e; ++e) {
    std::string kv = *e;
    std::string key = kv.substr(0, kv.find('='));
    bool overridden = false;
    for (const auto& [k, v] : o.env) overridden = overridden || k == key;
    if (!overridden) env_strings.push_back(kv);
  }
  for (const auto& [k, v] : o.env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp, argv;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = o.argv;
  for (auto& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);

  std::vector<int> to_close;
  auto close_all = [&] {
    for (int fd : to_close)
      if (fd >= 0) ::close(fd);
  };
  int netns_fd = -1;
  if (!o.netns_path.empty()) {
    netns_fd = ::open(o.netns_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (netns_fd < 0)
      throw SpawnError("cannot open network namespace " + o.netns_path + ": " + std::strerror(errno));
    to_close.push_back(netns_fd);
  }
  std::vector<int> cg_fds;
  for (const auto& f : o.cgroup_procs_files) {
    int fd = ::open(f.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
      int e = errno;
      close_all();
      throw SpawnError("cannot open " + f + ": " + std::strerror(e));
    }
    cg_fds.push_back(fd);
    to_close.push_back(fd);
  }
  int out_file = -1;
  if (!o.output_file.empty()) {
    out_file = ::open(o.output_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (out_file < 0) {
      int e = errno;
      close_all();
      throw SpawnError("cannot open " + o.output_file + ": " + std::strerror(e));
    }
    to_close.push_back(out_file);
  }
  int out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1}, report[2] = {-1, -1};
  if (o.capture_stdout && ::pipe2(out_pipe, O_CLOEXEC) != 0) {
    close_all();
    throw SpawnError("pipe: " + std::string(std::strerror(errno)));
  }
  if (o.capture_stdout && o.capture_stderr && ::pipe2(err_pipe, O_CLOEXEC) != 0) {
    close_all();
    throw SpawnError("pipe: " + std::string(std::strerror(errno)));
  }
  if (::pipe2(report, O_CLOEXEC) != 0) {
    close_all();
    throw SpawnError("pipe: " + std::string(std::strerror(errno)));
  }
  int go[2] = {-1, -1};  // the parent's "you may exec now"
  if (::pipe2(go, O_CLOEXEC) != 0) {
    close_all();
    for (int fd : {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1], report[0], report[1]})
      if (fd >= 0) ::close(fd);
    throw SpawnError("pipe: " + std::string(std::strerror(errno)));
  }
  int null_fd = o.stdin_null ? ::open("/dev/null", O_RDWR | O_CLOEXEC) : -1;
  pid_t parent = ::getpid();

  pid_t pid = ::fork();
  if (pid < 0) {
    int e = errno;
    close_all();
    for (int fd : {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1], report[0], report[1], null_fd, go[0], go[1]})
      if (fd >= 0) ::close(fd);
    throw SpawnError("fork: " + std::string(std::strerror(e)));
  }
  if (pid == 0) {
    // ---- child: async-signal-safe calls only ----
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int s : {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGCHLD}) ::signal(s, SIG_DFL);
    if (o.new_session && ::setsid() < 0) child_fail(report[1], kStepSession);
    if (o.die_with_parent) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) _exit(127);
    }
    for (int fd : cg_fds)
      if (::write(fd, "0", 1) != 1) child_fail(report[1], kStepCgroup);
    if (netns_fd >= 0 && ::setns(netns_fd, CLONE_NEWNET) != 0) child_fail(report[1], kStepNetns);
    if (null_fd >= 0 && ::dup2(null_fd, 0) < 0) child_fail(report[1], kStepIo);
    if (out_file >= 0 && (::dup2(out_file, 1) < 0 || ::dup2(out_file, 2) < 0))
      child_fail(report[1], kStepIo);
    if (out_pipe[1] >= 0 && ::dup2(out_pipe[1], 1) < 0) child_fail(report[1], kStepIo);
    if (err_pipe[1] >= 0 && ::dup2(err_pipe[1], 2) < 0) child_fail(report[1], kStepIo);
    if (!o.cwd.empty() && ::chdir(o.cwd.c_str()) != 0) child_fail(report[1], kStepChdir);
    {
      // Wait for the parent's go (it records our pid first); EOF means the
      // parent is gone or gave up: never exec then.
      ::close(go[1]);
      char c = 0;
      ssize_t n;
      do {
        n = ::read(go[0], &c, 1);
      } while (n < 0 && errno == EINTR);
      if (n != 1) _exit(127);
    }
#ifdef SYS_close_range
    // Descriptors the parent's libraries opened without O_CLOEXEC (sockets of
    // a test, say) must not leak into a long-lived node.
    ::syscall(SYS_close_range, 3u, ~0u, 4u /* CLOSE_RANGE_CLOEXEC */);
#endif
    ::execve(exe.c_str(), argv.data(), envp.data());
    child_fail(report[1], kStepExec);
  }
  // ---- parent ----
  close_all();
  for (int fd : {out_pipe[1], err_pipe[1], report[1], null_fd, go[0]})
    if (fd >= 0) ::close(fd);
  if (o.on_forked) {
    try {
      o.on_forked(pid);
    } catch (...) {
      ::close(go[1]);  // the child exits without exec
      int st = 0;
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &st, 0);
      for (int fd : {report[0], out_pipe[0], err_pipe[0]})
        if (fd >= 0) ::close(fd);
      throw;
    }
  }
  {
    char c = 1;
    ssize_t w;
    do {
      w = ::write(go[1], &c, 1);
    } while (w < 0 && errno == EINTR);
    ::close(go[1]);
  }
  int msg[2] = {0, 0};
  ssize_t n;
  do {
    n = ::read(report[0], msg, sizeof msg);
  } while (n < 0 && errno == EINTR);
  ::close(report[0]);
  Subprocess p;
  p.pid_ = pid;
  p.out_fd_ = out_pipe[0];
  p.err_fd_ = err_pipe[0];
  if (n == static_cast<ssize_t>(sizeof msg)) {
    int st = 0;
    ::waitpid(pid, &st, 0);  // it _exit()s right after reporting
    p.pid_ = 0;
    p.close_fds();
    throw SpawnError("cannot start '" + join_command(o.argv) + "': " + step_name(msg[0]) +
                     " failed: " + std::strerror(msg[1]));
  }
  p.ref_ = ProcessRef{pid, process_start_time(pid)};
  return p;
}

Subprocess::Subprocess(Subprocess&& o) noexcept { *this = std::move(o); }

Subprocess& Subprocess::operator=(Subprocess&& o) noexcept {
  if (this != &o) {
    if (pid_ > 0 && !released_ && !status_) {
      ::kill(pid_, SIGKILL);
      int st;
      ::waitpid(pid_, &st, 0);
    }
    close_fds();
    pid_ = std::exchange(o.pid_, 0);
    ref_ = o.ref_;
    status_ = o.status_;
    released_ = o.released_;
    out_fd_ = std::exchange(o.out_fd_, -1);
    err_fd_ = std::exchange(o.err_fd_, -1);
    out_buf_ = std::move(o.out_buf_);
  }
  return *this;
}

Subprocess::~Subprocess() {
  if (pid_ > 0 && !released_ && !status_) {
    ::kill(pid_, SIGKILL);
    ::kill(pid_, SIGCONT);
    int st;
    // SIGKILL cannot be ignored: this wait ends at once.
    ::waitpid(pid_, &st, 0);
  }
  close_fds();
}

void Subprocess::close_fds() {
  if (out_fd_ >= 0) ::close(out_fd_);
  if (err_fd_ >= 0) ::close(err_fd_);
  out_fd_ = err_fd_ = -1;
}

bool Subprocess::running() {
  if (pid_ <= 0 || status_ || released_) return false;
  int st = 0;
  pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    status_ = decode_status(st);
    return false;
  }
  return r == 0;
}

std::optional<int> Subprocess::wait_for(Millis timeout) {
  auto t0 = Clock::now();
  while (running()) {
    auto waited = std::chrono::duration_cast<Millis>(Clock::now() - t0);
    if (waited >= timeout) return std::nullopt;
    sleep_a_little(waited);
  }
  return status_;
}

void Subprocess::signal(int sig) {
  if (pid_ > 0 && !status_ && !released_) ::kill(pid_, sig);
}

int Subprocess::stop(Millis grace) {
  if (!running()) return status_.value_or(-1);
  signal(SIGTERM);
  signal(SIGCONT);
  if (auto st = wait_for(grace)) return *st;
  signal(SIGKILL);
  int st = 0;
  ::waitpid(pid_, &st, 0);
  status_ = decode_status(st);
  return *status_;
}

ProcessRef Subprocess::release() {
  released_ = true;
  return ref_;
}

namespace {
// Reads what is available on fd into buf; false on EOF/error.
bool read_some(int fd, std::string& buf) {
  char chunk[4096];
  ssize_t n = ::read(fd, chunk, sizeof chunk);
  if (n > 0) {
    buf.append(chunk, static_cast<size_t>(n));
    return true;
  }
  return n < 0 && (errno == EINTR || errno == EAGAIN);
}

int ms_until(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(std::min<long long>(left, 1000));
}

// Appends what fd gives to `all` until its end (then closes it and sets fd
// to -1) or the deadline.
void drain(int& fd, std::string& all, Clock::time_point deadline) {
  while (fd >= 0 && Clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, ms_until(deadline)) > 0 && !read_some(fd, all)) {
      ::close(fd);
      fd = -1;
    }
  }
}
}  // namespace

std::optional<std::string> Subprocess::read_line(Clock::time_point deadline) {
  while (true) {
    auto nl = out_buf_.find('\n');
    if (nl != std::string::npos) {
      std::string line = out_buf_.substr(0, nl);
      out_buf_.erase(0, nl + 1);
      return line;
    }
    if (out_fd_ < 0) return std::nullopt;
    pollfd p{out_fd_, POLLIN, 0};
    int r = ::poll(&p, 1, ms_until(deadline));
    if (r > 0) {
      if (!read_some(out_fd_, out_buf_)) {
        ::close(out_fd_);
        out_fd_ = -1;
        if (!out_buf_.empty()) return std::exchange(out_buf_, std::string());
        return std::nullopt;
      }
    } else if (Clock::now() >= deadline) {
      return std::nullopt;
    }
  }
}

std::string Subprocess::read_all(Clock::time_point deadline) {
  std::string all = std::exchange(out_buf_, std::string());
  drain(out_fd_, all, deadline);
  return all;
}

std::string Subprocess::read_all_stderr(Clock::time_point deadline) {
  std::string all;
  drain(err_fd_, all, deadline);
  return all;
}

// ---- short commands -------------------------------------------------------------

CommandResult run_command(const std::vector<std::string>& argv, Millis timeout,
                          const std::string& netns_path) {
  SpawnOptions o;
  o.argv = argv;
  o.capture_stdout = true;
  o.capture_stderr = true;
  o.netns_path = netns_path;
  o.env = {{"LC_ALL", "C"}};
  Subprocess p = Subprocess::spawn(o);
  auto deadline = Clock::now() + timeout;
  CommandResult r;
  // Drain both pipes together so neither can fill up and block the child.
  int fds[2] = {p.out_fd_, p.err_fd_};
  std::string* bufs[2] = {&r.out, &r.err};
  while ((fds[0] >= 0 || fds[1] >= 0) && Clock::now() < deadline) {
    pollfd ps[2];
    int n = 0, idx[2];
    for (int i = 0; i < 2; ++i)
      if (fds[i] >= 0) {
        ps[n] = pollfd{fds[i], POLLIN, 0};
        idx[n++] = i;
      }
    if (::poll(ps, n, ms_until(deadline)) <= 0) continue;
    for (int k = 0; k < n; ++k)
      if (ps[k].revents && !read_some(fds[idx[k]], *bufs[idx[k]])) {
        ::close(fds[idx[k]]);
        fds[idx[k]] = -1;
      }
  }
  p.out_fd_ = fds[0];
  p.err_fd_ = fds[1];
  auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now());
  if (auto st = p.wait_for(std::max(left, Millis(0)))) {
    r.status = *st;
  } else {
    p.stop(Millis(0));
    r.status = -1;
    r.err += "\n(timed out after " + std::to_string(timeout.count()) + " ms)";
  }
  return r;
}

std::string run_checked(const std::vector<std::string>& argv, Millis timeout) {
  CommandResult r = run_command(argv, timeout);
  if (!r.ok()) {
    std::string err = r.err;
    while (!err.empty() && (err.back() == '\n' || err.back() == ' ')) err.pop_back();
    throw std::runtime_error("'" + join_command(argv) + "' failed (status " +
                             std::to_string(r.status) + ")" + (err.empty() ? "" : ": " + err));
  }
  return r.out;
}

}  // namespace asteroid::testbed
