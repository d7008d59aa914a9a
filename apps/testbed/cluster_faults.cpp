// Fault injection on a running emulated cluster (EmulatedCluster::inject_*):
// signals to a node, CPU slow-downs, cut and healed links, restarts.
// Slow-downs, cuts and a restarted node's pid are recorded in nodes.json
// under its lock, so status() and handles in other processes see them.
#include "apps/testbed/emulated_cluster.h"

#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "apps/testbed/cgroups.h"
#include "apps/testbed/cluster_nodes.h"
#include "apps/testbed/cluster_state.h"
#include "apps/testbed/netns.h"

namespace asteroid::testbed {

namespace fs = std::filesystem;

namespace {
void signal_node(const std::string& dir, const std::string& id, int sig, const char* what) {
  ClusterState s = load_state(dir);
  NodeRecord& n = s.node(id);
  if (n.pid <= 0 || !n.ref().alive()) throw std::runtime_error(what + std::string(": node ") + id + " is not running");
  if (::kill(n.pid, sig) != 0)
    throw std::runtime_error(what + std::string(": cannot signal pid ") + std::to_string(n.pid) + ": " +
                             std::strerror(errno));
}
}  // namespace

void EmulatedCluster::inject_kill(const std::string& id) {
  signal_node(dir_, id, SIGKILL, "kill");
  // Reap at once when it is our child, so status says dead immediately.
  ClusterState s = load_state(dir_);
  ProcessRef r = s.node(id).ref();
  auto deadline = Clock::now() + Millis(2000);
  while (r.alive() && Clock::now() < deadline) std::this_thread::sleep_for(Millis(2));
}
void EmulatedCluster::inject_freeze(const std::string& id) { signal_node(dir_, id, SIGSTOP, "freeze"); }
void EmulatedCluster::inject_thaw(const std::string& id) { signal_node(dir_, id, SIGCONT, "thaw"); }

void EmulatedCluster::inject_slow(const std::string& id, double factor) {
  if (!(factor > 0) || !std::isfinite(factor))
    throw std::invalid_argument("slow: the factor must be a positive number, got " + format_double(factor));
  update_state(dir_, [&](ClusterState& s) {
    NodeRecord& n = s.node(id);
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
  update_state(dir_, [&](ClusterState& s) {
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
  update_state(dir_, [&](ClusterState& s) {
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
  NodeRecord n;
  std::string hub;
  {
    DirLock lock(dir_);
    ClusterState s = load_state(dir_);
    if (s.state != "up") throw std::runtime_error("restart: the cluster in " + dir_ + " is " + s.state);
    NodeRecord& r = s.node(id);
    if (r.pid > 0 && r.ref().alive())
      throw std::runtime_error("restart: node " + id + " is still running (pid " + std::to_string(r.pid) + ")");
    Subprocess p = spawn_node(r, owning_, "restart: ", [&] { save_state(s); });
    n = r;
    hub = s.mech.net == "netns-tc" ? s.hub_netns : "";
    if (owning_)
      children_.push_back(std::move(p));
    else
      p.release();
  }
  StartupChecks checks;
  checks.ensure_running = [&](size_t) {
    if (!n.ref().alive())
      throw std::runtime_error("restart: node " + id + " exited while starting; log " + n.log + ":" + log_tail(n.log));
  };
  if (!wait_until_accepting({n}, Clock::now() + ready_timeout, hub, checks).ready)
    throw std::runtime_error("restart: node " + id + " not accepting connections after " +
                             std::to_string(ready_timeout.count()) + " ms");
}

}  // namespace asteroid::testbed
