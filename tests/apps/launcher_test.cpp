// The launcher (EmulatedCluster) with stand-in nodes: start, files, status,
// exec, faults, and above all clean-up after every kind of failure.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "apps/testbed/emulated_cluster.h"
#include "apps/testbed/presets.h"
#include "planner/json_io.h"
#include "testbed_test_util.h"

namespace asteroid::testbed {
namespace {

using test::kHelper;
using test::TempDir;
using test::options;
namespace fs = std::filesystem;

ClusterSpec small_spec(int n = 3, double mbps = 1000) {
  ClusterSpec s;
  s.name = "test";
  s.cluster.default_bandwidth_mbps = mbps;
  for (int i = 0; i < n; ++i) {
    planner::Device d;
    d.id = "dev" + std::to_string(i);
    d.memory_mb = 512;
    d.emulate = planner::Emulation{};
    d.emulate->cpu_share = 0.1 * (i + 1);
    s.cluster.devices.push_back(d);
  }
  return s;
}

std::string cluster_id(const std::string& dir) {
  if (!fs::exists(dir + "/nodes.json")) return "";
  return test::read_json(dir + "/nodes.json").value("cluster_id", "");
}

// Asserts that nothing of the cluster in `dir` is left: no recorded process,
// no namespace, no cgroup.
void expect_nothing_left(const std::string& dir, const std::vector<ProcessRef>& procs) {
  for (const auto& p : procs) EXPECT_FALSE(p.alive()) << "pid " << p.pid << " still running";
  auto left = test::leftovers_of(cluster_id(dir));
  EXPECT_TRUE(left.empty()) << left.front();
}

// ---- relay + throttle: works for everyone, root or not --------------------

TEST(Launcher, RelayModeUpStatusDown) {
  TempDir tmp;
  std::string dir = tmp.file("c");
  std::vector<ProcessRef> procs;
  {
    EmulatedCluster c = EmulatedCluster::up(small_spec(3, 100), options(dir, CpuMode::throttle, NetMode::relay));
    Mechanisms m = c.mechanisms();
    EXPECT_EQ(m.cpu, "throttle");
    EXPECT_EQ(m.net, "relay");
    EXPECT_EQ(m.memory, "node");
    // cluster.json: every device at its relay, in FORMATS.md shape.
    planner::Cluster cl = planner::load_cluster(dir + "/cluster.json");
    ASSERT_EQ(cl.devices.size(), 3u);
    nlohmann::json nodes = test::read_json(dir + "/nodes.json");
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_EQ(cl.devices[i].host, "127.0.0.1");
      EXPECT_NE(cl.devices[i].port, nodes["nodes"][i]["listen_port"].get<int>());  // the relay's port
      EXPECT_EQ(cl.devices[i].memory_mb, 512);
      ASSERT_TRUE(cl.devices[i].emulate && cl.devices[i].emulate->cpu_share);
      // The node got --cpu-share (it throttles itself).
      auto argv = nodes["nodes"][i]["argv"].get<std::vector<std::string>>();
      EXPECT_NE(std::find(argv.begin(), argv.end(), "--cpu-share"), argv.end());
    }
    EXPECT_EQ(cl.default_bandwidth_mbps, 100);
    EXPECT_EQ(nodes["mechanisms"]["net"], "relay");
    EXPECT_GT(nodes["relay"]["pid"].get<int>(), 0);
    ClusterStatus st = c.status();
    EXPECT_EQ(st.state, "up");
    for (const auto& n : st.nodes) EXPECT_EQ(n.state, "running") << n.id;
    procs = test::recorded_processes(dir);
    EXPECT_EQ(procs.size(), 4u);  // 3 nodes + the relay
    c.down();
    EXPECT_EQ(c.status().state, "down");
    expect_nothing_left(dir, procs);
    c.down();  // idempotent
  }
  expect_nothing_left(dir, procs);
}

TEST(Launcher, DestructorTearsDown) {
  TempDir tmp;
  std::string dir = tmp.file("c");
  std::vector<ProcessRef> procs;
  {
    EmulatedCluster c = EmulatedCluster::up(small_spec(2), options(dir, CpuMode::throttle, NetMode::relay));
    procs = test::recorded_processes(dir);
    ASSERT_EQ(procs.size(), 3u);
  }
  expect_nothing_left(dir, procs);
  EXPECT_EQ(test::read_json(dir + "/nodes.json")["state"], "down");
}

TEST(Launcher, DetachKeepsItRunningAndAttachStopsIt) {
  TempDir tmp;
  std::string dir = tmp.file("c");
  std::vector<ProcessRef> procs;
  {
    EmulatedCluster c = EmulatedCluster::up(small_spec(2), options(dir, CpuMode::none, NetMode::none));
    c.detach();
    procs = test::recorded_processes(dir);
  }
  for (const auto& p : procs) EXPECT_TRUE(p.alive());
  // A second cluster in the same directory is refused while this one is up.
  EXPECT_THROW(EmulatedCluster::up(small_spec(2), options(dir, CpuMode::none, NetMode::none)), std::runtime_error);
  EmulatedCluster::attach(dir).down();
  expect_nothing_left(dir, procs);
}

TEST(Launcher, FailingNodeLeavesNothingBehind) {
  for (bool root : {false, true}) {
    if (root && !test::netns_support().available) continue;
    SCOPED_TRACE(root ? "netns + cgroups" : "relay + throttle");
    TempDir tmp;
    std::string dir = tmp.file("c");
    LaunchOptions o = root ? options(dir, CpuMode::automatic, NetMode::automatic)
                           : options(dir, CpuMode::throttle, NetMode::relay);
    o.node_command = {kHelper, "node", "--fail-id", "dev2"};  // the last node exits at once
    try {
      EmulatedCluster::up(small_spec(4), o);
      FAIL() << "up() succeeded with a failing node";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("node dev2 exited with status 3"), std::string::npos) << e.what();
    }
    auto procs = test::recorded_processes(dir);
    EXPECT_EQ(procs.size(), root ? 4u : 5u);  // every node was started (and the relay, in relay mode)
    expect_nothing_left(dir, procs);
    EXPECT_EQ(test::read_json(dir + "/nodes.json")["state"], "down");
  }
}

