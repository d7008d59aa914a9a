// An emulated heterogeneous edge cluster on one machine: one node process per
// device, each made as slow, small and far away as its device (docs/testbed.md).
//
//   ClusterSpec spec = preset_spec("C", 1000);
//   LaunchOptions opt;  opt.dir = "runs/x";
//   EmulatedCluster cluster = EmulatedCluster::up(spec, opt);  // nodes ready
//   enter_cluster_network(opt.dir);   // before any thread/socket: reach the nodes
//   ... cluster.cluster() has every device's host/port ...
//   cluster.inject_kill("nano-1");
//   cluster.down();                   // or let the destructor do it
//
// Mechanisms, chosen per machine (detected, never assumed) and recorded in
// nodes.json and mechanisms():
//   cpu     cgroup-v1 | cgroup-v2 (CPU quota per node, as root)
//           | throttle (the node gets --cpu-share and throttles itself)
//           | none
//   memory  cgroup-v1 | cgroup-v2 (limit = the device's memory) | node (the
//           node enforces its --memory-mb budget itself)
//   net     netns-tc (a namespace per device, veth to a hub bridge, htb both
//           ways; as root) | relay (a shaping TCP relay per device) | none
//
// Files in the cluster directory: cluster.json (FORMATS.md; the addresses to
// reach every device), nodes.json (everything needed to stop and clean up:
// pids with start times, namespaces, cgroups, mechanisms), logs/<id>.log,
// control/ (slow-down and cut files read by throttles and relays).
//
// Ownership: the object returned by up() owns the cluster (its destructor
// tears it down) unless detach() is called; attach() gives a non-owning
// handle on a running cluster (fault injection, status, down). Every state
// change goes through nodes.json under a file lock, so handles in different
// processes (the coordinator and `asteroid inject`) see each other's changes.
// Not thread-safe: one handle per thread.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "apps/testbed/process.h"
#include "planner/types.h"

namespace asteroid::testbed {

// What to emulate: the devices (id, memory_mb, emulate.cpu_share), the link
// bandwidth (default and per pair). host/port of the devices are ignored:
// the launcher assigns them.
struct ClusterSpec {
  planner::Cluster cluster;
  std::string name;  // "env C" or the file it came from (for messages)
};

// A preset (A-D) at a link bandwidth; cpu_budget <= 0: default_cpu_budget().
// Throws std::invalid_argument for an unknown preset.
ClusterSpec preset_spec(const std::string& env, double bandwidth_mbps = 1000, double cpu_budget = 0);
// A cluster.json (planner::load_cluster; InputError names file and field).
ClusterSpec file_spec(const std::string& path);

enum class CpuMode { automatic, cgroup, throttle, none };
enum class NetMode { automatic, netns, relay, none };
CpuMode parse_cpu_mode(const std::string& s);  // auto|cgroup|throttle|none
NetMode parse_net_mode(const std::string& s);  // auto|netns|relay|none

struct LaunchOptions {
  std::string dir;  // REQUIRED: created if missing
  // The node program; the launcher appends
  //   --port P --host ADDR --id ID --memory-mb M [--cpu-share S]
  // Empty: {asteroid_binary, "node"}.
  std::vector<std::string> node_command;
  // The asteroid executable (nodes and the relay process). Empty: this
  // process's own executable.
  std::string asteroid_binary;
  CpuMode cpu = CpuMode::automatic;
  NetMode net = NetMode::automatic;
  bool memory_limits = true;   // cgroup memory limit = the device's memory
  double latency_ms = 0.5;     // one way, added on each device's link per direction
  int base_port = 7100;        // netns: every node listens on this port at its own address
  Millis ready_timeout{30000};  // all nodes must accept connections within this
  Millis stop_grace{5000};      // SIGTERM to SIGKILL
  bool die_with_parent = true;  // nodes get SIGKILL if the launching thread dies
  // Mutual TLS (docs/security.md): the cluster gets its own authority and a
  // certificate per device in DIR/tls, its nodes run with --tls-dir, and
  // cluster.json names the folder. False: plain TCP (--no-tls).
  bool tls = true;
  std::function<void(const std::string&)> log;  // progress lines (may be empty)
  const std::atomic<bool>* cancel = nullptr;    // set => up() aborts and cleans up
};

struct Mechanisms {
  std::string cpu = "none";     // cgroup-v1 | cgroup-v2 | throttle | none
  std::string memory = "node";  // cgroup-v1 | cgroup-v2 | node
  std::string net = "none";     // netns-tc | relay | none
  bool latency = false;         // link latency emulated
  std::vector<std::string> notes;  // why a fallback was taken
  std::string summary() const;     // "cpu=cgroup-v1 memory=cgroup-v1 net=netns-tc latency=none (...)"
};

struct NodeStatus {
  std::string id;
  pid_t pid = 0;
  std::string state;        // running | frozen | dead
  std::string host;         // where clients reach it (cluster.json)
  int port = 0;
  std::string listen;       // where the node itself listens
  double cpu_share = 0;     // in force (base / slow factor); 0: unlimited
  double slow_factor = 1;
  double memory_mb = 0;
  std::string netns, cgroup, log;
};

struct ClusterStatus {
  std::string dir, cluster_id, state;  // state: starting | up | down
  Mechanisms mechanisms;
  std::string hub_address;  // netns: the coordinator's address; else 127.0.0.1
  std::vector<NodeStatus> nodes;
  std::vector<std::string> cut_links;  // "a<->b"
  std::string table() const;            // human-readable
};

class EmulatedCluster {
 public:
  // Starts every device's node under its emulation and waits until each
  // accepts TCP connections. On any failure (a node that exits, a timeout,
  // cancel) everything created so far is removed before the exception
  // (std::runtime_error with the reason and the node's log tail) leaves.
  static EmulatedCluster up(const ClusterSpec& spec, const LaunchOptions& opts);
  // A handle on a running cluster (reads dir/nodes.json). Non-owning.
  static EmulatedCluster attach(const std::string& dir);

