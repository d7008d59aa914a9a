#include "apps/testbed/emulated_cluster.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "apps/testbed/cgroups.h"
#include "apps/testbed/netns.h"
#include "apps/testbed/presets.h"
#include "planner/json_io.h"

namespace asteroid::testbed {

namespace fs = std::filesystem;
using json = nlohmann::json;

// ---- specs and modes ---------------------------------------------------------------

ClusterSpec preset_spec(const std::string& env, double bandwidth_mbps, double cpu_budget) {
  PresetOptions o;
  o.bandwidth_mbps = bandwidth_mbps;
  o.cpu_budget_cores = cpu_budget;
  return ClusterSpec{make_preset(env, o), "env " + env};
}

ClusterSpec file_spec(const std::string& path) { return ClusterSpec{planner::load_cluster(path), path}; }

CpuMode parse_cpu_mode(const std::string& s) {
  if (s == "auto") return CpuMode::automatic;
  if (s == "cgroup") return CpuMode::cgroup;
  if (s == "throttle") return CpuMode::throttle;
  if (s == "none") return CpuMode::none;
  throw std::invalid_argument("unknown CPU mechanism '" + s + "': expected auto, cgroup, throttle or none");
}

NetMode parse_net_mode(const std::string& s) {
  if (s == "auto") return NetMode::automatic;
  if (s == "netns") return NetMode::netns;
  if (s == "relay") return NetMode::relay;
  if (s == "none") return NetMode::none;
  throw std::invalid_argument("unknown network mechanism '" + s + "': expected auto, netns, relay or none");
}

std::string Mechanisms::summary() const {
  std::string s = "cpu=" + cpu + " memory=" + memory + " net=" + net + " latency=" + (latency ? "yes" : "none");
  for (const auto& n : notes) s += "\n  note: " + n;
  return s;
}

std::string self_executable() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : p.string();
}

// ---- nodes.json ------------------------------------------------------------------------

namespace {

struct NodeRec {
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

struct State {
  std::string cluster_id, dir, name, state = "starting";
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
  std::vector<NodeRec> nodes;

  NodeRec& node(const std::string& id) {
    for (auto& n : nodes)
      if (n.id == id) return n;
    std::string known;
    for (auto& n : nodes) known += (known.empty() ? "" : ", ") + n.id;
    throw std::invalid_argument("unknown device '" + id + "' (devices: " + known + ")");
  }