TEST(Launcher, MissingNodeProgramLeavesNothingBehind) {
  TempDir tmp;
  std::string dir = tmp.file("c");
  LaunchOptions o = options(dir, CpuMode::automatic, NetMode::automatic);
  o.node_command = {"/nonexistent/asteroid", "node"};
  EXPECT_THROW(EmulatedCluster::up(small_spec(2), o), SpawnError);
  expect_nothing_left(dir, test::recorded_processes(dir));
}

TEST(Launcher, NodeThatNeverListensTimesOutAndIsKilled) {
  TempDir tmp;
  std::string dir = tmp.file("c");
  LaunchOptions o = options(dir, CpuMode::throttle, NetMode::relay);
  o.node_command = {"/bin/sh", "-c", "exec sleep 60", "sh"};
  o.ready_timeout = Millis(600);
  auto t0 = Clock::now();
  try {
    EmulatedCluster::up(small_spec(2), o);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("not accepting connections after 600 ms"), std::string::npos) << e.what();
  }
  EXPECT_LT(Clock::now() - t0, Millis(10000));
  expect_nothing_left(dir, test::recorded_processes(dir));
}

TEST(Launcher, CancelAbortsAndCleansUp) {
  TempDir tmp;
  std::string dir = tmp.file("c");
  std::atomic<bool> cancel{false};
  LaunchOptions o = options(dir, CpuMode::automatic, NetMode::automatic);
  o.node_command = {"/bin/sh", "-c", "exec sleep 60", "sh"};
  o.cancel = &cancel;
  std::thread canceller([&] {
    // Cancel as soon as the nodes are recorded as started.
    auto deadline = Clock::now() + Millis(20000);
    while (Clock::now() < deadline && test::recorded_processes(dir).size() < 2)
      std::this_thread::sleep_for(Millis(5));
    cancel = true;
  });
  try {
    EmulatedCluster::up(small_spec(2), o);
    ADD_FAILURE() << "not cancelled";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("interrupted"), std::string::npos) << e.what();
  }
  canceller.join();
  expect_nothing_left(dir, test::recorded_processes(dir));
}

