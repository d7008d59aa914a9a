// Child processes for the testbed: spawning a program as an emulated device
// (optionally inside a network namespace and cgroups), identifying a process
// across pid reuse, stopping it with a bounded wait, and running short tools
// (`ip`, `tc`) with captured output and a deadline.
//
// Everything here is bounded in time: no call waits without a deadline.
// Thread-safety: functions are thread-safe; a Subprocess object is not.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace asteroid::testbed {

using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;

// A process named by pid plus its start time (field 22 of /proc/PID/stat), so
// that a recycled pid is never mistaken for the process we started.
struct ProcessRef {
  pid_t pid = 0;
  unsigned long long start_time = 0;

  // Running or stopped (not exited, not a zombie, same start time).
  bool alive() const;
  // 'R', 'S', 'T' (stopped: frozen), 'Z'... or 0 if gone / not ours.
  char state() const;
};

// The start time of a pid, or 0 when it does not exist.
unsigned long long process_start_time(pid_t pid);
ProcessRef process_ref(pid_t pid);

// Reaps `pid` if it is a child of this process that has exited (never blocks).
void reap_if_child(pid_t pid);

// Sends SIGTERM to every live process of `procs`, waits up to `grace` for all
// of them to exit, then SIGKILLs the rest and waits up to `kill_wait`.
// Stopped (frozen) processes get SIGCONT after SIGTERM so they can exit.
// Returns the refs still alive at the end (normally none).
std::vector<ProcessRef> stop_processes(const std::vector<ProcessRef>& procs, Millis grace,
                                       Millis kill_wait = Millis(3000));

struct SpawnOptions {
  std::vector<std::string> argv;  // argv[0] is looked up in PATH if it has no '/'
  std::vector<std::pair<std::string, std::string>> env;  // set in the child's environment
  // Output: a file (appended), a pipe readable through Subprocess, or
  // inherited when both are empty / false.
  std::string output_file;  // stdout and stderr both go there
  bool capture_stdout = false;
  bool capture_stderr = false;  // only with capture_stdout: a separate pipe
  bool stdin_null = true;
  bool new_session = false;     // setsid(): survives the launcher's terminal
  bool die_with_parent = false;  // PR_SET_PDEATHSIG(SIGKILL) on the spawning thread's exit
  std::string netns_path;        // e.g. /run/netns/NAME: setns(CLONE_NEWNET) before exec
  std::vector<std::string> cgroup_procs_files;  // "0" written to each before exec
  std::string cwd;
  // Called in the parent with the child's pid BEFORE the child may exec: a
  // launcher records the pid here, so that no child it started can exist
  // unrecorded (if the parent dies first, the child exits without exec).
  // If it throws, the child is killed and the exception propagates.
  std::function<void(pid_t)> on_forked;
};

struct SpawnError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct CommandResult {
  int status = -1;  // exit code (128 + signal when killed, -1 on timeout)
  std::string out, err;
  bool ok() const { return status == 0; }
};

// Runs a short command to completion with captured stdout/stderr; on timeout
// the command is killed and status is -1. Throws SpawnError if it cannot start.
CommandResult run_command(const std::vector<std::string>& argv, Millis timeout = Millis(10000),
                          const std::string& netns_path = "");

// A started child. The destructor SIGKILLs and reaps it unless it was
// released or has exited: a failing caller never leaves it running.
class Subprocess {
 public:
  Subprocess() = default;
  // Throws SpawnError naming the program and the step that failed (exec,
  // setns, cgroup) when the child could not be started.
  static Subprocess spawn(const SpawnOptions& opts);

  Subprocess(Subprocess&& o) noexcept;
  Subprocess& operator=(Subprocess&& o) noexcept;
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;
  ~Subprocess();

  pid_t pid() const { return pid_; }
  ProcessRef ref() const { return ref_; }
  bool running();  // reaps if exited
  // Exit status (exit code, or 128 + signal) once exited.
  std::optional<int> exit_status() const { return status_; }
  // Waits up to `timeout` for exit; returns the status or nullopt.
  std::optional<int> wait_for(Millis timeout);
  void signal(int sig);
  // SIGTERM, wait `grace`, SIGKILL; returns the exit status.
  int stop(Millis grace = Millis(3000));
  // Gives up ownership: the destructor will leave the process alone.
  ProcessRef release();

  // Reads one line of captured stdout (without '\n') before the deadline;
  // nullopt on EOF or timeout.
  std::optional<std::string> read_line(Clock::time_point deadline);
  // Reads captured stdout (and stderr) until EOF or the deadline.
  std::string read_all(Clock::time_point deadline);
  std::string read_all_stderr(Clock::time_point deadline);

 private:
  friend CommandResult run_command(const std::vector<std::string>&, Millis, const std::string&);
  void close_fds();
  pid_t pid_ = 0;
  ProcessRef ref_;
  std::optional<int> status_;
  bool released_ = false;
  int out_fd_ = -1, err_fd_ = -1;
  std::string out_buf_;
};

// Like run_command but throws std::runtime_error with the command line and its
// stderr when it does not exit 0.
std::string run_checked(const std::vector<std::string>& argv, Millis timeout = Millis(10000));

// "ip netns add x" style text for error messages.
std::string join_command(const std::vector<std::string>& argv);

// Whether an executable is found in PATH (or at that path).
std::string find_executable(const std::string& name);

}  // namespace asteroid::testbed
