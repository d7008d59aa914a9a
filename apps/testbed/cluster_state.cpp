#include "apps/testbed/cluster_state.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <thread>

namespace asteroid::testbed {

namespace fs = std::filesystem;
using json = nlohmann::json;

NodeRecord& ClusterState::node(const std::string& id) {
  for (auto& n : nodes)
    if (n.id == id) return n;
  std::string known;
  for (auto& n : nodes) known += (known.empty() ? "" : ", ") + n.id;
  throw std::invalid_argument("unknown device '" + id + "' (devices: " + known + ")");
}

NetworkPlan ClusterState::network() const {
  NetworkPlan p;
  p.cluster_id = cluster_id;
  p.hub_netns = hub_netns;
  p.hub_address = hub_address;
  p.subnet = subnet;
  p.latency_ms = latency_ms;
  p.netem = netem;
  p.links = links;
  for (const auto& n : nodes) {
    NetDevice d;
    d.id = n.id;
    d.netns = n.netns;
    d.address = n.address;
    d.hub_veth = "d" + std::to_string(n.index);
    d.bandwidth_mbps = default_bandwidth_mbps;
    p.devices.push_back(d);
  }
  return p;
}

// ---- nodes.json ------------------------------------------------------------------------

namespace {

json to_json(const Mechanisms& m) {
  return {{"cpu", m.cpu}, {"memory", m.memory}, {"net", m.net}, {"latency", m.latency}, {"notes", m.notes}};
}

Mechanisms mech_from_json(const json& j) {
  Mechanisms m;
  m.cpu = j.value("cpu", "none");
  m.memory = j.value("memory", "node");
  m.net = j.value("net", "none");
  m.latency = j.value("latency", false);
  m.notes = j.value("notes", std::vector<std::string>{});
  return m;
}

json to_json(const ClusterState& s) {
  json nodes = json::array();
  for (const auto& n : s.nodes) {
    json env = json::object();
    for (const auto& [k, v] : n.env) env[k] = v;
    nodes.push_back({{"id", n.id},
                     {"index", n.index},
                     {"pid", n.pid},
                     {"start_time", n.start},
                     {"listen_host", n.listen_host},
                     {"listen_port", n.listen_port},
                     {"host", n.host},
                     {"port", n.port},
                     {"netns", n.netns},
                     {"address", n.address},
                     {"cgroup_cpu", n.cgroup_cpu},
                     {"cgroup_memory", n.cgroup_memory},
                     {"cpu_share", n.base_share},
                     {"slow_factor", n.slow_factor},
                     {"memory_mb", n.memory_mb},
                     {"log", n.log},
                     {"argv", n.argv},
                     {"env", env}});
  }
  json links = json::array();
  for (const auto& l : s.links) links.push_back({{"a", l.a}, {"b", l.b}, {"bandwidth_mbps", l.bandwidth_mbps}});
  return {{"format", "asteroid-nodes/1"},
          {"cluster_id", s.cluster_id},
          {"dir", s.dir},
          {"name", s.name},
          {"state", s.state},
          {"mechanisms", to_json(s.mech)},
          {"cgroup_version", s.cgroup_version},
          {"cgroups", s.cgroup_dirs},
          {"namespaces", s.namespaces},
          {"hub", {{"netns", s.hub_netns}, {"address", s.hub_address}, {"subnet", s.subnet}}},
          {"latency_ms", s.latency_ms},
          {"netem", s.netem},
          {"relay", {{"pid", s.relay_pid}, {"start_time", s.relay_start}, {"config", s.relay_config}}},
          {"cut_links", s.cuts},
          {"default_bandwidth_mbps", s.default_bandwidth_mbps},
          {"links", links},
          {"launcher_pid", s.launcher_pid},
          {"nodes", nodes}};
}

ClusterState state_from_json(const json& j) {
  ClusterState s;
  s.cluster_id = j.at("cluster_id").get<std::string>();
  s.dir = j.value("dir", "");
  s.name = j.value("name", "");
  s.state = j.value("state", "starting");
  s.mech = mech_from_json(j.value("mechanisms", json::object()));
  s.cgroup_version = j.value("cgroup_version", "none");
  s.cgroup_dirs = j.value("cgroups", std::vector<std::string>{});
  s.namespaces = j.value("namespaces", std::vector<std::string>{});
  const json hub = j.value("hub", json::object());
  s.hub_netns = hub.value("netns", "");
  s.hub_address = hub.value("address", "127.0.0.1");
  s.subnet = hub.value("subnet", "");
  s.latency_ms = j.value("latency_ms", 0.0);
  s.netem = j.value("netem", false);
  const json relay = j.value("relay", json::object());
  s.relay_pid = relay.value("pid", 0);
  s.relay_start = relay.value("start_time", 0ULL);
  s.relay_config = relay.value("config", "");
  s.cuts = j.value("cut_links", std::vector<std::string>{});
  s.default_bandwidth_mbps = j.value("default_bandwidth_mbps", 0.0);
  for (const auto& l : j.value("links", json::array()))
    s.links.push_back({l.at("a").get<std::string>(), l.at("b").get<std::string>(), l.at("bandwidth_mbps").get<double>()});
  s.launcher_pid = j.value("launcher_pid", 0);
  for (const auto& n : j.at("nodes")) {
    NodeRecord r;
    r.id = n.at("id").get<std::string>();
    r.index = n.value("index", 0);
    r.pid = n.value("pid", 0);
    r.start = n.value("start_time", 0ULL);
    r.listen_host = n.value("listen_host", "");
    r.listen_port = n.value("listen_port", 0);
    r.host = n.value("host", "");
    r.port = n.value("port", 0);
    r.netns = n.value("netns", "");
    r.address = n.value("address", "");
    r.cgroup_cpu = n.value("cgroup_cpu", "");
    r.cgroup_memory = n.value("cgroup_memory", "");
    r.base_share = n.value("cpu_share", 0.0);
    r.slow_factor = n.value("slow_factor", 1.0);
    r.memory_mb = n.value("memory_mb", 0.0);
    r.log = n.value("log", "");
    r.argv = n.value("argv", std::vector<std::string>{});
    const json env = n.value("env", json::object());  // named: items() must not outlive it
    for (const auto& [k, v] : env.items()) r.env.emplace_back(k, v.get<std::string>());
    s.nodes.push_back(r);
  }
  return s;
}

}  // namespace

std::string nodes_file(const std::string& dir) { return (fs::path(dir) / "nodes.json").string(); }

DirLock::DirLock(const std::string& dir) {
  std::string path = (fs::path(dir) / ".nodes.lock").string();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
  auto deadline = Clock::now() + Millis(15000);
  while (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    if (Clock::now() >= deadline) {
      ::close(fd_);
      throw std::runtime_error("timed out waiting for the lock " + path);
    }
    std::this_thread::sleep_for(Millis(5));
  }
}

DirLock::~DirLock() {
  ::flock(fd_, LOCK_UN);
  ::close(fd_);
}

ClusterState load_state(const std::string& dir) {
  std::string path = nodes_file(dir);
  std::ifstream in(path);
  if (!in) throw std::runtime_error("no emulated cluster in " + dir + " (" + path + " not found)");
  try {
    json j;
    in >> j;
    return state_from_json(j);
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": not a valid nodes file: " + e.what());
  }
}

void save_state(const ClusterState& s) {
  std::string path = nodes_file(s.dir);
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp);
    out << to_json(s).dump(2) << "\n";
    if (!out) throw std::runtime_error("cannot write " + tmp);
  }
  fs::rename(tmp, path);
}

}  // namespace asteroid::testbed