  EmulatedCluster(EmulatedCluster&&) noexcept;
  EmulatedCluster& operator=(EmulatedCluster&&) noexcept;
  ~EmulatedCluster();  // down() if owning; never throws

  // Stops the nodes (SIGTERM, bounded wait, SIGKILL; only recorded pids, then
  // whatever still runs inside the cluster's own namespaces/cgroups) and
  // removes namespaces, cgroups and control files. Idempotent. Throws
  // std::runtime_error listing what could not be removed.
  void down();
  // Gives up ownership: the cluster stays up after this object is gone.
  void detach();
  // SIGTERM-to-SIGKILL wait of down() (default 5 s).
  void set_stop_grace(Millis grace) { stop_grace_ = grace; }

  const std::string& dir() const { return dir_; }
  // cluster.json's content: every device with host/port to reach it.
  planner::Cluster cluster() const;
  Mechanisms mechanisms() const;
  ClusterStatus status() const;

  // Starts a command as a device (its namespace, its cgroups, its throttle
  // environment) or, with device == "" / "hub", in the hub namespace.
  // Environment: ASTEROID_DEVICE_ID, ASTEROID_CLUSTER_DIR,
  // ASTEROID_DEVICE_ADDRESS, ASTEROID_HUB_ADDRESS, and in throttle mode
  // ASTEROID_CPU_SHARE / ASTEROID_THROTTLE_FILE. `base` supplies output
  // redirection etc.; its argv is replaced by `argv`.
  Subprocess exec(const std::string& device, const std::vector<std::string>& argv,
                  SpawnOptions base = {}) const;

  // ---- fault injection (asteroid inject, train --faults) ----
  void inject_kill(const std::string& id);    // SIGKILL
  void inject_freeze(const std::string& id);  // SIGSTOP (socket stays open)
  void inject_thaw(const std::string& id);    // SIGCONT
  // CPU share = base share / factor (factor 1 restores). REQUIRES factor > 0.
  void inject_slow(const std::string& id, double factor);
  // b: a device id, "hub" (the coordinator side, netns only) or "*" (all).
  void inject_cut_link(const std::string& a, const std::string& b);
  void inject_heal_link(const std::string& a, const std::string& b);
  // Starts a dead node again with its original command and emulation, and
  // waits until it accepts connections.
  void inject_restart(const std::string& id, Millis ready_timeout = Millis(30000));

 private:
  EmulatedCluster() = default;
  std::string dir_;
  bool owning_ = false;
  Millis stop_grace_{5000};
  std::vector<Subprocess> children_;  // started by this handle (reaped on down)
};

// Moves the calling process into the cluster's hub network namespace
// (netns-tc mode), so that cluster.json's addresses are reachable; a no-op
// for relay/none. `dir_or_file` is the cluster directory or a cluster.json
// inside it. Call it before creating any thread or socket (setns(2) moves
// only the calling thread; threads created later inherit it). Returns the
// net mechanism. Throws std::runtime_error if the namespace is gone.
std::string enter_cluster_network(const std::string& dir_or_file);

// Replaces this process with `argv` running as a device (or the hub): joins
// its cgroups and namespace, sets the environment of exec(), execvp.
// Returns only by throwing. For `asteroid cluster exec`.
[[noreturn]] void exec_as_device(const std::string& dir, const std::string& device,
                                 const std::vector<std::string>& argv);

// Devices of `cluster` (with host and port) that do not accept a TCP
// connection within `timeout` (tried in parallel, in this process's current
// network namespace): the check behind "a cluster file whose devices are
// unreachable" errors. Devices without host/port are skipped.
std::vector<std::string> unreachable_devices(const planner::Cluster& cluster, Millis timeout = Millis(3000));

// This process's executable (/proc/self/exe).
std::string self_executable();

}  // namespace asteroid::testbed
