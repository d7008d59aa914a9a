// Emulated links with Linux network namespaces, a bridge and tc (run as root).
//
// Topology of one cluster (all inside namespaces this code creates; the
// host's own interfaces, addresses and routes are never touched):
//
//   ns ast-<cid>-0            ns ast-<cid>-hub                ns ast-<cid>-1
//   eth0 10.213.K.1 ==veth== d0 ─┐                        ┌─ d1 ==veth== eth0 10.213.K.2
//    (htb egress: device→hub)    br0 10.213.K.254 (coordinator, tools)
//                            (htb on d0: hub→device)
//
// Each device's link gets the requested bandwidth in both directions: an htb
// class on the device side (its egress) and one on the hub side (its
// ingress). Per-pair overrides (cluster.json "links") are extra htb classes
// selected by u32 filters on the peer's address, on both ends. Latency uses
// netem under each htb class when the kernel has sch_netem (detected; the
// summary says when it does not). Cutting a link puts blackhole routes into
// the two devices' namespaces; cutting a device from everything takes its
// eth0 down.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "planner/types.h"

namespace asteroid::testbed {

struct NetnsSupport {
  bool available = false;
  bool netem = false;  // latency emulation possible
  // A veth's segments can be made small (gso_max_size), so that links
  // serialise messages as a real link does (NetworkPlan::small_segments).
  bool small_segments = false;
  std::string reason;  // why not available / why no netem
};

// Root, `ip` and `tc` present, a namespace and a veth can be created (probed).
NetnsSupport detect_netns();

struct NetDevice {
  std::string id;
  std::string netns;     // ast-<cid>-<index>
  std::string address;   // 10.213.K.<index+1>
  std::string hub_veth;  // d<index>, in the hub namespace
  double bandwidth_mbps = 0;
};

struct NetworkPlan {
  std::string cluster_id;
  std::string hub_netns;    // ast-<cid>-hub
  std::string hub_address;  // 10.213.K.254
  std::string subnet;       // 10.213.K.0/24
  double latency_ms = 0;    // one way, per device link, each direction
  bool netem = false;
  // Cap each veth's segments at about 1 ms of its slowest shaped rate. A veth
  // hands htb segments of up to 64 KB (GSO) and htb sends a whole segment
  // whenever its bucket is not empty, so without the cap a 50 KB message
  // crossed a 100 Mbit/s link at once instead of in 4 ms: the average rate
  // held, but pipelines ran as if transfers cost nothing (a two-stage
  // pipeline measured 36 ms rounds; 57 ms with the cap, 58 ms simulated).
  bool small_segments = false;
  std::vector<NetDevice> devices;
  std::vector<planner::Link> links;  // per-pair overrides

  const NetDevice& device(const std::string& id) const;  // throws std::invalid_argument
};

// Names and addresses (pure, apart from reading /proc/net/route to pick a
// /16 that no host route covers). REQUIRES: <= 250 devices.
NetworkPlan plan_network(const std::string& cluster_id, const planner::Cluster& cluster,
                         double latency_ms, bool netem);

// Creates the namespaces, bridge, veths, addresses and qdiscs.
// `on_netns_created` is called as soon as each namespace exists, so a caller
// can record it for clean-up before anything else can fail.
void build_network(const NetworkPlan& plan,
                   const std::function<void(const std::string& netns)>& on_netns_created);

// Kills what still runs in each namespace and deletes it (hub last).
// Only names starting with "ast-" are touched. Returns error messages.
std::vector<std::string> delete_namespaces(const std::vector<std::string>& names);

// The tc (and, with small_segments, ip) commands that shape one side of a
// device's link (for docs/tests).
std::vector<std::vector<std::string>> link_shaping_commands(const NetworkPlan& plan, size_t device_index,
                                                            bool hub_side);

// Link faults. `b` may be a device id, "hub" (the coordinator's side) or
// "*" (everything: the device's eth0 goes down).
void cut_link(const NetworkPlan& plan, const std::string& a, const std::string& b);
void heal_link(const NetworkPlan& plan, const std::string& a, const std::string& b);

std::string netns_path(const std::string& name);  // /run/netns/<name>
bool netns_exists(const std::string& name);

// Moves the calling thread into the namespace (setns). Called before other
// threads exist, it moves the whole process (threads created later inherit
// it). Throws std::runtime_error naming the namespace on failure.
void enter_netns(const std::string& name);

// Runs fn on a fresh thread that has entered the namespace, and waits for it.
// Exceptions from fn are rethrown here.
void run_in_netns(const std::string& name, const std::function<void()>& fn);

}  // namespace asteroid::testbed
