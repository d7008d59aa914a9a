// Reaching a cluster from outside its nodes: running a command as one of its
// devices or in the hub (EmulatedCluster::exec, exec_as_device), entering its
// network (enter_cluster_network), and checking that a cluster file's devices
// answer (unreachable_devices).
#include "apps/testbed/emulated_cluster.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "apps/testbed/cluster_nodes.h"
#include "apps/testbed/cluster_state.h"
#include "apps/testbed/netns.h"

namespace asteroid::testbed {

namespace fs = std::filesystem;

Subprocess EmulatedCluster::exec(const std::string& device, const std::vector<std::string>& argv,
                                 SpawnOptions base) const {
  ClusterState s = load_state(dir_);
  base.argv = argv;
  if (device.empty() || device == "hub") {
    if (s.mech.net == "netns-tc") base.netns_path = netns_path(s.hub_netns);
    base.env.emplace_back("ASTEROID_CLUSTER_DIR", s.dir);
    base.env.emplace_back("ASTEROID_HUB_ADDRESS", s.hub_address);
  } else {
    const NodeRecord& n = s.node(device);
    if (!n.netns.empty()) base.netns_path = netns_path(n.netns);
    base.cgroup_procs_files = node_procs_files(n);
    for (const auto& kv : device_env(s, n)) base.env.push_back(kv);
  }
  return Subprocess::spawn(base);
}

void exec_as_device(const std::string& dir, const std::string& device, const std::vector<std::string>& argv) {
  if (argv.empty()) throw std::invalid_argument("cluster exec: no command given (use -- CMD ARGS...)");
  ClusterState s = load_state(fs::absolute(dir).lexically_normal().string());
  if (s.state == "down") throw std::runtime_error("the cluster in " + dir + " is down");
  std::vector<std::pair<std::string, std::string>> env;
  std::string ns_name;
  if (device.empty() || device == "hub") {
    ns_name = s.mech.net == "netns-tc" ? s.hub_netns : "";
    env = {{"ASTEROID_CLUSTER_DIR", s.dir}, {"ASTEROID_HUB_ADDRESS", s.hub_address}};
  } else {
    const NodeRecord& n = s.node(device);
    ns_name = n.netns;
    env = device_env(s, n);
    for (const auto& f : node_procs_files(n)) {
      std::ofstream out(f);
      out << "0" << std::flush;
      if (!out) throw std::runtime_error("cannot join cgroup " + f + ": " + std::strerror(errno));
    }
  }
  if (!ns_name.empty()) enter_netns(ns_name);
  for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
  std::vector<std::string> args = argv;
  std::vector<char*> cargv;
  for (auto& a : args) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  ::execvp(cargv[0], cargv.data());
  throw std::runtime_error("cannot run '" + argv[0] + "': " + std::strerror(errno));
}

std::string enter_cluster_network(const std::string& dir_or_file) {
  fs::path p = fs::absolute(dir_or_file);
  if (fs::is_regular_file(p)) p = p.parent_path();
  if (!fs::exists(p / "nodes.json")) return "none";  // not an emulated cluster: real devices
  ClusterState s = load_state(p.lexically_normal().string());
  if (s.mech.net != "netns-tc") return s.mech.net;
  if (s.state == "down") throw std::runtime_error("the emulated cluster in " + p.string() + " is down");
  enter_netns(s.hub_netns);
  return s.mech.net;
}

std::vector<std::string> unreachable_devices(const planner::Cluster& cluster, Millis timeout) {
  std::vector<std::string> out;
  std::vector<std::thread> threads;
  std::vector<char> ok(cluster.devices.size(), 0);
  auto deadline = Clock::now() + timeout;
  for (size_t i = 0; i < cluster.devices.size(); ++i) {
    const auto& d = cluster.devices[i];
    if (d.host.empty() || d.port <= 0) {
      ok[i] = 1;
      continue;
    }
    threads.emplace_back([&, i] {
      const auto& dev = cluster.devices[i];
      while (!ok[i] && Clock::now() < deadline) {
        if (can_connect(dev.host, dev.port, Millis(200))) ok[i] = 1;
        else std::this_thread::sleep_for(Millis(50));
      }
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < cluster.devices.size(); ++i)
    if (!ok[i]) out.push_back(cluster.devices[i].id);
  return out;
}

}  // namespace asteroid::testbed