  NetworkPlan network() const {
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
};

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

json to_json(const State& s) {
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

State state_from_json(const json& j) {
  State s;
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
    NodeRec r;
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

std::string nodes_file(const std::string& dir) { return (fs::path(dir) / "nodes.json").string(); }

// Exclusive lock on the cluster directory's state, bounded wait.
class DirLock {
 public:
  explicit DirLock(const std::string& dir) {
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
  ~DirLock() {
    ::flock(fd_, LOCK_UN);
    ::close(fd_);
  }
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;

 private:
  int fd_ = -1;
};

State load_state(const std::string& dir) {
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

void save_state(const State& s) {
  std::string path = nodes_file(s.dir);
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp);
    out << to_json(s).dump(2) << "\n";
    if (!out) throw std::runtime_error("cannot write " + tmp);
  }
  fs::rename(tmp, path);
}

// Read-modify-write of nodes.json under the lock.
template <class F>
auto update_state(const std::string& dir, F&& f) {
  DirLock lock(dir);
  State s = load_state(dir);
  if constexpr (std::is_void_v<decltype(f(s))>) {
    f(s);
    save_state(s);
  } else {
    auto r = f(s);
    save_state(s);
    return r;
  }
}

std::string random_id() {
  std::random_device rd;
  char b[8];
  std::snprintf(b, sizeof b, "%06x", static_cast<unsigned>(rd()) & 0xffffffu);
  return b;
}

std::string format_double(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.6g", v);
  return b;
}

// A free TCP port on 127.0.0.1 (bound, read, released).
int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    if (fd >= 0) ::close(fd);
    throw std::runtime_error("cannot find a free port on 127.0.0.1: " + std::string(std::strerror(errno)));
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

// One TCP connect attempt with a short timeout.
bool can_connect(const std::string& host, int port, Millis timeout = Millis(200)) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = false;
  if (::inet_pton(AF_INET, host.c_str(), &a.sin_addr) == 1) {
    int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    if (rc == 0) {
      ok = true;
    } else if (errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, static_cast<int>(timeout.count())) > 0) {
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        ok = err == 0;
      }
    }
  }
  ::close(fd);
  return ok;
}

std::string log_tail(const std::string& path, int lines = 15) {
  std::ifstream in(path);
  std::deque<std::string> tail;
  std::string line;
  while (std::getline(in, line)) {
    tail.push_back(line);
    if (static_cast<int>(tail.size()) > lines) tail.pop_front();
  }
  std::string s;
  for (const auto& l : tail) s += "\n    | " + l;
  return s.empty() ? " (log empty)" : s;
}

std::vector<std::pair<std::string, std::string>> device_env(const State& s, const NodeRec& n) {
  std::vector<std::pair<std::string, std::string>> env = {
      {"ASTEROID_DEVICE_ID", n.id},
      {"ASTEROID_CLUSTER_DIR", s.dir},
      {"ASTEROID_DEVICE_ADDRESS", n.listen_host},
      {"ASTEROID_HUB_ADDRESS", s.hub_address},
  };
  if (s.mech.cpu == "throttle" || s.mech.cpu == "none") {
    // The throttle's control file (slow-down faults), and the share itself
    // for programs that do not get --cpu-share.
    env.emplace_back("ASTEROID_THROTTLE_FILE", (fs::path(s.dir) / "control" / (n.id + ".slow")).string());
    if (s.mech.cpu == "throttle" && n.base_share > 0)
      env.emplace_back("ASTEROID_CPU_SHARE", format_double(n.base_share));
  }
  return env;
}

std::vector<std::string> node_procs_files(const NodeRec& n) {
  NodeCgroup g{n.cgroup_cpu, n.cgroup_memory};
  return g.procs_files();
}

// Everything recorded in the state: processes first, then namespaces, cgroups
// and control files. Returns what could not be removed.
std::vector<std::string> teardown(State& s, Millis grace, std::vector<Subprocess>& children) {
  std::vector<std::string> errors;
  std::vector<ProcessRef> refs;
  for (const auto& n : s.nodes)
    if (n.pid > 0) refs.push_back(n.ref());
  auto left = stop_processes(refs, grace);
  for (const auto& p : left) errors.push_back("node pid " + std::to_string(p.pid) + " did not exit after SIGKILL");
  if (s.relay_pid > 0) {
    auto l = stop_processes({ProcessRef{s.relay_pid, s.relay_start}}, Millis(2000));
    if (!l.empty()) errors.push_back("relay pid " + std::to_string(s.relay_pid) + " did not exit");
  }
  for (auto& c : children) c.running();  // reap
  children.clear();                       // kills anything of ours still running
  auto e1 = delete_namespaces(s.namespaces);
  errors.insert(errors.end(), e1.begin(), e1.end());
  auto e2 = remove_cgroups(s.cgroup_dirs);
  errors.insert(errors.end(), e2.begin(), e2.end());
  std::error_code ec;
  fs::remove_all(fs::path(s.dir) / "control", ec);
  if (e1.empty()) s.namespaces.clear();
  if (e2.empty()) s.cgroup_dirs.clear();
  s.cuts.clear();
  s.state = "down";
  return errors;
}

std::string join_lines(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += "\n  " + x;
  return s;
}

}  // namespace

// ---- up ------------------------------------------------------------------------------------

EmulatedCluster EmulatedCluster::up(const ClusterSpec& spec, const LaunchOptions& o) {
  if (o.dir.empty()) throw std::invalid_argument("cluster up: no directory given");
  const auto& devs = spec.cluster.devices;
  if (devs.empty()) throw std::invalid_argument(spec.name + ": no devices");
  for (size_t i = 0; i < devs.size(); ++i)
    for (size_t j = i + 1; j < devs.size(); ++j)
      if (devs[i].id == devs[j].id) throw std::invalid_argument(spec.name + ": device id '" + devs[i].id + "' twice");
  auto say = [&](const std::string& m) {
    if (o.log) o.log(m);
  };
  auto check_cancel = [&] {
    if (o.cancel && o.cancel->load()) throw std::runtime_error("cluster up: interrupted");
  };

  std::string dir = fs::absolute(o.dir).lexically_normal().string();
  fs::create_directories(fs::path(dir) / "logs");
  fs::create_directories(fs::path(dir) / "control");
  {
    DirLock lock(dir);
    if (fs::exists(nodes_file(dir))) {
      State old;
      try {
        old = load_state(dir);
      } catch (const std::exception&) {
        old.state = "down";  // unreadable: nothing we could stop anyway
      }
      bool live = false;
      for (const auto& n : old.nodes) live = live || (n.pid > 0 && n.ref().alive());
      if (old.state != "down" && (live || !old.namespaces.empty() || !old.cgroup_dirs.empty()))
        throw std::runtime_error("a cluster is already up in " + dir + " (run `asteroid cluster down --dir " + dir +
                                 "` first)");
    }
  }

  std::string exe = o.asteroid_binary.empty() ? self_executable() : o.asteroid_binary;
  std::vector<std::string> node_cmd = o.node_command;
  if (node_cmd.empty()) node_cmd = {exe, "node"};

  State s;
  s.dir = dir;
  s.name = spec.name;
  s.launcher_pid = ::getpid();
  s.default_bandwidth_mbps = spec.cluster.default_bandwidth_mbps;
  s.links = spec.cluster.links;
  // A cluster id no namespace or cgroup of this machine uses yet.
  for (int tries = 0;; ++tries) {
    s.cluster_id = random_id();
    if (!netns_exists("ast-" + s.cluster_id + "-hub")) break;
    if (tries > 20) throw std::runtime_error("cannot pick a cluster id");
  }

  // ---- mechanisms ----
  CgroupSupport cg;
  if (o.cpu == CpuMode::automatic || o.cpu == CpuMode::cgroup) {
    cg = detect_cgroups();
    if (cg.version == CgroupVersion::none) {
      if (o.cpu == CpuMode::cgroup) throw std::runtime_error("--cpu cgroup: " + cg.reason);
      s.mech.notes.push_back("cpu: " + cg.reason + "; nodes throttle themselves (--cpu-share)");
    }
  }
  bool use_cg = cg.version != CgroupVersion::none;
  s.mech.cpu = use_cg ? to_string(cg.version) : (o.cpu == CpuMode::none ? "none" : "throttle");
  s.cgroup_version = to_string(cg.version);
  bool mem_cg = use_cg && !cg.memory_base.empty() && o.memory_limits;
  s.mech.memory = mem_cg ? to_string(cg.version) : "node";
  if (use_cg && cg.memory_base.empty()) s.mech.notes.push_back("memory: no memory controller; nodes enforce --memory-mb");

  NetnsSupport ns;
  if (o.net == NetMode::automatic || o.net == NetMode::netns) {
    ns = detect_netns();
    if (!ns.available) {
      if (o.net == NetMode::netns) throw std::runtime_error("--net netns: " + ns.reason);
      s.mech.notes.push_back("net: " + ns.reason + "; shaping relays instead");
    }
  }
  if (ns.available) {
    s.mech.net = "netns-tc";
    s.netem = ns.netem;
    s.mech.latency = ns.netem && o.latency_ms > 0;
    if (!ns.netem && o.latency_ms > 0) s.mech.notes.push_back("latency: " + ns.reason);
    if (!ns.small_segments)
      s.mech.notes.push_back("net: veth segments cannot be capped (ip link gso_max_size): a message up to 64 KB "
                             "crosses a link at once, transfers look cheaper than on a real link");
  } else if (o.net == NetMode::none) {
    s.mech.net = "none";
  } else {
    s.mech.net = "relay";
    s.mech.latency = o.latency_ms > 0;
  }
  s.latency_ms = s.mech.latency ? o.latency_ms : 0;
  say("cluster " + s.cluster_id + " (" + spec.name + ", " + std::to_string(devs.size()) + " devices): " +
      s.mech.summary());

  // From here on the handle owns whatever nodes.json records: if anything
  // below throws, its destructor tears it all down.
  EmulatedCluster handle;
  handle.dir_ = dir;
  handle.owning_ = true;
  handle.stop_grace_ = o.stop_grace;
  auto persist = [&] {
    DirLock lock(dir);
    save_state(s);
  };

  for (size_t i = 0; i < devs.size(); ++i) {
    NodeRec n;
    n.id = devs[i].id;
    n.index = static_cast<int>(i);
    n.memory_mb = devs[i].memory_mb;
    n.base_share = devs[i].emulate && devs[i].emulate->cpu_share ? *devs[i].emulate->cpu_share : 0;
    n.log = (fs::path(dir) / "logs" / (n.id + ".log")).string();
    s.nodes.push_back(n);
  }
  persist();

  // ---- cgroups ----
  if (use_cg) {
    std::string group = "asteroid-" + s.cluster_id;
    CgroupSupport c = cg;
    if (!mem_cg) c.memory_base.clear();
    for (const auto& d : create_cluster_cgroup(c, group)) s.cgroup_dirs.push_back(d);
    persist();
    for (auto& n : s.nodes) {
      std::string node_group = "d" + std::to_string(n.index);
      // Record before creating, so a half-made group is removed too.
      s.cgroup_dirs.push_back(c.cpu_base + "/" + group + "/" + node_group);
      if (!c.memory_base.empty() && c.memory_base != c.cpu_base)
        s.cgroup_dirs.push_back(c.memory_base + "/" + group + "/" + node_group);
      persist();
      NodeCgroup g = create_node_cgroup(c, group, node_group, n.base_share, n.memory_mb * 1024 * 1024);
      n.cgroup_cpu = g.cpu_dir;
      n.cgroup_memory = g.memory_dir;
    }
    persist();
  }
  check_cancel();

  // ---- network ----
  if (s.mech.net == "netns-tc") {
    NetworkPlan plan = plan_network(s.cluster_id, spec.cluster, s.latency_ms, s.netem);
    plan.small_segments = ns.small_segments;
    s.hub_netns = plan.hub_netns;
    s.hub_address = plan.hub_address;
    s.subnet = plan.subnet;
    for (size_t i = 0; i < s.nodes.size(); ++i) {
      auto& n = s.nodes[i];
      n.netns = plan.devices[i].netns;
      n.address = plan.devices[i].address;
      n.listen_host = n.host = n.address;
      n.listen_port = n.port = o.base_port;
    }
    build_network(plan, [&](const std::string& name) {
      s.namespaces.push_back(name);
      persist();
    });
    say("network: namespaces " + plan.hub_netns + " + " + std::to_string(devs.size()) + " devices, subnet " +
        plan.subnet);
  } else {
    for (auto& n : s.nodes) {
      n.listen_host = n.host = n.address = "127.0.0.1";
      n.listen_port = free_port();
      n.port = s.mech.net == "relay" ? free_port() : n.listen_port;
    }
  }
  persist();
  check_cancel();

  // ---- nodes ----
  for (auto& n : s.nodes) {
    n.argv = node_cmd;
    for (const std::string& a : {std::string("--port"), std::to_string(n.listen_port), std::string("--host"),
                                 n.listen_host, std::string("--id"), n.id, std::string("--memory-mb"),
                                 format_double(n.memory_mb)})
      n.argv.push_back(a);
    if (s.mech.cpu == "throttle" && n.base_share > 0) {
      n.argv.push_back("--cpu-share");
      n.argv.push_back(format_double(n.base_share));
    }
    n.env = device_env(s, n);
    SpawnOptions so;
    so.argv = n.argv;
    so.env = n.env;
    so.output_file = n.log;
    so.new_session = true;
    so.die_with_parent = o.die_with_parent;
    if (!n.netns.empty()) so.netns_path = netns_path(n.netns);
    so.cgroup_procs_files = node_procs_files(n);
    {
      std::ofstream(n.log, std::ios::app) << "# " << join_command(n.argv) << "\n";
    }
    so.on_forked = [&](pid_t pid) {
      n.pid = pid;
      n.start = process_start_time(pid);
      persist();
    };
    handle.children_.push_back(Subprocess::spawn(so));
  }

  // ---- relay ----
  if (s.mech.net == "relay") {
    json routes = json::array();
    for (const auto& n : s.nodes)
      routes.push_back({{"id", n.id},
                        {"listen_host", "127.0.0.1"},
                        {"listen_port", n.port},
                        {"target_host", n.listen_host},
                        {"target_port", n.listen_port},
                        {"bandwidth_mbps", s.default_bandwidth_mbps},
                        {"latency_ms", s.latency_ms},
                        {"cut_file", (fs::path(dir) / "control" / (n.id + ".cut")).string()}});
    if (!s.links.empty())
      s.mech.notes.push_back("net: per-pair link overrides cannot be emulated by relays (they cannot tell who connects)");
    s.relay_config = (fs::path(dir) / "relay.json").string();
    std::ofstream(s.relay_config) << json{{"routes", routes}}.dump(2) << "\n";
    SpawnOptions so;
    so.argv = {exe, "cluster", "relay", "--config", s.relay_config};
    so.output_file = (fs::path(dir) / "logs" / "relay.log").string();
    so.new_session = true;
    so.die_with_parent = o.die_with_parent;
    so.on_forked = [&](pid_t pid) {
      s.relay_pid = pid;
      s.relay_start = process_start_time(pid);
      persist();
    };
    handle.children_.push_back(Subprocess::spawn(so));
  }

  // ---- readiness ----
  auto deadline = Clock::now() + o.ready_timeout;
  auto wait_ready = [&] {
    std::vector<bool> ready(s.nodes.size(), false);
    size_t left = s.nodes.size();
    bool relay_ready = s.mech.net != "relay";
    while (left > 0 || !relay_ready) {
      check_cancel();
      for (size_t i = 0; i < s.nodes.size(); ++i) {
        if (ready[i]) continue;
        Subprocess& child = handle.children_[i];
        if (!child.running()) {
          throw std::runtime_error("node " + s.nodes[i].id + " exited with status " +
                                   std::to_string(child.exit_status().value_or(-1)) + " while starting (" +
                                   join_command(s.nodes[i].argv) + "); log " + s.nodes[i].log + ":" +
                                   log_tail(s.nodes[i].log));
        }
        if (can_connect(s.nodes[i].listen_host, s.nodes[i].listen_port)) {
          ready[i] = true;
          --left;
        }
      }
      if (!relay_ready) {
        Subprocess& relay = handle.children_.back();
        if (!relay.running())
          throw std::runtime_error("the shaping relay exited while starting; log:" +
                                   log_tail((fs::path(dir) / "logs" / "relay.log").string()));
        relay_ready = true;
        for (const auto& n : s.nodes) relay_ready = relay_ready && can_connect("127.0.0.1", n.port);
      }
      if (left == 0 && relay_ready) break;
      if (Clock::now() >= deadline) {
        std::string waiting;
        for (size_t i = 0; i < s.nodes.size(); ++i)
          if (!ready[i]) waiting += " " + s.nodes[i].id + " (" + s.nodes[i].listen_host + ":" +
                                    std::to_string(s.nodes[i].listen_port) + ")";
        throw std::runtime_error("nodes not accepting connections after " +
                                 std::to_string(o.ready_timeout.count()) + " ms:" +
                                 (waiting.empty() ? std::string(" (the relay)") : waiting) +
                                 (waiting.empty() ? "" : "; first log:" + log_tail(s.nodes[0].log)));
      }
      std::this_thread::sleep_for(Millis(20));
    }
  };
  if (s.mech.net == "netns-tc")
    run_in_netns(s.hub_netns, wait_ready);
  else
    wait_ready();

  // ---- cluster.json ----
  planner::Cluster out = spec.cluster;
  for (size_t i = 0; i < out.devices.size(); ++i) {
    out.devices[i].host = s.nodes[i].host;
    out.devices[i].port = s.nodes[i].port;
  }
  planner::save_cluster(out, (fs::path(dir) / "cluster.json").string());
  s.state = "up";
  persist();
  say("cluster up: " + std::to_string(s.nodes.size()) + " nodes ready in " + dir);
  return handle;
}

// ---- handles -------------------------------------------------------------------------------

EmulatedCluster EmulatedCluster::attach(const std::string& dir) {
  std::string d = fs::absolute(dir).lexically_normal().string();
  load_state(d);  // throws if there is no cluster
  EmulatedCluster h;
  h.dir_ = d;
  h.owning_ = false;
  return h;
}

EmulatedCluster::EmulatedCluster(EmulatedCluster&& o) noexcept { *this = std::move(o); }

EmulatedCluster& EmulatedCluster::operator=(EmulatedCluster&& o) noexcept {
  if (this != &o) {
    if (owning_) {
      try {
        down();
      } catch (...) {
      }
    }
    dir_ = std::move(o.dir_);
    owning_ = std::exchange(o.owning_, false);
    stop_grace_ = o.stop_grace_;
    children_ = std::move(o.children_);
  }
  return *this;
}

EmulatedCluster::~EmulatedCluster() {
  if (!owning_) return;
  try {
    down();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "asteroid: cleaning up the emulated cluster in %s: %s\n", dir_.c_str(), e.what());
  } catch (...) {
  }
}

