// The persisted state of an emulated cluster: nodes.json in the cluster
// directory, holding everything needed to reach, fault and clean up the
// cluster (pids with start times, namespaces, cgroups, mechanisms, cuts).
// Internal to the testbed; the public API is emulated_cluster.h.
//
// Every change is a read-modify-write under an exclusive file lock on the
// directory (update_state), so handles in different processes see each
// other's changes; nodes.json is replaced atomically (write, then rename).
#pragma once

#include <sys/types.h>

#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "apps/testbed/emulated_cluster.h"
#include "apps/testbed/netns.h"
#include "apps/testbed/process.h"
#include "planner/types.h"

namespace asteroid::testbed {

// One device's node process and how it is emulated.
struct NodeRecord {
  std::string id;
  int index = 0;
  pid_t pid = 0;
  unsigned long long start = 0;
  std::string listen_host;
  int listen_port = 0;
  std::string host;  // public (cluster.json)
  int port = 0;
  std::string netns, address;
  std::string cgroup_cpu, cgroup_memory;
  double base_share = 0;  // 0: unlimited
  double slow_factor = 1;
  double memory_mb = 0;
  std::string log;
  std::vector<std::string> argv;
  std::vector<std::pair<std::string, std::string>> env;

  ProcessRef ref() const { return ProcessRef{pid, start}; }
};

struct ClusterState {
  std::string cluster_id, dir, name, state = "starting";  // state: starting | up | down
  Mechanisms mech;
  std::string cgroup_version = "none";
  std::vector<std::string> cgroup_dirs, namespaces;
  std::string hub_netns, hub_address = "127.0.0.1", subnet;
  double latency_ms = 0;
  bool netem = false;
  pid_t relay_pid = 0;
  unsigned long long relay_start = 0;
  std::string relay_config;
  std::vector<std::string> cuts;  // "a|b"
  double default_bandwidth_mbps = 0;
  std::vector<planner::Link> links;
  pid_t launcher_pid = 0;
  std::vector<NodeRecord> nodes;

  // Throws std::invalid_argument naming the known devices for an unknown id.
  NodeRecord& node(const std::string& id);
  // The namespaces and links as netns.h describes them (for cut/heal).
  NetworkPlan network() const;
};

// <dir>/nodes.json
std::string nodes_file(const std::string& dir);

// Exclusive lock on the cluster directory's state (<dir>/.nodes.lock);
// waits at most 15 s, then throws std::runtime_error.
class DirLock {
 public:
  explicit DirLock(const std::string& dir);
  ~DirLock();
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;

 private:
  int fd_ = -1;
};

// Throws std::runtime_error when there is no nodes.json or it is not valid.
ClusterState load_state(const std::string& dir);
// Writes s to <s.dir>/nodes.json. REQUIRES: the caller holds the DirLock.
void save_state(const ClusterState& s);

// Read-modify-write of nodes.json under the lock: f(ClusterState&) changes
// the state, which is saved afterwards; returns what f returns.
template <class F>
auto update_state(const std::string& dir, F&& f) {
  DirLock lock(dir);
  ClusterState s = load_state(dir);
  if constexpr (std::is_void_v<decltype(f(s))>) {
    f(s);
    save_state(s);
  } else {
    auto r = f(s);
    save_state(s);
    return r;
  }
}

}  // namespace asteroid::testbed
