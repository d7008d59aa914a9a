#include "apps/testbed/netns.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "apps/testbed/process.h"

namespace asteroid::testbed {

namespace {

using Argv = std::vector<std::string>;

std::string rate(double mbps) {
  // tc takes integer kbit: keeps 0.001 Mbit/s resolution.
  long kbit = std::max(1L, std::lround(mbps * 1000));
  return std::to_string(kbit) + "kbit";
}

std::string hex_minor(int v) {
  char b[16];
  std::snprintf(b, sizeof b, "%x", v);
  return b;
}

std::string ms(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3fms", v);
  return b;
}

void ip(const Argv& args) {
  Argv a = {"ip"};
  a.insert(a.end(), args.begin(), args.end());
  run_checked(a);
}

// The /16 for this machine's clusters: 10.213/16 unless a host route covers
// part of it (then the next free one). Devices live only in namespaces, but
// an address the host also routes would confuse whoever reads a trace.
int pick_second_octet() {
  struct Route {
    uint32_t dst, mask;
  };
  std::vector<Route> routes;
  std::ifstream in("/proc/net/route");
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string iface, dst, gw, flags, refcnt, use, metric, mask;
    if (!(f >> iface >> dst >> gw >> flags >> refcnt >> use >> metric >> mask)) continue;
    uint32_t d = static_cast<uint32_t>(std::stoul(dst, nullptr, 16));
    uint32_t m = static_cast<uint32_t>(std::stoul(mask, nullptr, 16));
    if (m == 0) continue;  // the default route covers everything
    routes.push_back({d, m});
  }
  for (int o2 = 213; o2 < 255; ++o2) {
    // /proc/net/route is in network byte order read as a little-endian word.
    uint32_t net = 10u | (static_cast<uint32_t>(o2) << 8);
    uint32_t mask16 = 0xffffu;
    bool clash = false;
    for (const auto& r : routes) {
      uint32_t common = r.mask & mask16;
      if ((r.dst & common) == (net & common)) clash = true;
    }
    if (!clash) return o2;
  }
  throw std::runtime_error("no free 10.x.0.0/16 for the emulated network (every 10.213-254 is routed by the host)");
}

std::string device_side_if() { return "eth0"; }

}  // namespace

std::string netns_path(const std::string& name) { return "/run/netns/" + name; }

bool netns_exists(const std::string& name) {
  struct stat sb;
  return ::stat(netns_path(name).c_str(), &sb) == 0;
}

NetnsSupport detect_netns() {
  NetnsSupport s;
  if (::geteuid() != 0) {
    s.reason = "not running as root";
    return s;
  }
  if (find_executable("ip").empty() || find_executable("tc").empty()) {
    s.reason = "ip or tc not found (Debian package iproute2)";
    return s;
  }
  std::string probe = "ast-probe-" + std::to_string(::getpid());
  CommandResult r = run_command({"ip", "netns", "add", probe});
  if (!r.ok()) {
    s.reason = "cannot create a network namespace: " + r.err;
    while (!s.reason.empty() && s.reason.back() == '\n') s.reason.pop_back();
    return s;
  }
  CommandResult v = run_command({"ip", "-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1"});
  CommandResult h = run_command({"tc", "-n", probe, "qdisc", "add", "dev", "p0", "root", "handle", "1:", "htb"});
  CommandResult n = run_command({"tc", "-n", probe, "qdisc", "add", "dev", "p1", "root", "netem", "delay", "1ms"});
  CommandResult g = run_command({"ip", "-n", probe, "link", "set", "dev", "p0", "gso_max_size", "16384"});
  run_command({"ip", "netns", "del", probe});
  if (!v.ok()) {
    s.reason = "cannot create a veth pair: " + v.err;
  } else if (!h.ok()) {
    s.reason = "tc htb not available: " + h.err;
  } else {
    s.available = true;
    s.netem = n.ok();
    s.small_segments = g.ok();
    if (!s.netem) s.reason = "no sch_netem in this kernel: links get bandwidth but no added latency";
  }
  while (!s.reason.empty() && s.reason.back() == '\n') s.reason.pop_back();
  return s;
}

const NetDevice& NetworkPlan::device(const std::string& id) const {
  for (const auto& d : devices)
    if (d.id == id) return d;
  throw std::invalid_argument("unknown device '" + id + "'");
}

NetworkPlan plan_network(const std::string& cid, const planner::Cluster& cluster, double latency_ms,
                         bool netem) {
  if (cluster.devices.size() > 250) throw std::invalid_argument("at most 250 devices per emulated cluster");
  NetworkPlan p;
  p.cluster_id = cid;
  p.hub_netns = "ast-" + cid + "-hub";
  unsigned k = 0;
  for (char c : cid) k = k * 31 + static_cast<unsigned char>(c);
  std::string prefix = "10." + std::to_string(pick_second_octet()) + "." + std::to_string(k % 256) + ".";
  p.subnet = prefix + "0/24";
  p.hub_address = prefix + "254";
  p.latency_ms = latency_ms;
  p.netem = netem;
  p.links = cluster.links;
  for (size_t i = 0; i < cluster.devices.size(); ++i) {
    NetDevice d;
    d.id = cluster.devices[i].id;
    d.netns = "ast-" + cid + "-" + std::to_string(i);
    d.address = prefix + std::to_string(i + 1);
    d.hub_veth = "d" + std::to_string(i);
    d.bandwidth_mbps = cluster.default_bandwidth_mbps;
    p.devices.push_back(d);
  }
  return p;
}