void EmulatedCluster::detach() {
  owning_ = false;
  for (auto& c : children_) c.release();
  children_.clear();
}

void EmulatedCluster::down() {
  owning_ = false;
  if (dir_.empty()) return;
  std::vector<std::string> errors;
  {
    DirLock lock(dir_);
    State s = load_state(dir_);
    errors = teardown(s, stop_grace_, children_);
    save_state(s);
  }
  if (!errors.empty()) throw std::runtime_error("cluster down left things behind:" + join_lines(errors));
}

planner::Cluster EmulatedCluster::cluster() const {
  return planner::load_cluster((fs::path(dir_) / "cluster.json").string());
}

Mechanisms EmulatedCluster::mechanisms() const { return load_state(dir_).mech; }

ClusterStatus EmulatedCluster::status() const {
  State s = load_state(dir_);
  ClusterStatus st;
  st.dir = s.dir;
  st.cluster_id = s.cluster_id;
  st.state = s.state;
  st.mechanisms = s.mech;
  st.hub_address = s.hub_address;
  for (const auto& c : s.cuts) {
    auto bar = c.find('|');
    st.cut_links.push_back(c.substr(0, bar) + "<->" + c.substr(bar + 1));
  }
  for (const auto& n : s.nodes) {
    NodeStatus ns;
    ns.id = n.id;
    ns.pid = n.pid;
    char c = n.pid > 0 ? n.ref().state() : 0;
    ns.state = (c == 'T' || c == 't') ? "frozen" : (n.pid > 0 && n.ref().alive()) ? "running" : "dead";
    ns.host = n.host;
    ns.port = n.port;
    ns.listen = n.listen_host + ":" + std::to_string(n.listen_port);
    ns.cpu_share = n.base_share > 0 ? n.base_share / n.slow_factor : (n.slow_factor > 1 ? 1 / n.slow_factor : 0);
    ns.slow_factor = n.slow_factor;
    ns.memory_mb = n.memory_mb;
    ns.netns = n.netns;
    ns.cgroup = n.cgroup_cpu;
    ns.log = n.log;
    st.nodes.push_back(ns);
  }
  return st;
}

