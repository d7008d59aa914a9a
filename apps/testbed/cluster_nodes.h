// The node processes of an emulated cluster: the environment a device's
// programs get, starting a node as its record says (command, environment,
// namespace, cgroups, log), and waiting until nodes accept connections.
// Used by EmulatedCluster::up() and inject_restart(), so a restarted node is
// started exactly as the first time. Internal to the testbed.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "apps/testbed/cluster_state.h"
#include "apps/testbed/process.h"

namespace asteroid::testbed {

// A number as nodes read it on their command line, in their environment and
// in control files (and as the status table shows it): "%.6g".
std::string format_double(double v);

// One TCP connect attempt to host:port (an IPv4 address) within `timeout`.
bool can_connect(const std::string& host, int port, Millis timeout = Millis(200));

// The last `lines` lines of a log, each on a line of its own behind "    | "
// (for error messages); " (log empty)" when there are none.
std::string log_tail(const std::string& path, int lines = 15);

// The environment of a program run as device n: ASTEROID_DEVICE_ID,
// ASTEROID_CLUSTER_DIR, ASTEROID_DEVICE_ADDRESS, ASTEROID_HUB_ADDRESS, and
// with cpu=throttle|none ASTEROID_THROTTLE_FILE (and ASTEROID_CPU_SHARE).
std::vector<std::pair<std::string, std::string>> device_env(const ClusterState& s, const NodeRecord& n);

// The cgroup.procs files a process writes to join node n's cgroups.
std::vector<std::string> node_procs_files(const NodeRecord& n);

// Starts node n with its recorded argv and env, in its namespace and
// cgroups, in a session of its own, its output appended to n.log after a
// line "# <log_heading><command>". Between fork and exec, n.pid and n.start
// are set and `record()` runs (it persists them), so no node ever runs
// unrecorded. Throws SpawnError when the node cannot be started.
Subprocess spawn_node(NodeRecord& n, bool die_with_parent, const std::string& log_heading,
                      const std::function<void()>& record);

// What differs between callers of wait_until_accepting.
struct StartupChecks {
  // Throws when node i (an index into the nodes waited for) has exited.
  std::function<void(size_t i)> ensure_running;
  // Called first in every round (e.g. to honour a cancel flag); may be empty.
  std::function<void()> each_round;
  // Whether something else the nodes are reached through (the relay)
  // accepts too; asked after the nodes in each round until it says yes.
  // May throw; empty: nothing else to wait for.
  std::function<bool()> others_ready;
};

struct Readiness {
  bool ready = false;                 // everything accepted before the deadline
  std::vector<size_t> not_accepting;  // !ready: the nodes still not accepting
};

// Polls every 20 ms until every node of `nodes` accepts TCP connections at
// its listen address and checks.others_ready() holds, or `deadline` passes.
// In each round, each node not yet accepting gets ensure_running(i), then a
// connect attempt. Polls from inside the network namespace `netns` when it
// is not empty (the hub's, where netns-tc nodes are reachable). Exceptions
// of the checks leave as they are.
Readiness wait_until_accepting(const std::vector<NodeRecord>& nodes, Clock::time_point deadline,
                               const std::string& netns, const StartupChecks& checks);

}  // namespace asteroid::testbed
