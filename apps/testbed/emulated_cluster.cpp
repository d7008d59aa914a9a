#include "apps/testbed/emulated_cluster.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "apps/security/certificates.h"
#include "apps/testbed/cgroups.h"
#include "apps/testbed/cluster_nodes.h"
#include "apps/testbed/cluster_state.h"
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

// ---- up: the steps, in the order up() takes them -------------------------------------

namespace {

void check_spec(const ClusterSpec& spec, const LaunchOptions& o) {
  if (o.dir.empty()) throw std::invalid_argument("cluster up: no directory given");
  const auto& devs = spec.cluster.devices;
  if (devs.empty()) throw std::invalid_argument(spec.name + ": no devices");
  for (size_t i = 0; i < devs.size(); ++i)
    for (size_t j = i + 1; j < devs.size(); ++j)
      if (devs[i].id == devs[j].id) throw std::invalid_argument(spec.name + ": device id '" + devs[i].id + "' twice");
}

// Throws if dir's nodes.json records a cluster that is not down and still
// has a live node, namespaces or cgroups.
void refuse_if_cluster_up(const std::string& dir) {
  DirLock lock(dir);
  if (!fs::exists(nodes_file(dir))) return;
  ClusterState old;
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

std::string random_id() {
  std::random_device rd;
  char b[8];
  std::snprintf(b, sizeof b, "%06x", static_cast<unsigned>(rd()) & 0xffffffu);
  return b;
}

// A cluster id no namespace or cgroup of this machine uses yet.
std::string unused_cluster_id() {
  for (int tries = 0;; ++tries) {
    std::string id = random_id();
    if (!netns_exists("ast-" + id + "-hub")) return id;
    if (tries > 20) throw std::runtime_error("cannot pick a cluster id");
  }
}

// Sets s.mech.cpu/memory and s.cgroup_version (with a note for each
// fallback). Returns the cgroups to create: version none when there are none,
// memory_base empty when memory is not limited by cgroups.
CgroupSupport choose_cpu_and_memory(const LaunchOptions& o, ClusterState& s) {
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
  if (!mem_cg) cg.memory_base.clear();
  return cg;
}

// Sets s.mech.net/latency, s.netem and s.latency_ms (with a note for each
// fallback). Returns what network namespaces can do on this machine.
NetnsSupport choose_network(const LaunchOptions& o, ClusterState& s) {
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
  return ns;
}

// Writes nodes.json under the directory's lock.
void persist(const ClusterState& s) {
  DirLock lock(s.dir);
  save_state(s);
}

// One record per device, in the spec's order (the index names its cgroup and
// namespace).
void add_node_records(ClusterState& s, const std::vector<planner::Device>& devs) {
  for (size_t i = 0; i < devs.size(); ++i) {
    NodeRecord n;
    n.id = devs[i].id;
    n.index = static_cast<int>(i);
    n.memory_mb = devs[i].memory_mb;
    n.base_share = devs[i].emulate && devs[i].emulate->cpu_share ? *devs[i].emulate->cpu_share : 0;
    n.log = (fs::path(s.dir) / "logs" / (n.id + ".log")).string();
    s.nodes.push_back(n);
  }
}

// The cluster's cgroup and one per node with its CPU share and memory limit.
void create_cgroups(ClusterState& s, const CgroupSupport& c) {
  std::string group = "asteroid-" + s.cluster_id;
  for (const auto& d : create_cluster_cgroup(c, group)) s.cgroup_dirs.push_back(d);
  persist(s);
  for (auto& n : s.nodes) {
    std::string node_group = "d" + std::to_string(n.index);
    // Record before creating, so a half-made group is removed too.
    s.cgroup_dirs.push_back(c.cpu_base + "/" + group + "/" + node_group);
    if (!c.memory_base.empty() && c.memory_base != c.cpu_base)
      s.cgroup_dirs.push_back(c.memory_base + "/" + group + "/" + node_group);
    persist(s);
    NodeCgroup g = create_node_cgroup(c, group, node_group, n.base_share, n.memory_mb * 1024 * 1024);
    n.cgroup_cpu = g.cpu_dir;
    n.cgroup_memory = g.memory_dir;
  }
  persist(s);
}

// netns-tc: a namespace per device behind the hub, each node listening on
// base_port at its own address. Each namespace is recorded as soon as it
// exists.
void build_namespaces(ClusterState& s, const planner::Cluster& cluster, bool small_segments, int base_port) {
  NetworkPlan plan = plan_network(s.cluster_id, cluster, s.latency_ms, s.netem);
  plan.small_segments = small_segments;
  s.hub_netns = plan.hub_netns;
  s.hub_address = plan.hub_address;
  s.subnet = plan.subnet;
  for (size_t i = 0; i < s.nodes.size(); ++i) {
    auto& n = s.nodes[i];
    n.netns = plan.devices[i].netns;
    n.address = plan.devices[i].address;
    n.listen_host = n.host = n.address;
    n.listen_port = n.port = base_port;
  }
  build_network(plan, [&](const std::string& name) {
    s.namespaces.push_back(name);
    persist(s);
  });
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

// relay | none: every node listens on a free port of 127.0.0.1; with relays,
// clients reach it through another free port (its relay's).
void assign_local_ports(ClusterState& s) {
  for (auto& n : s.nodes) {
    n.listen_host = n.host = n.address = "127.0.0.1";
    n.listen_port = free_port();
    n.port = s.mech.net == "relay" ? free_port() : n.listen_port;
  }
}

// The node command followed by the flags of n's device.
std::vector<std::string> node_argv(const std::vector<std::string>& node_cmd, const NodeRecord& n,
                                   const std::string& cpu_mechanism, const std::string& tls_dir) {
  std::vector<std::string> argv = node_cmd;
  for (const std::string& a : {std::string("--port"), std::to_string(n.listen_port), std::string("--host"),
                               n.listen_host, std::string("--id"), n.id, std::string("--memory-mb"),
                               format_double(n.memory_mb)})
    argv.push_back(a);
  // Every certificate of the cluster's own authority may connect: the test
  // bed issues them, and a device that joins later needs no new lists.
  if (!tls_dir.empty()) {
    argv.push_back("--tls-dir");
    argv.push_back(tls_dir);
  } else if (n.listen_host.rfind("127.", 0) != 0) {
    argv.push_back("--insecure");  // inside the test bed's own namespaces
  }
  if (cpu_mechanism == "throttle" && n.base_share > 0) {
    argv.push_back("--cpu-share");
    argv.push_back(format_double(n.base_share));
  }
  return argv;
}

// Starts every node; children[i] is node i.
void start_nodes(ClusterState& s, const std::vector<std::string>& node_cmd, const std::string& tls_dir,
                 bool die_with_parent, std::vector<Subprocess>& children) {
  for (auto& n : s.nodes) {
    n.argv = node_argv(node_cmd, n, s.mech.cpu, tls_dir);
    n.env = device_env(s, n);
    children.push_back(spawn_node(n, die_with_parent, "", [&] { persist(s); }));
  }
}

std::string relay_log(const std::string& dir) { return (fs::path(dir) / "logs" / "relay.log").string(); }

// relay mode: one process relays and shapes every device's public port to its
// node (relay.json); it is recorded before it may exec.
void start_relay(ClusterState& s, const std::string& exe, bool die_with_parent, std::vector<Subprocess>& children) {
  json routes = json::array();
  for (const auto& n : s.nodes)
    routes.push_back({{"id", n.id},
                      {"listen_host", "127.0.0.1"},
                      {"listen_port", n.port},
                      {"target_host", n.listen_host},
                      {"target_port", n.listen_port},
                      {"bandwidth_mbps", s.default_bandwidth_mbps},
                      {"latency_ms", s.latency_ms},
                      {"cut_file", (fs::path(s.dir) / "control" / (n.id + ".cut")).string()}});
  if (!s.links.empty())
    s.mech.notes.push_back("net: per-pair link overrides cannot be emulated by relays (they cannot tell who connects)");
  s.relay_config = (fs::path(s.dir) / "relay.json").string();
  std::ofstream(s.relay_config) << json{{"routes", routes}}.dump(2) << "\n";
  SpawnOptions so;
  so.argv = {exe, "cluster", "relay", "--config", s.relay_config};
  so.output_file = relay_log(s.dir);
  so.new_session = true;
  so.die_with_parent = die_with_parent;
  so.on_forked = [&](pid_t pid) {
    s.relay_pid = pid;
    s.relay_start = process_start_time(pid);
    persist(s);
  };
  children.push_back(Subprocess::spawn(so));
}

// Waits until every node (children[i]) and, in relay mode, the relay
// (children.back()) accept connections. Throws naming the node or relay that
// exited, or what still does not accept after ready_timeout.
void wait_until_ready(const ClusterState& s, std::vector<Subprocess>& children, Millis ready_timeout,
                      const std::function<void()>& check_cancel) {
  auto deadline = Clock::now() + ready_timeout;
  StartupChecks checks;
  checks.each_round = check_cancel;
  checks.ensure_running = [&](size_t i) {
    Subprocess& child = children[i];
    if (!child.running()) {
      throw std::runtime_error("node " + s.nodes[i].id + " exited with status " +
                               std::to_string(child.exit_status().value_or(-1)) + " while starting (" +
                               join_command(s.nodes[i].argv) + "); log " + s.nodes[i].log + ":" +
                               log_tail(s.nodes[i].log));
    }
  };
  if (s.mech.net == "relay") {
    checks.others_ready = [&] {
      Subprocess& relay = children.back();
      if (!relay.running())
        throw std::runtime_error("the shaping relay exited while starting; log:" + log_tail(relay_log(s.dir)));
      bool relay_ready = true;
      for (const auto& n : s.nodes) relay_ready = relay_ready && can_connect("127.0.0.1", n.port);
      return relay_ready;
    };
  }
  Readiness r = wait_until_accepting(s.nodes, deadline, s.mech.net == "netns-tc" ? s.hub_netns : "", checks);
  if (r.ready) return;
  std::string waiting;
  for (size_t i : r.not_accepting)
    waiting += " " + s.nodes[i].id + " (" + s.nodes[i].listen_host + ":" + std::to_string(s.nodes[i].listen_port) + ")";
  throw std::runtime_error("nodes not accepting connections after " + std::to_string(ready_timeout.count()) +
                           " ms:" + (waiting.empty() ? std::string(" (the relay)") : waiting) +
                           (waiting.empty() ? "" : "; first log:" + log_tail(s.nodes[0].log)));
}

// The cluster's certificates, in DIR/tls (cluster.json's tls.dir).
const char* const kTlsFolder = "tls";

// A new authority (and the coordinator's certificate) and one certificate
// per device; the authority of an earlier cluster in the same folder goes.
void make_certificates(const std::string& tls_dir, const std::vector<planner::Device>& devices) {
  fs::remove_all(tls_dir);
  apps::security::init_authority(tls_dir);
  for (const auto& d : devices) apps::security::issue_certificate(tls_dir, d.id);
}

// cluster.json: the spec's cluster with the address of every device's node.
void write_cluster_file(const planner::Cluster& spec_cluster, const ClusterState& s, bool tls) {
  planner::Cluster out = spec_cluster;
  if (tls) out.tls_dir = kTlsFolder;
  for (size_t i = 0; i < out.devices.size(); ++i) {
    out.devices[i].host = s.nodes[i].host;
    out.devices[i].port = s.nodes[i].port;
  }
  planner::save_cluster(out, (fs::path(s.dir) / "cluster.json").string());
}

}  // namespace

EmulatedCluster EmulatedCluster::up(const ClusterSpec& spec, const LaunchOptions& o) {
  check_spec(spec, o);
  auto say = [&](const std::string& m) {
    if (o.log) o.log(m);
  };
  auto check_cancel = [&] {
    if (o.cancel && o.cancel->load()) throw std::runtime_error("cluster up: interrupted");
  };

  std::string dir = fs::absolute(o.dir).lexically_normal().string();
  fs::create_directories(fs::path(dir) / "logs");
  fs::create_directories(fs::path(dir) / "control");
  refuse_if_cluster_up(dir);

  std::string exe = o.asteroid_binary.empty() ? self_executable() : o.asteroid_binary;
  std::vector<std::string> node_cmd = o.node_command;
  if (node_cmd.empty()) node_cmd = {exe, "node"};

  ClusterState s;
  s.dir = dir;
  s.name = spec.name;
  s.launcher_pid = ::getpid();
  s.default_bandwidth_mbps = spec.cluster.default_bandwidth_mbps;
  s.links = spec.cluster.links;
  s.cluster_id = unused_cluster_id();
  CgroupSupport cgroups = choose_cpu_and_memory(o, s);
  NetnsSupport ns = choose_network(o, s);
  say("cluster " + s.cluster_id + " (" + spec.name + ", " + std::to_string(spec.cluster.devices.size()) +
      " devices): " + s.mech.summary());

  // From here on the handle owns whatever nodes.json records: if anything
  // below throws, its destructor tears it all down.
  EmulatedCluster handle;
  handle.dir_ = dir;
  handle.owning_ = true;
  handle.stop_grace_ = o.stop_grace;
  add_node_records(s, spec.cluster.devices);
  persist(s);

  if (cgroups.version != CgroupVersion::none) create_cgroups(s, cgroups);
  check_cancel();

  if (s.mech.net == "netns-tc") {
    build_namespaces(s, spec.cluster, ns.small_segments, o.base_port);
    say("network: namespaces " + s.hub_netns + " + " + std::to_string(s.nodes.size()) + " devices, subnet " +
        s.subnet);
  } else {
    assign_local_ports(s);
  }
  persist(s);
  check_cancel();

  std::string tls_dir;
  if (o.tls) {
    tls_dir = (fs::path(dir) / kTlsFolder).string();
    make_certificates(tls_dir, spec.cluster.devices);
    say("TLS: authority and " + std::to_string(spec.cluster.devices.size()) + " device certificates in " + tls_dir);
  }
  start_nodes(s, node_cmd, tls_dir, o.die_with_parent, handle.children_);
  if (s.mech.net == "relay") start_relay(s, exe, o.die_with_parent, handle.children_);
  wait_until_ready(s, handle.children_, o.ready_timeout, check_cancel);

  write_cluster_file(spec.cluster, s, o.tls);
  s.state = "up";
  persist(s);
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
    spdlog::error("asteroid: cleaning up the emulated cluster in {}: {}", dir_, e.what());
  } catch (...) {
  }
}

void EmulatedCluster::detach() {
  owning_ = false;
  for (auto& c : children_) c.release();
  children_.clear();
}

namespace {

// Everything recorded in the state: processes first, then namespaces, cgroups
// and control files. Returns what could not be removed.
std::vector<std::string> teardown(ClusterState& s, Millis grace, std::vector<Subprocess>& children) {
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

void EmulatedCluster::down() {
  owning_ = false;
  if (dir_.empty()) return;
  std::vector<std::string> errors =
      update_state(dir_, [&](ClusterState& s) { return teardown(s, stop_grace_, children_); });
  if (!errors.empty()) throw std::runtime_error("cluster down left things behind:" + join_lines(errors));
}

planner::Cluster EmulatedCluster::cluster() const {
  return planner::load_cluster((fs::path(dir_) / "cluster.json").string());
}

Mechanisms EmulatedCluster::mechanisms() const { return load_state(dir_).mech; }

// ---- status --------------------------------------------------------------------------------

ClusterStatus EmulatedCluster::status() const {
  ClusterState s = load_state(dir_);
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

}  // namespace asteroid::testbed