TEST(Launcher, ExecRunsAsTheDevice) {
  TempDir tmp;
  std::string dir = tmp.file("c");
  EmulatedCluster c = EmulatedCluster::up(small_spec(2), options(dir, CpuMode::throttle, NetMode::relay));
  SpawnOptions so;
  so.capture_stdout = true;
  Subprocess p = c.exec("dev1", {"sh", "-c", "echo $ASTEROID_DEVICE_ID $ASTEROID_CPU_SHARE $ASTEROID_THROTTLE_FILE"}, so);
  auto line = p.read_line(Clock::now() + Millis(10000));
  ASSERT_TRUE(line);
  EXPECT_EQ(*line, "dev1 0.2 " + c.dir() + "/control/dev1.slow");
  EXPECT_EQ(p.wait_for(Millis(5000)), std::optional<int>(0));
  EXPECT_THROW(c.exec("nope", {"true"}), std::invalid_argument);
}

TEST(Launcher, FaultsFreezeThawKillRestartSlowInRelayMode) {
  TempDir tmp;
  std::string dir = tmp.file("c");
  EmulatedCluster c = EmulatedCluster::up(small_spec(2), options(dir, CpuMode::throttle, NetMode::relay));
  auto state_of = [&](const std::string& id) {
    for (const auto& n : c.status().nodes)
      if (n.id == id) return n.state;
    return std::string("?");
  };
  // Through a second handle, as `asteroid inject` does.
  EmulatedCluster other = EmulatedCluster::attach(dir);
  other.inject_freeze("dev0");
  auto deadline = Clock::now() + Millis(3000);
  while (state_of("dev0") != "frozen" && Clock::now() < deadline) std::this_thread::sleep_for(Millis(2));
  EXPECT_EQ(state_of("dev0"), "frozen");
  other.inject_thaw("dev0");
  deadline = Clock::now() + Millis(3000);
  while (state_of("dev0") != "running" && Clock::now() < deadline) std::this_thread::sleep_for(Millis(2));
  EXPECT_EQ(state_of("dev0"), "running");
  other.inject_kill("dev1");
  EXPECT_EQ(state_of("dev1"), "dead");
  EXPECT_THROW(other.inject_kill("dev1"), std::runtime_error);  // not running
  other.inject_restart("dev1");
  EXPECT_EQ(state_of("dev1"), "running");
  // slow: the throttle's control file.
  other.inject_slow("dev0", 2.5);
  std::ifstream in(dir + "/control/dev0.slow");
  double f = 0;
  in >> f;
  EXPECT_DOUBLE_EQ(f, 2.5);
  EXPECT_NEAR(c.status().nodes[0].cpu_share, 0.1 / 2.5, 1e-9);
  EXPECT_THROW(other.inject_slow("dev0", 0), std::invalid_argument);
  // Links: a device from everything (cut file read by the relay); pairs are refused.
  other.inject_cut_link("dev0", "*");
  EXPECT_TRUE(fs::exists(dir + "/control/dev0.cut"));
  EXPECT_EQ(c.status().cut_links, std::vector<std::string>{"dev0<->*"});
  other.inject_heal_link("dev0", "*");
  EXPECT_FALSE(fs::exists(dir + "/control/dev0.cut"));
  try {
    other.inject_cut_link("dev0", "dev1");
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("relay mode cannot cut one pair"), std::string::npos) << e.what();
  }
  EXPECT_THROW(other.inject_freeze("nobody"), std::invalid_argument);
  auto procs = test::recorded_processes(dir);  // includes the restarted dev1
  c.down();
  expect_nothing_left(dir, procs);
}

TEST(Launcher, UnreachableDevicesAreNamed) {
  TempDir tmp;
  EmulatedCluster c = EmulatedCluster::up(small_spec(2), options(tmp.file("c"), CpuMode::none, NetMode::relay));
  planner::Cluster cl = c.cluster();
  EXPECT_TRUE(unreachable_devices(cl, Millis(2000)).empty());
  c.inject_kill("dev1");
  planner::Device ghost;
  ghost.id = "ghost";
  ghost.host = "127.0.0.1";
  ghost.port = 1;  // nothing listens there
  cl.devices.push_back(ghost);
  cl.devices[0].port = 0;  // planned for only: skipped
  auto t0 = Clock::now();
  // dev1's relay still accepts (then drops) connections: only the ghost is
  // certain to be unreachable.
  auto bad = unreachable_devices(cl, Millis(500));
  EXPECT_NE(std::find(bad.begin(), bad.end(), "ghost"), bad.end());
  EXPECT_EQ(std::find(bad.begin(), bad.end(), "dev0"), bad.end());
  EXPECT_LT(Clock::now() - t0, Millis(3000));
}