std::string ClusterStatus::table() const {
  std::string s = "cluster " + cluster_id + " in " + dir + ": " + state + "\n" + "mechanisms: " +
                  mechanisms.summary() + "\n";
  if (!hub_address.empty()) s += "hub (coordinator) address: " + hub_address + "\n";
  char line[512];
  std::snprintf(line, sizeof line, "%-10s %-8s %-8s %-22s %-10s %-6s %-9s\n", "device", "pid", "state", "address",
                "cpu share", "slow", "memory");
  s += line;
  for (const auto& n : nodes) {
    std::string share = n.cpu_share > 0 ? format_double(std::round(n.cpu_share * 1e4) / 1e4) : "-";
    std::snprintf(line, sizeof line, "%-10s %-8d %-8s %-22s %-10s %-6s %-9s\n", n.id.c_str(), n.pid,
                  n.state.c_str(), (n.host + ":" + std::to_string(n.port)).c_str(), share.c_str(),
                  format_double(n.slow_factor).c_str(), (format_double(n.memory_mb) + " MB").c_str());
    s += line;
  }
  for (const auto& c : cut_links) s += "cut: " + c + "\n";
  return s;
}

// ---- exec ------------------------------------------------------------------------------------

Subprocess EmulatedCluster::exec(const std::string& device, const std::vector<std::string>& argv,
                                 SpawnOptions base) const {
  State s = load_state(dir_);
  base.argv = argv;
  if (device.empty() || device == "hub") {
    if (s.mech.net == "netns-tc") base.netns_path = netns_path(s.hub_netns);
    base.env.emplace_back("ASTEROID_CLUSTER_DIR", s.dir);
    base.env.emplace_back("ASTEROID_HUB_ADDRESS", s.hub_address);
  } else {
    const NodeRec& n = s.node(device);
    if (!n.netns.empty()) base.netns_path = netns_path(n.netns);
    base.cgroup_procs_files = node_procs_files(n);
    for (const auto& kv : device_env(s, n)) base.env.push_back(kv);
  }
  return Subprocess::spawn(base);
}

