// Partitions between devices that all still answer the heartbeat monitor.
// Every node reports the pipeline peers it cannot reach (actors/peer_watch.h,
// in its heartbeat replies); a pair where either side cannot reach the
// other is a cut link. The judge names the devices to treat as lost so that
// no cut link joins two devices still in use: repeatedly the device on the
// most cut links (a device cut off from several peers, or one whose view
// is wrong and reports all of them, is the one to take out, not each of
// its peers), ties broken towards a device outside the plan, then the
// later one in plan order, then the larger id. A device it
// named stays named while a cut link still touches it (it keeps watching
// its old peers), and is back once none has for `settle` (the other end
// may not have reported yet: nodes notice a cut at different times); while
// the monitor does not
// hear it (frozen, dead) it stays named, so that coming back to the monitor
// does not make its cut someone else's. Pure; the coordinator feeds it the
// monitor's reports.
#pragma once

#include <chrono>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace asteroid::actors {

class PartitionJudge {
 public:
  using Time = std::chrono::steady_clock::time_point;

  explicit PartitionJudge(std::chrono::milliseconds settle = std::chrono::milliseconds(6000)) : settle_(settle) {}

  struct Changes {
    std::vector<std::string> partitioned;  // newly named: treat as lost
    std::vector<std::string> healed;       // no longer named: back
  };

  // The latest list of peers `device` cannot reach (replaces the previous).
  void report(const std::string& device, std::vector<std::string> unreachable);

  // Judges again. `alive`: devices that answer the monitor (reports from
  // or about others do not count: their loss is the monitor's to report);
  // `plan_order`: the running plan's devices in stage order.
  Changes judge(const std::set<std::string>& alive, const std::vector<std::string>& plan_order, Time now);

  const std::set<std::string>& partitioned() const { return partitioned_; }

 private:
  std::chrono::milliseconds settle_;
  std::map<std::string, std::set<std::string>> reports_;  // reporter -> unreachable peers
  std::set<std::string> partitioned_;
  std::map<std::string, Time> clear_since_;  // named devices no cut link touches, since when
};

}  // namespace asteroid::actors