std::vector<std::vector<std::string>> link_shaping_commands(const NetworkPlan& p, size_t i, bool hub_side) {
  const NetDevice& d = p.devices.at(i);
  const std::string ns = hub_side ? p.hub_netns : d.netns;
  const std::string dev = hub_side ? d.hub_veth : device_side_if();
  // Overrides that involve this device, each with the peer's address.
  std::vector<std::pair<std::string, double>> peers;
  double top = d.bandwidth_mbps;
  for (const auto& l : p.links) {
    std::string peer = l.a == d.id ? l.b : l.b == d.id ? l.a : "";
    if (peer.empty()) continue;
    peers.emplace_back(p.device(peer).address, l.bandwidth_mbps);
    top = std::max(top, l.bandwidth_mbps);
  }
  std::vector<Argv> cmds;
  auto tc = [&](Argv args) {
    Argv a = {"tc", "-n", ns};
    a.insert(a.end(), args.begin(), args.end());
    cmds.push_back(a);
  };
  // quantum: bytes a class may send per round; explicit to keep htb from
  // deriving a huge one from the rate (and warning).
  const std::string quantum = "30000";
  tc({"qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default", "10"});
  tc({"class", "add", "dev", dev, "parent", "1:", "classid", "1:1", "htb", "rate", rate(top), "ceil", rate(top),
      "quantum", quantum});
  auto leaf = [&](int minor, double mbps, double ceil_mbps, int prio) {
    std::string cls = "1:" + hex_minor(minor);
    tc({"class", "add", "dev", dev, "parent", "1:1", "classid", cls, "htb", "rate", rate(mbps), "ceil",
        rate(ceil_mbps), "prio", std::to_string(prio), "quantum", quantum});
    if (p.netem && p.latency_ms > 0)
      tc({"qdisc", "add", "dev", dev, "parent", cls, "handle", hex_minor(minor) + ":", "netem", "delay",
          ms(p.latency_ms), "limit", "100000"});
  };
  // Heartbeats (UDP marked DSCP EF, actors/heartbeat_datagram.h) get a class
  // of their own, served first (prio 0 against the bulk classes' 1), so they
  // never wait in the bulk FIFO of the same link. Its rate is all they need
  // (a datagram per device every 100 ms); its ceil is the link's. The
  // filter comes before the per-peer ones (prio 1 < 10).
  leaf(0x2, std::min(1.0, top), top, 0);
  tc({"filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio", "1", "u32", "match", "ip", "protocol",
      "17", "0xff", "match", "ip", "tos", "0xb8", "0xfc", "flowid", "1:2"});
  leaf(0x10, d.bandwidth_mbps, d.bandwidth_mbps, 1);
  if (p.small_segments) {
    double slowest = d.bandwidth_mbps;
    for (const auto& peer : peers) slowest = std::min(slowest, peer.second);
    const double one_ms = slowest * 1e6 / 8 / 1e3;  // bytes in 1 ms
    const int segment = static_cast<int>(std::clamp(one_ms, 1500.0, 65536.0));
    cmds.push_back({"ip", "-n", ns, "link", "set", "dev", dev, "gso_max_size", std::to_string(segment)});
  }
  for (size_t j = 0; j < peers.size(); ++j) {
    int minor = 0x100 + static_cast<int>(j);
    leaf(minor, peers[j].second, peers[j].second, 1);
    tc({"filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio", std::to_string(10 + j), "u32",
        "match", "ip", hub_side ? "src" : "dst", peers[j].first + "/32", "flowid", "1:" + hex_minor(minor)});
  }
  return cmds;
}

void build_network(const NetworkPlan& p, const std::function<void(const std::string&)>& on_created) {
  auto add_ns = [&](const std::string& name) {
    if (netns_exists(name)) throw std::runtime_error("network namespace " + name + " already exists");
    ip({"netns", "add", name});
    on_created(name);
    ip({"-n", name, "link", "set", "lo", "up"});
  };
  add_ns(p.hub_netns);
  ip({"-n", p.hub_netns, "link", "add", "br0", "type", "bridge"});
  ip({"-n", p.hub_netns, "addr", "add", p.hub_address + "/24", "dev", "br0"});
  ip({"-n", p.hub_netns, "link", "set", "br0", "up"});
  for (size_t i = 0; i < p.devices.size(); ++i) {
    const NetDevice& d = p.devices[i];
    add_ns(d.netns);
    ip({"-n", p.hub_netns, "link", "add", d.hub_veth, "type", "veth", "peer", "name", device_side_if(), "netns",
        d.netns});
    ip({"-n", p.hub_netns, "link", "set", d.hub_veth, "master", "br0"});
    ip({"-n", p.hub_netns, "link", "set", d.hub_veth, "up"});
    ip({"-n", d.netns, "addr", "add", d.address + "/24", "dev", device_side_if()});
    ip({"-n", d.netns, "link", "set", device_side_if(), "up"});
    for (bool hub_side : {false, true})
      for (const auto& cmd : link_shaping_commands(p, i, hub_side)) run_checked(cmd);
  }
}