TEST(Launcher, UnknownPresetIsAClearError) {
  try {
    preset_spec("X");
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string(e.what()), "unknown preset 'X': expected one of A, B, C, D");
  }
}

TEST(Launcher, ForcedMechanismThatIsMissingIsAnError) {
  if (test::netns_support().available) GTEST_SKIP() << "network namespaces are available here";
  TempDir tmp;
  EXPECT_THROW(EmulatedCluster::up(small_spec(2), options(tmp.file("c"), CpuMode::none, NetMode::netns)),
               std::runtime_error);
}

// ---- root: namespaces, tc and cgroups ------------------------------------

TEST(LauncherRoot, NamespacesCgroupsAndCleanUp) {
  SKIP_WITHOUT_NETNS();
  SKIP_WITHOUT_CGROUPS();
  TempDir tmp;
  std::string dir = tmp.file("c");
  ClusterSpec spec = preset_spec("D", 100, 1.5);
  std::vector<ProcessRef> procs;
  std::string cid;
  {
    EmulatedCluster c = EmulatedCluster::up(spec, options(dir, CpuMode::automatic, NetMode::automatic));
    Mechanisms m = c.mechanisms();
    EXPECT_EQ(m.net, "netns-tc");
    EXPECT_EQ(m.cpu, to_string(test::cgroup_support().version));
    nlohmann::json nodes = test::read_json(dir + "/nodes.json");
    cid = nodes["cluster_id"];
    procs = test::recorded_processes(dir);
    ASSERT_EQ(procs.size(), 4u);
    EXPECT_EQ(test::leftovers_of(cid).size(), test::cgroup_support().memory_base.empty() ||
                                                      test::cgroup_support().memory_base == test::cgroup_support().cpu_base
                                                  ? 6u
                                                  : 7u);  // 5 namespaces + cgroup dirs
    for (const auto& n : nodes["nodes"]) {
      // The quota matches the preset's share; the node did NOT get --cpu-share.
      std::string cpu_dir = n["cgroup_cpu"];
      CpuQuota q = read_cgroup_cpu_quota(test::cgroup_support().version, cpu_dir);
      double share = n["cpu_share"];
      EXPECT_NEAR(static_cast<double>(q.quota_us) / static_cast<double>(q.period_us), share, 0.002) << cpu_dir;
      EXPECT_EQ(cgroup_pids(cpu_dir), std::vector<pid_t>{n["pid"].get<pid_t>()});
      auto argv = n["argv"].get<std::vector<std::string>>();
      EXPECT_EQ(std::find(argv.begin(), argv.end(), "--cpu-share"), argv.end());
    }
    // Every node is reachable from the hub namespace at its cluster.json address.
    planner::Cluster cl = c.cluster();
    run_in_netns(nodes["hub"]["netns"], [&] {
      for (const auto& d : cl.devices) {
        SpawnOptions so;
        so.argv = {kHelper, "probe-link", "--connect", d.host + ":" + std::to_string(d.port), "--seconds", "0.05"};
        so.capture_stdout = true;
        // (the spawned sender inherits the hub namespace of this thread)
        Subprocess p = Subprocess::spawn(so);
        EXPECT_EQ(p.wait_for(Millis(10000)), std::optional<int>(0)) << d.id;
      }
    });
    // A device can reach another device directly (bridged).
    SpawnOptions so;
    so.capture_stdout = true;
    Subprocess p = c.exec(cl.devices[1].id,
                          {kHelper, "probe-link", "--connect", cl.devices[2].host + ":" + std::to_string(cl.devices[2].port),
                           "--seconds", "0.05"},
                          so);
    EXPECT_EQ(p.wait_for(Millis(10000)), std::optional<int>(0));
    // slow: the quota shrinks by the factor.
    std::string id0 = cl.devices[0].id;
    c.inject_slow(id0, 2);
    std::string cpu0 = nodes["nodes"][0]["cgroup_cpu"];
    CpuQuota q = read_cgroup_cpu_quota(test::cgroup_support().version, cpu0);
    EXPECT_NEAR(static_cast<double>(q.quota_us) / static_cast<double>(q.period_us),
                nodes["nodes"][0]["cpu_share"].get<double>() / 2, 0.002);
  }
  expect_nothing_left(dir, procs);
  EXPECT_TRUE(test::leftovers_of(cid).empty());
}

