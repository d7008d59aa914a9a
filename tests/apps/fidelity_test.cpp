// Fidelity of the emulation (issue 5): a 100 Mbit/s emulated link moves 90 to
// 110 Mbit/s of payload between two emulated devices; a device with half the
// CPU share of another takes 1.6 to 2.4 times longer on the same workload.
// The measuring programs run as the devices (EmulatedCluster::exec, i.e. what
// `asteroid cluster exec` does).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <regex>
#include <thread>

#include "apps/testbed/emulated_cluster.h"
#include "testbed_test_util.h"

namespace asteroid::testbed {
namespace {

using test::kHelper;
using test::TempDir;
using test::options;

ClusterSpec two_devices(double mbps, double share0, double share1) {
  return test::two_devices("fidelity", mbps, 1024, std::make_pair(share0, share1));
}

double json_number(const std::string& line, const std::string& key) {
  nlohmann::json j = nlohmann::json::parse(line);
  return j.at(key).get<double>();
}

// Receiver on dev1, sender on dev0; returns the receiver's payload Mbit/s.
double measure_device_link(EmulatedCluster& c, double seconds) {
  planner::Cluster cl = c.cluster();
  SpawnOptions so;
  so.capture_stdout = true;
  Subprocess rx = c.exec("dev1", {kHelper, "probe-link", "--listen", "--host", "0.0.0.0", "--port", "0",
                                  "--timeout", "60"}, so);
  auto first = rx.read_line(Clock::now() + Millis(10000));
  if (!first || first->rfind("listening ", 0) != 0) {
    ADD_FAILURE() << "receiver did not start";
    return 0;
  }
  std::string port = first->substr(10);
  Subprocess tx = c.exec("dev0", {kHelper, "probe-link", "--connect", cl.devices[1].host + ":" + port, "--seconds",
                                  std::to_string(seconds)}, so);
  auto result = rx.read_line(Clock::now() + Millis(static_cast<long long>(seconds * 1000) + 30000));
  EXPECT_EQ(tx.wait_for(Millis(30000)), std::optional<int>(0));
  if (!result) {
    ADD_FAILURE() << "no result from the receiver";
    return 0;
  }
  return json_number(*result, "mbps");
}

// The link's payload rate: measurements until one reaches `floor`, at most
// three; the best of them. Load from other tests on this shared machine
// can only slow the sender, never make the link faster: a measurement
// under the floor is tried again, and the best one is what the caller
// holds against the link's ceiling (the ones before it were lower).
double link_rate(EmulatedCluster& c, double seconds, double floor) {
  double best = 0;
  for (int attempt = 0; attempt < 3 && best < floor; ++attempt) best = std::max(best, measure_device_link(c, seconds));
  return best;
}

TEST(FidelityLink, HundredMbitBetweenTwoDevicesNetns) {
  SKIP_WITHOUT_NETNS();
  TempDir tmp;
  EmulatedCluster c = EmulatedCluster::up(two_devices(100, 1, 1), options(tmp.file("c"), CpuMode::none, NetMode::netns));
  double mbps = link_rate(c, 3.0, 90);
  std::printf("netns-tc, 100 Mbit/s link, device to device: %.1f Mbit/s payload\n", mbps);
  RecordProperty("netns_100_mbps", std::to_string(mbps));
  EXPECT_GE(mbps, 90);
  EXPECT_LE(mbps, 110);
}

TEST(FidelityLink, PerPairOverrideNetns) {
  SKIP_WITHOUT_NETNS();
  TempDir tmp;
  ClusterSpec spec = two_devices(1000, 1, 1);
  spec.cluster.links.push_back({"dev0", "dev1", 50});
  EmulatedCluster c = EmulatedCluster::up(spec, options(tmp.file("c"), CpuMode::none, NetMode::netns));
  double mbps = link_rate(c, 2.0, 45);
  std::printf("netns-tc, 50 Mbit/s pair override on a 1000 Mbit/s cluster: %.1f Mbit/s payload\n", mbps);
  EXPECT_GE(mbps, 45);
  EXPECT_LE(mbps, 55);
}

TEST(FidelityLink, HundredMbitThroughTheRelay) {
  TempDir tmp;
  EmulatedCluster c = EmulatedCluster::up(two_devices(100, 1, 1), options(tmp.file("c"), CpuMode::none, NetMode::relay));
  planner::Cluster cl = c.cluster();
  // The sender is outside the cluster (the relay mode has no namespaces);
  // dev1's node (the stand-in) logs what it received.
  CommandResult r = run_command({kHelper, "probe-link", "--connect", cl.devices[1].host + ":" +
                                 std::to_string(cl.devices[1].port), "--seconds", "3"},
                                Millis(40000));
  ASSERT_EQ(r.status, 0) << r.err;
  std::string log = c.status().nodes[1].log;
  // The log also has the launcher's readiness probes (0 bytes): take the
  // connection that carried the payload.
  std::regex re("conn bytes=([0-9]+) seconds=[0-9.]+ mbps=([0-9.]+)");
  double mbps = -1;
  std::string text;
  auto deadline = Clock::now() + Millis(10000);
  while (mbps < 0 && Clock::now() < deadline) {
    std::ifstream in(log);
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    for (std::sregex_iterator it(text.begin(), text.end(), re), end; it != end; ++it)
      if (std::stod((*it)[1]) > 1e6) mbps = std::stod((*it)[2]);
    if (mbps < 0) std::this_thread::sleep_for(Millis(20));
  }
  ASSERT_GE(mbps, 0) << log << ":\n" << text;
  std::printf("relay, 100 Mbit/s link: %.1f Mbit/s payload\n", mbps);
  EXPECT_GE(mbps, 90);
  EXPECT_LE(mbps, 110);
}

// Iterations of the burn workload that take about `seconds` at full speed.
long long calibrate(double seconds) {
  const long long probe = 20000000;
  CommandResult r = run_command({kHelper, "burn", "--iterations", std::to_string(probe)}, Millis(60000));
  // CPU time, not wall time: the probe's own start-up is not part of the work.
  double cpu = json_number(r.out, "cpu_s");
  return static_cast<long long>(static_cast<double>(probe) * seconds / std::max(cpu, 1e-3));
}

// Runs the same workload on both devices at once; returns wall(dev1) / wall(dev0).
double cpu_ratio(EmulatedCluster& c, long long iterations) {
  SpawnOptions so;
  so.capture_stdout = true;
  std::vector<std::string> burn = {kHelper, "burn", "--iterations", std::to_string(iterations)};
  Subprocess fast = c.exec("dev0", burn, so);
  Subprocess slow = c.exec("dev1", burn, so);
  auto f = fast.read_line(Clock::now() + Millis(120000));
  auto s = slow.read_line(Clock::now() + Millis(120000));
  if (!f || !s) {
    ADD_FAILURE() << "burn produced no result";
    return 0;
  }
  double wf = json_number(*f, "wall_s"), ws = json_number(*s, "wall_s");
  std::printf("  fast device %.3f s, slow device %.3f s\n", wf, ws);
  return ws / wf;
}

// The slow device of c takes 1.6 to 2.4 times as long as the fast one on the
// same workload; prints the ratio after `what` (mechanism and setup).
void expect_twice_as_long(EmulatedCluster& c, const std::string& what) {
  double ratio = cpu_ratio(c, calibrate(0.15));
  std::printf("%s: slow/fast = %.3f\n", what.c_str(), ratio);
  EXPECT_GE(ratio, 1.6);
  EXPECT_LE(ratio, 2.4);
}

TEST(FidelityCpu, HalfShareTakesTwiceAsLongCgroup) {
  SKIP_WITHOUT_CGROUPS();
  TempDir tmp;
  EmulatedCluster c = EmulatedCluster::up(two_devices(1000, 0.2, 0.1),
                                          options(tmp.file("c"), CpuMode::cgroup, NetMode::none));
  ASSERT_NE(c.mechanisms().cpu.find("cgroup"), std::string::npos);
  expect_twice_as_long(c, c.mechanisms().cpu + ", shares 0.2 vs 0.1");
}

TEST(FidelityCpu, HalfShareTakesTwiceAsLongThrottle) {
  TempDir tmp;
  EmulatedCluster c = EmulatedCluster::up(two_devices(1000, 0.2, 0.1),
                                          options(tmp.file("c"), CpuMode::throttle, NetMode::none));
  expect_twice_as_long(c, "throttle, shares 0.2 vs 0.1");
}

TEST(FidelityCpu, SlowFaultDividesTheShare) {
  TempDir tmp;
  // Both devices 0.2; then dev1 slowed by 2 => the same 2x ratio.
  EmulatedCluster c = EmulatedCluster::up(two_devices(1000, 0.2, 0.2),
                                          options(tmp.file("c"), CpuMode::automatic, NetMode::none));
  c.inject_slow("dev1", 2);
  expect_twice_as_long(c, c.mechanisms().cpu + ", slow dev1 x2");
}

}  // namespace
}  // namespace asteroid::testbed
