// Shared helpers of the testbed tests: temporary directories, capability
// checks, and running a program to completion with a deadline.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "apps/testbed/cgroups.h"
#include "apps/testbed/emulated_cluster.h"
#include "apps/testbed/netns.h"
#include "apps/testbed/process.h"
#include "tests/support/temp_dir.h"

namespace asteroid::testbed::test {

inline const std::string kHelper = TESTBED_HELPER;
inline const std::string kAsteroid = ASTEROID_BIN;

using test_support::TempDir;

inline const NetnsSupport& netns_support() {
  static NetnsSupport s = detect_netns();
  return s;
}
inline const CgroupSupport& cgroup_support() {
  static CgroupSupport s = detect_cgroups();
  return s;
}

#define SKIP_WITHOUT_NETNS()                                                                  \
  do {                                                                                        \
    if (!::asteroid::testbed::test::netns_support().available)                                \
      GTEST_SKIP() << "network namespaces not available: "                                     \
                   << ::asteroid::testbed::test::netns_support().reason;                       \
  } while (0)
#define SKIP_WITHOUT_CGROUPS()                                                                \
  do {                                                                                        \
    if (::asteroid::testbed::test::cgroup_support().version == ::asteroid::testbed::CgroupVersion::none) \
      GTEST_SKIP() << "cgroups not available: " << ::asteroid::testbed::test::cgroup_support().reason; \
  } while (0)

inline nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  nlohmann::json j;
  in >> j;
  return j;
}

// Pids recorded in nodes.json (nodes and relay).
inline std::vector<ProcessRef> recorded_processes(const std::string& dir) {
  std::vector<ProcessRef> refs;
  std::ifstream in(dir + "/nodes.json");
  if (!in) return refs;
  nlohmann::json j;
  in >> j;
  for (const auto& n : j["nodes"])
    if (n.value("pid", 0) > 0) refs.push_back({n["pid"].get<pid_t>(), n.value("start_time", 0ULL)});
  if (j["relay"].value("pid", 0) > 0) refs.push_back({j["relay"]["pid"].get<pid_t>(), j["relay"].value("start_time", 0ULL)});
  return refs;
}

// Everything a cluster may have created, by its id: namespaces and cgroups.
inline std::vector<std::string> leftovers_of(const std::string& cluster_id) {
  std::vector<std::string> left;
  if (cluster_id.empty()) return left;
  CommandResult r = run_command({"ip", "netns", "list"});
  std::istringstream in(r.out);
  std::string line;
  while (std::getline(in, line))
    if (line.find("ast-" + cluster_id + "-") != std::string::npos) left.push_back("netns " + line);
  const auto& cg = cgroup_support();
  for (const std::string& base : {cg.cpu_base, cg.memory_base})
    if (!base.empty() && std::filesystem::exists(base + "/asteroid-" + cluster_id))
      left.push_back("cgroup " + base + "/asteroid-" + cluster_id);
  return left;
}

// Options for bringing up a cluster of testbed helper nodes ("node" of the
// helper binary, not asteroid) in `dir`.
inline LaunchOptions options(const std::string& dir, CpuMode cpu, NetMode net) {
  LaunchOptions o;
  o.dir = dir;
  o.node_command = {kHelper, "node"};
  o.asteroid_binary = kHelper;
  o.cpu = cpu;
  o.net = net;
  o.ready_timeout = Millis(20000);
  o.stop_grace = Millis(2000);
  return o;
}

// Two devices, dev0 and dev1, with `memory_mb` each on links of `mbps`;
// emulated with the given CPU shares, if any.
inline ClusterSpec two_devices(const std::string& name, double mbps, double memory_mb,
                               std::optional<std::pair<double, double>> cpu_shares = std::nullopt) {
  ClusterSpec s;
  s.name = name;
  s.cluster.default_bandwidth_mbps = mbps;
  for (int i = 0; i < 2; ++i) {
    planner::Device d;
    d.id = "dev" + std::to_string(i);
    d.memory_mb = memory_mb;
    if (cpu_shares) {
      d.emulate = planner::Emulation{};
      d.emulate->cpu_share = i == 0 ? cpu_shares->first : cpu_shares->second;
    }
    s.cluster.devices.push_back(d);
  }
  return s;
}

// Runs argv to completion (bounded) and returns (status, stdout+stderr).
inline CommandResult run(const std::vector<std::string>& argv, Millis timeout = Millis(60000)) {
  return run_command(argv, timeout);
}

}  // namespace asteroid::testbed::test
