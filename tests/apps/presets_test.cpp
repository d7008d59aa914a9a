#include <gtest/gtest.h>

#include <map>
#include <set>

#include "apps/testbed/cgroups.h"
#include "apps/testbed/emulated_cluster.h"
#include "apps/testbed/presets.h"

namespace asteroid::testbed {
namespace {

std::map<std::string, int> composition(const planner::Cluster& c) {
  std::map<std::string, int> m;
  for (const auto& d : c.devices) m[*d.emulate->device_class]++;
  return m;
}

TEST(Presets, CompositionFollowsThePaper) {
  EXPECT_EQ(composition(make_preset("A")), (std::map<std::string, int>{{"nano", 5}}));
  EXPECT_EQ(composition(make_preset("B")), (std::map<std::string, int>{{"nx", 3}, {"tx2", 2}}));
  EXPECT_EQ(composition(make_preset("C")), (std::map<std::string, int>{{"nx", 1}, {"tx2", 2}, {"nano", 3}}));
  EXPECT_EQ(composition(make_preset("D")), (std::map<std::string, int>{{"tx2", 1}, {"nano", 3}}));
}

TEST(Presets, IdsUniqueMemoryAndBandwidth) {
  for (const char* env : {"A", "B", "C", "D"}) {
    PresetOptions o;
    o.bandwidth_mbps = 100;
    planner::Cluster c = make_preset(env, o);
    std::set<std::string> ids;
    for (const auto& d : c.devices) {
      EXPECT_TRUE(ids.insert(d.id).second) << d.id;
      EXPECT_EQ(d.memory_mb, *d.emulate->device_class == "nano" ? 4096 : 8192) << d.id;
      EXPECT_TRUE(d.host.empty());
    }
    EXPECT_EQ(c.default_bandwidth_mbps, 100);
    EXPECT_TRUE(c.links.empty());
  }
  EXPECT_EQ(make_preset("c").devices.front().id, "nx-0");  // case-insensitive, fastest first
}

TEST(Presets, SharesKeepRelativeSpeedsAndFitTheBudget) {
  for (double budget : {0.5, 1.5, 3.0, 100.0}) {
    for (const char* env : {"A", "B", "C", "D"}) {
      PresetOptions o;
      o.cpu_budget_cores = budget;
      planner::Cluster c = make_preset(env, o);
      double sum = 0, nano = 0;
      for (const auto& d : c.devices) {
        double s = *d.emulate->cpu_share;
        sum += s;
        EXPECT_LE(s, 1.0 + 1e-9);
        EXPECT_GT(s, 0);
        double speed = device_class(*d.emulate->device_class).relative_speed;
        if (nano == 0) nano = s / speed;
        EXPECT_NEAR(s / speed, nano, nano * 2e-3 + 1e-4) << env << " " << d.id << " budget " << budget;
      }
      EXPECT_LE(sum, budget + 1e-3) << env;
    }
  }
  // Env C on 1.5 cores: 12.6 Nano-units; a Nano gets 1.5/12.6 of a core.
  PresetOptions o;
  o.cpu_budget_cores = 1.5;
  planner::Cluster c = make_preset("C", o);
  EXPECT_NEAR(*c.devices[0].emulate->cpu_share, 4.8 * 1.5 / 12.6, 1e-4);
  EXPECT_NEAR(*c.devices[5].emulate->cpu_share, 1.5 / 12.6, 1e-4);
}

TEST(Presets, ScaleCapsAtOneCore) {
  auto s = scale_cpu_shares({1, 2.4, 4.8}, 64);
  EXPECT_NEAR(s[2], 1.0, 1e-12);
  EXPECT_NEAR(s[0], 1 / 4.8, 1e-12);
  EXPECT_THROW(scale_cpu_shares({}, 1), std::invalid_argument);
  EXPECT_THROW(scale_cpu_shares({1}, 0), std::invalid_argument);
}

TEST(Presets, UnknownPresetIsAClearError) {
  try {
    make_preset("Z");
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("unknown preset 'Z'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("A, B, C, D"), std::string::npos) << e.what();
  }
  PresetOptions bad;
  bad.bandwidth_mbps = 0;
  EXPECT_THROW(make_preset("A", bad), std::invalid_argument);
  EXPECT_THROW(preset_spec("E"), std::invalid_argument);
}

TEST(Presets, TableNamesEveryEnv) {
  std::string t = presets_table();
  for (const char* s : {"| A |", "| B |", "| C |", "| D |", "Jetson Nano", "Jetson TX2", "Jetson Xavier NX"})
    EXPECT_NE(t.find(s), std::string::npos) << s << "\n" << t;
}

TEST(CpuQuota, PeriodAndQuota) {
  CpuQuota q = cpu_quota_for(0.25);  // 1 ms (the kernel's minimum) per 4 ms
  EXPECT_EQ(q.period_us, 4000);
  EXPECT_EQ(q.quota_us, 1000);
  q = cpu_quota_for(0.05);
  EXPECT_EQ(q.quota_us, 1000);
  EXPECT_EQ(q.period_us, 20000);
  q = cpu_quota_for(0.7);  // never a period under 2 ms
  EXPECT_EQ(q.period_us, 2000);
  EXPECT_EQ(q.quota_us, 1400);
  q = cpu_quota_for(1.5);
  EXPECT_EQ(q.period_us, 2000);
  EXPECT_EQ(q.quota_us, 3000);
  EXPECT_EQ(cpu_quota_for(0).quota_us, -1);
}

TEST(Modes, Parse) {
  EXPECT_EQ(parse_cpu_mode("auto"), CpuMode::automatic);
  EXPECT_EQ(parse_net_mode("relay"), NetMode::relay);
  EXPECT_THROW(parse_cpu_mode("fast"), std::invalid_argument);
  EXPECT_THROW(parse_net_mode("wifi"), std::invalid_argument);
}

}  // namespace
}  // namespace asteroid::testbed