std::vector<std::string> delete_namespaces(const std::vector<std::string>& names) {
  std::vector<std::string> errors;
  // Devices first, the hub (owner of the bridge and the veths' other ends) last.
  std::vector<std::string> order;
  for (const auto& n : names)
    if (n.size() < 4 || n.rfind("-hub") != n.size() - 4) order.push_back(n);
  for (const auto& n : names)
    if (n.size() >= 4 && n.rfind("-hub") == n.size() - 4) order.push_back(n);
  for (const auto& n : order) {
    if (n.rfind("ast-", 0) != 0) {
      errors.push_back("refusing to delete network namespace " + n + " (not an ast- namespace)");
      continue;
    }
    if (!netns_exists(n)) continue;
    // Processes still inside were started in it by the testbed (nodes, exec).
    auto deadline = Clock::now() + Millis(5000);
    while (true) {
      CommandResult r = run_command({"ip", "netns", "pids", n});
      std::istringstream pids(r.out);
      pid_t pid;
      bool any = false;
      while (pids >> pid) {
        any = true;
        ::kill(pid, SIGKILL);
        ::kill(pid, SIGCONT);
        reap_if_child(pid);
      }
      if (!any || Clock::now() >= deadline) break;
      std::this_thread::sleep_for(Millis(10));
    }
    CommandResult r = run_command({"ip", "netns", "del", n});
    if (!r.ok() && netns_exists(n)) errors.push_back("cannot delete network namespace " + n + ": " + r.err);
  }
  return errors;
}

namespace {

// The namespace and address of an endpoint: a device or the hub.
struct End {
  std::string netns, address;
};

End endpoint(const NetworkPlan& p, const std::string& id) {
  if (id == "hub") {
    for (const auto& d : p.devices)
      if (d.id == "hub") return {d.netns, d.address};
    return {p.hub_netns, p.hub_address};
  }
  const NetDevice& d = p.device(id);
  return {d.netns, d.address};
}

void route(const std::string& verb, const End& from, const End& to) {
  CommandResult r = run_command({"ip", "-n", from.netns, "route", verb, "blackhole", to.address + "/32"});
  // Adding twice / deleting what is not there are no-ops for fault injection.
  if (!r.ok() && r.err.find("File exists") == std::string::npos &&
      r.err.find("No such process") == std::string::npos)
    throw std::runtime_error("'ip -n " + from.netns + " route " + verb + " blackhole " + to.address + "' failed: " + r.err);
}

// Cuts (cut) or heals the link a-b: blackhole routes both ways, or for b
// "*" / "all" a's side of its veth down or up.
void set_link(const NetworkPlan& p, const std::string& a, const std::string& b, bool cut) {
  if (b == "*" || b == "all") {
    ip({"-n", p.device(a).netns, "link", "set", device_side_if(), cut ? "down" : "up"});
    return;
  }
  if (a == b) throw std::invalid_argument(std::string(cut ? "cut-link" : "heal-link") + ": both ends are '" + a + "'");
  End ea = endpoint(p, a), eb = endpoint(p, b);
  const std::string verb = cut ? "add" : "del";
  route(verb, ea, eb);
  route(verb, eb, ea);
}

}  // namespace

void cut_link(const NetworkPlan& p, const std::string& a, const std::string& b) { set_link(p, a, b, true); }

void heal_link(const NetworkPlan& p, const std::string& a, const std::string& b) { set_link(p, a, b, false); }

void enter_netns(const std::string& name) {
  int fd = ::open(netns_path(name).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    throw std::runtime_error("cannot open network namespace " + name + " (" + netns_path(name) +
                             "): " + std::strerror(errno));
  int rc = ::setns(fd, CLONE_NEWNET);
  int e = errno;
  ::close(fd);
  if (rc != 0) throw std::runtime_error("cannot enter network namespace " + name + ": " + std::strerror(e));
}

void run_in_netns(const std::string& name, const std::function<void()>& fn) {
  std::exception_ptr err;
  std::thread t([&] {
    try {
      enter_netns(name);
      fn();
    } catch (...) {
      err = std::current_exception();
    }
  });
  t.join();
  if (err) std::rethrow_exception(err);
}

}  // namespace asteroid::testbed