void exec_as_device(const std::string& dir, const std::string& device, const std::vector<std::string>& argv) {
  if (argv.empty()) throw std::invalid_argument("cluster exec: no command given (use -- CMD ARGS...)");
  State s = load_state(fs::absolute(dir).lexically_normal().string());
  if (s.state == "down") throw std::runtime_error("the cluster in " + dir + " is down");
  std::vector<std::pair<std::string, std::string>> env;
  std::string ns_name;
  if (device.empty() || device == "hub") {
    ns_name = s.mech.net == "netns-tc" ? s.hub_netns : "";
    env = {{"ASTEROID_CLUSTER_DIR", s.dir}, {"ASTEROID_HUB_ADDRESS", s.hub_address}};
  } else {
    const NodeRec& n = s.node(device);
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
  State s = load_state(p.lexically_normal().string());
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

// ---- fault injection ---------------------------------------------------------------------

namespace {
void signal_node(const std::string& dir, const std::string& id, int sig, const char* what) {
  State s = load_state(dir);
  NodeRec& n = s.node(id);
  if (n.pid <= 0 || !n.ref().alive()) throw std::runtime_error(what + std::string(": node ") + id + " is not running");
  if (::kill(n.pid, sig) != 0)
    throw std::runtime_error(what + std::string(": cannot signal pid ") + std::to_string(n.pid) + ": " +
                             std::strerror(errno));
}
}  // namespace

void EmulatedCluster::inject_kill(const std::string& id) {
  signal_node(dir_, id, SIGKILL, "kill");
  // Reap at once when it is our child, so status says dead immediately.
  State s = load_state(dir_);
  ProcessRef r = s.node(id).ref();
  auto deadline = Clock::now() + Millis(2000);
  while (r.alive() && Clock::now() < deadline) std::this_thread::sleep_for(Millis(2));
}
void EmulatedCluster::inject_freeze(const std::string& id) { signal_node(dir_, id, SIGSTOP, "freeze"); }
void EmulatedCluster::inject_thaw(const std::string& id) { signal_node(dir_, id, SIGCONT, "thaw"); }

void EmulatedCluster::inject_slow(const std::string& id, double factor) {
  if (!(factor > 0) || !std::isfinite(factor))
    throw std::invalid_argument("slow: the factor must be a positive number, got " + format_double(factor));
  update_state(dir_, [&](State& s) {
    NodeRec& n = s.node(id);
    if (s.mech.cpu == "cgroup-v1" || s.mech.cpu == "cgroup-v2") {
      double base = n.base_share > 0 ? n.base_share : 1.0;
      set_cgroup_cpu_share(s.mech.cpu == "cgroup-v1" ? CgroupVersion::v1 : CgroupVersion::v2, n.cgroup_cpu,
                           factor == 1 && n.base_share <= 0 ? 0 : base / factor);
    } else {
      // Read by the node's CpuThrottle (ASTEROID_THROTTLE_FILE), every 100 ms.
      fs::create_directories(fs::path(s.dir) / "control");
      std::string f = (fs::path(s.dir) / "control" / (n.id + ".slow")).string();
      std::string tmp = f + ".tmp";
      std::ofstream(tmp) << format_double(factor) << "\n";
      fs::rename(tmp, f);
    }
    n.slow_factor = factor;
  });
}

void EmulatedCluster::inject_cut_link(const std::string& a, const std::string& b) {
  update_state(dir_, [&](State& s) {
    s.node(a);
    if (b != "*" && b != "all" && b != "hub") s.node(b);
    if (s.mech.net == "netns-tc") {
      cut_link(s.network(), a, b);
    } else if (s.mech.net == "relay") {
      if (b != "*" && b != "all")
        throw std::runtime_error("cut-link " + a + " " + b +
                                 ": relay mode cannot cut one pair (a relay cannot tell who connects); "
                                 "use `cut-link " + a + " '*'` or run as root for network namespaces");
      std::ofstream(fs::path(s.dir) / "control" / (a + ".cut")) << "cut\n";
    } else {
      throw std::runtime_error("cut-link: links are not emulated in this cluster (net=none)");
    }
    std::string key = a + "|" + (b == "all" ? "*" : b);
    if (std::find(s.cuts.begin(), s.cuts.end(), key) == s.cuts.end()) s.cuts.push_back(key);
  });
}

void EmulatedCluster::inject_heal_link(const std::string& a, const std::string& b) {
  update_state(dir_, [&](State& s) {
    s.node(a);
    if (b != "*" && b != "all" && b != "hub") s.node(b);
    if (s.mech.net == "netns-tc") {
      heal_link(s.network(), a, b);
    } else if (s.mech.net == "relay") {
      if (b != "*" && b != "all")
        throw std::runtime_error("heal-link " + a + " " + b + ": relay mode can only cut/heal a device from everything ('*')");
      std::error_code ec;
      fs::remove(fs::path(s.dir) / "control" / (a + ".cut"), ec);
    } else {
      throw std::runtime_error("heal-link: links are not emulated in this cluster (net=none)");
    }
    std::string bb = b == "all" ? "*" : b;
    s.cuts.erase(std::remove_if(s.cuts.begin(), s.cuts.end(),
                                [&](const std::string& k) { return k == a + "|" + bb || k == bb + "|" + a; }),
                 s.cuts.end());
  });
}

void EmulatedCluster::inject_restart(const std::string& id, Millis ready_timeout) {
  NodeRec n;
  std::string hub;
  {
    DirLock lock(dir_);
    State s = load_state(dir_);
    if (s.state != "up") throw std::runtime_error("restart: the cluster in " + dir_ + " is " + s.state);
    NodeRec& r = s.node(id);
    if (r.pid > 0 && r.ref().alive())
      throw std::runtime_error("restart: node " + id + " is still running (pid " + std::to_string(r.pid) + ")");
    SpawnOptions so;
    so.argv = r.argv;
    so.env = r.env;
    so.output_file = r.log;
    so.new_session = true;
    so.die_with_parent = owning_;
    if (!r.netns.empty()) so.netns_path = netns_path(r.netns);
    so.cgroup_procs_files = node_procs_files(r);
    std::ofstream(r.log, std::ios::app) << "# restart: " << join_command(r.argv) << "\n";
    so.on_forked = [&](pid_t pid) {
      r.pid = pid;
      r.start = process_start_time(pid);
      save_state(s);
    };
    Subprocess p = Subprocess::spawn(so);
    n = r;
    hub = s.mech.net == "netns-tc" ? s.hub_netns : "";
    if (owning_)
      children_.push_back(std::move(p));
    else
      p.release();
  }
  auto deadline = Clock::now() + ready_timeout;
  auto wait = [&] {
    while (!can_connect(n.listen_host, n.listen_port)) {
      if (!n.ref().alive())
        throw std::runtime_error("restart: node " + id + " exited while starting; log " + n.log + ":" +
                                 log_tail(n.log));
      if (Clock::now() >= deadline)
        throw std::runtime_error("restart: node " + id + " not accepting connections after " +
                                 std::to_string(ready_timeout.count()) + " ms");
      std::this_thread::sleep_for(Millis(20));
    }
  };
  if (!hub.empty())
    run_in_netns(hub, wait);
  else
    wait();
}

}  // namespace asteroid::testbed