TEST(LauncherRoot, CutAndHealLinkBetweenTwoDevices) {
  SKIP_WITHOUT_NETNS();
  TempDir tmp;
  std::string dir = tmp.file("c");
  EmulatedCluster c = EmulatedCluster::up(small_spec(3), options(dir, CpuMode::none, NetMode::netns));
  planner::Cluster cl = c.cluster();
  auto reach = [&](const std::string& from, int to) {
    SpawnOptions so;
    so.capture_stdout = true;
    so.capture_stderr = true;
    Subprocess p = c.exec(from,
                          {"timeout", "1", kHelper, "probe-link", "--connect",
                           cl.devices[to].host + ":" + std::to_string(cl.devices[to].port), "--seconds", "0.02"},
                          so);
    auto st = p.wait_for(Millis(10000));
    return st && *st == 0;
  };
  EXPECT_TRUE(reach("dev0", 1));
  c.inject_cut_link("dev0", "dev1");
  EXPECT_FALSE(reach("dev0", 1));
  EXPECT_FALSE(reach("dev1", 0));
  EXPECT_TRUE(reach("dev0", 2));  // other links unaffected
  EXPECT_TRUE(reach("dev2", 1));
  c.inject_heal_link("dev0", "dev1");
  EXPECT_TRUE(reach("dev0", 1));
  c.inject_cut_link("dev2", "*");
  EXPECT_FALSE(reach("dev0", 2));
  EXPECT_FALSE(reach("dev2", 1));
  c.inject_heal_link("dev2", "*");
  EXPECT_TRUE(reach("dev0", 2));
  // The coordinator's side: the hub loses dev1 only.
  EXPECT_TRUE(reach("hub", 1));
  c.inject_cut_link("dev1", "hub");
  EXPECT_FALSE(reach("hub", 1));
  EXPECT_TRUE(reach("hub", 0));
  EXPECT_TRUE(reach("dev0", 1));
  c.inject_heal_link("dev1", "hub");
  EXPECT_TRUE(reach("hub", 1));
}

// The coordinator's way in: setns into the hub, then plain sockets reach
// every device at its cluster.json address. Done in a forked child so the
// test process keeps its own namespace.
TEST(LauncherRoot, EnterClusterNetworkReachesTheNodes) {
  SKIP_WITHOUT_NETNS();
  TempDir tmp;
  std::string dir = tmp.file("c");
  EmulatedCluster c = EmulatedCluster::up(small_spec(2), options(dir, CpuMode::none, NetMode::netns));
  planner::Cluster cl = c.cluster();
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int rc = 0;
    try {
      if (enter_cluster_network(dir + "/cluster.json") != "netns-tc") rc = 2;
      for (const auto& d : cl.devices) {
        CommandResult r = run_command({kHelper, "probe-link", "--connect", d.host + ":" + std::to_string(d.port),
                                       "--seconds", "0.02"},
                                      Millis(5000));
        if (!r.ok()) rc = 3;
      }
    } catch (...) {
      rc = 4;
    }
    ::_exit(rc);
  }
  int status = -1;
  auto deadline = Clock::now() + Millis(20000);
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (Clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      FAIL() << "child timed out";
    }
    std::this_thread::sleep_for(Millis(5));
  }
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  // Relay or no emulation: nothing to enter.
  TempDir other;
  EmulatedCluster r = EmulatedCluster::up(small_spec(1), options(other.file("c"), CpuMode::none, NetMode::relay));
  EXPECT_EQ(enter_cluster_network(other.file("c")), "relay");
  EXPECT_EQ(enter_cluster_network(tmp.path()), "none");  // no nodes.json: real devices
}

}  // namespace
}  // namespace asteroid::testbed
