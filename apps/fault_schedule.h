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
// started). Actions: kill, freeze, thaw, slow (needs factor > 0), restore (slow 1), cut-link and
// heal-link (need peer: a device id, "hub" or "*"), restart.
//
// Two forms for chaos campaigns (apps/chaos.h), with `round` only:
//   {"round": 40, "when": "recovery", ...}: injected at the first failure the
//     job reports from round 40 on, as the recovery starts (a fault during a
//     recovery); not at all when no failure comes.
//   {"device": "?a7", ...}: an alias, resolved when first injected to a device
//     whose loss, with the devices the schedule has down at that moment (and
//     the ones failing, for "when": "recovery"), leaves every stage of the
//     plan in force a member or a replica holder (pick_safe_device); later
//     faults naming "?a7" act on the same device. No such device: the fault
//     and every later one of the alias are logged as skipped.
//   {"action": "cut-link", "device": "?a7", "peer": "?b7"}: a peer alias,
//     resolved to a pipeline neighbour of the device (a member of its stage
//     or of an adjacent one) whose loss is safe too (pick_safe_neighbour):
//     a partition between two devices that both still reach the coordinator.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <set>
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
  std::string action;              // kill | freeze | thaw | slow | restore | cut-link | heal-link | restart
  std::string device;
  std::string peer;                // cut-link / heal-link
  double factor = 1;               // slow
  bool on_recovery = false;        // "when": "recovery"

  bool alias() const { return !device.empty() && device[0] == '?'; }

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

// A device of `devices`, not in `down`, whose loss together with `down`'s
// leaves every stage of `plan` a surviving member or (a single-device stage)
// a surviving replica holder (planner::replica_holder): preferably one the
// plan uses. Among the candidates, `key` picks one (deterministically).
// nullopt when none is safe.
std::optional<std::string> pick_safe_device(const planner::Plan& plan, const std::vector<std::string>& devices,
                                            const std::set<std::string>& down, uint64_t key);

// A device of `plan` in the stage of `device` or an adjacent one, not
// `device`, not in `down`, whose loss is safe as for pick_safe_device; `key`
// picks among them. nullopt when none is (or `device` is not in the plan).
std::optional<std::string> pick_safe_neighbour(const planner::Plan& plan, const std::string& device,
                                               const std::set<std::string>& down, uint64_t key);

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

  // Before round `round` starts for the first time; `plan` is the plan in
  // force (aliases are resolved against it).
  void before_round(uint64_t round, const planner::Plan& plan);
  // The job reports a failure of `failing` (the recovery is starting):
  // injects the due "when": "recovery" faults.
  void on_failure(const planner::Plan& plan, const std::vector<std::string>& failing);
  // Stops the timer thread (bounded: at most one injection in progress) and
  // logs the faults that never came due as not reached. Idempotent.
  void finish();
  size_t injected() const { return injected_; }

 private:
  void inject(testbed::EmulatedCluster& cluster, const Fault& f);
  // Injects faults_[i] unless done; resolves its alias first (REQUIRES: the
  // calling thread is the training thread).
  void inject_due(size_t i, const planner::Plan& plan, const std::set<std::string>& failing);
  void log_line(const nlohmann::json& line);
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
  // Aliases and what the schedule has down; the training thread only.
  std::map<std::string, std::string> aliases_;  // "?a7" -> device, or "" when skipped
  std::set<std::string> down_;
};

}  // namespace asteroid::apps
