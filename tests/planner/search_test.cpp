// Algorithm 1 against brute force, the dp and pp baselines, the
// micro-batch search, and the explain table.
#include <gtest/gtest.h>

#include "planner/allocation.h"
#include "planner/report.h"
#include "planner/baselines.h"
#include "planner/search.h"
#include "tests/planner/instances.h"

namespace asteroid::planner {
namespace {

using testing::InstanceSpec;

TEST(Allocation, ReachesTheBruteForceMinMaxUnderMemoryLimits) {
  int checked = 0, infeasible = 0;
  for (uint32_t seed = 1; seed <= 300; ++seed) {
    InstanceSpec spec;
    spec.devices = 1 + seed % 4;
    spec.layers = 3;
    spec.tight_memory = seed % 2 == 0;
    const ProfileTables t = testing::random_tables(seed, spec);
    const int b = spec.devices + static_cast<int>(seed % 7);
    const int k = 1 + seed % 3;
    const int begin = seed % 2, end = 3;
    std::vector<int> group = t.sorted_order();
    StageAllocation a = allocate_samples(t, group, begin, end, b, k, 0);
    // Brute force over every split with y >= 1 that fits.
    double best = std::numeric_limits<double>::infinity();
    std::vector<std::vector<int>> splits;
    std::vector<int> cur;
    testing::compositions(b, spec.devices, cur, splits);
    for (const auto& y : splits) {
      double worst = 0;
      bool fits = true;
      for (size_t i = 0; i < y.size(); ++i) {
        fits = fits && stage_memory_bytes(t, begin, end, y[i], k, 0) <= t.memory_bytes(group[i]);
        worst = std::max(worst, t.fwd_ms(group[i], begin, end, y[i]) + t.bwd_ms(group[i], begin, end, y[i]));
      }
      if (fits) best = std::min(best, worst);
    }
    SCOPED_TRACE("seed " + std::to_string(seed));
    ASSERT_EQ(a.feasible, best < std::numeric_limits<double>::infinity()) << a.why;
    if (!a.feasible) {
      ++infeasible;
      EXPECT_NE(a.why.find("short by"), std::string::npos) << a.why;
      continue;
    }
    double worst = 0;
    int sum = 0;
    for (size_t i = 0; i < group.size(); ++i) {
      worst = std::max(worst, t.fwd_ms(group[i], begin, end, a.samples[i]) + t.bwd_ms(group[i], begin, end, a.samples[i]));
      sum += a.samples[i];
      EXPECT_GE(a.samples[i], 1);
      EXPECT_LE(stage_memory_bytes(t, begin, end, a.samples[i], k, 0), t.memory_bytes(group[i]));
    }
    EXPECT_EQ(sum, b);
    EXPECT_DOUBLE_EQ(worst, best);
    ++checked;
  }
  EXPECT_GE(checked, 150);
  EXPECT_GE(infeasible, 10);
}

TEST(Baselines, DataParallelSplitsEquallyRemainderFirst) {
  const ProfileTables t = testing::random_tables(5, {/*devices=*/3, /*layers=*/4});
  TrainingConfig cfg = testing::microbatched(2, 8);  // B = 8 = 3 + 3 + 2
  PlanResult r = plan_dp(t, cfg);
  ASSERT_TRUE(r.feasible) << r.why;
  ASSERT_EQ(r.plan.stages.size(), 1u);
  const Stage& s = r.plan.stages[0];
  ASSERT_EQ(s.devices.size(), 3u);
  EXPECT_EQ(s.devices[0].samples, 3);
  EXPECT_EQ(s.devices[1].samples, 3);
  EXPECT_EQ(s.devices[2].samples, 2);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(s.devices[i].id, t.id(t.sorted_order()[i]));
  cfg.batch = 4;  // B = 2 < 3 devices
  EXPECT_FALSE(plan_dp(t, cfg).feasible);
}

TEST(Baselines, PipelineMatchesEnumerationAndHppIsNeverWorse) {
  for (uint32_t seed = 1; seed <= 60; ++seed) {
    InstanceSpec spec;
    spec.devices = 1 + seed % 4;
    spec.layers = spec.devices + static_cast<int>(seed % 4);
    spec.mixed_links = seed % 2 == 1;
    const ProfileTables t = testing::random_tables(seed, spec);
    const TrainingConfig cfg = testing::microbatched(1 + seed % 5, 1 + seed % 6);
    PlanResult pp = plan_pp(t, cfg);
    // Enumerate the pp space: every layer partition into N stages, devices
    // in sorted order, one per stage.
    const int n = spec.devices, l = spec.layers;
    std::vector<std::vector<int>> parts;
    std::vector<int> cur;
    testing::compositions(l, n, cur, parts);
    double best = std::numeric_limits<double>::infinity();
    for (const auto& ls : parts) {
      Plan plan;
      plan.batch = cfg.batch;
      plan.microbatches = cfg.microbatches;
      plan.microbatch_size = cfg.batch / cfg.microbatches;
      int l0 = 0;
      for (int s = 0; s < n; ++s) {
        plan.stages.push_back({l0, l0 + ls[s], {{t.id(t.sorted_order()[s]), plan.microbatch_size}}});
        l0 += ls[s];
      }
      Evaluation ev = evaluate(plan, t);
      if (ev.feasible) best = std::min(best, ev.round_ms);
    }
    SCOPED_TRACE("seed " + std::to_string(seed));
    ASSERT_EQ(pp.feasible, best < std::numeric_limits<double>::infinity()) << pp.why;
    if (!pp.feasible) continue;
    EXPECT_TRUE(same_round(pp.evaluation.round_ms, best)) << pp.evaluation.round_ms << " vs " << best;
    EXPECT_EQ(static_cast<int>(pp.plan.stages.size()), n);
    PlanResult hpp = plan_hpp(t, cfg);
    ASSERT_TRUE(hpp.feasible);
    EXPECT_LE(hpp.evaluation.round_ms, pp.evaluation.round_ms * (1 + 1e-9));
  }
}

TEST(Search, NeverSlowerThanTheBestSingleDeviceAndListsIdleDevices) {
  for (uint32_t seed = 1; seed <= 40; ++seed) {
    InstanceSpec spec;
    spec.devices = 2 + seed % 5;
    spec.layers = 3 + seed % 5;
    spec.mixed_links = true;
    const ProfileTables t = testing::random_tables(seed, spec);
    const TrainingConfig cfg = testing::microbatched(1 + seed % 4, 4);
    PlanResult r = plan_hpp(t, cfg);
    ASSERT_TRUE(r.feasible);
    for (int d = 0; d < t.device_count(); ++d) {
      Plan single;
      single.batch = cfg.batch;
      single.microbatches = cfg.microbatches;
      single.microbatch_size = 4;
      single.stages = {{0, spec.layers, {{t.id(d), 4}}}};
      EXPECT_LE(r.evaluation.round_ms, evaluate(single, t).round_ms * (1 + 1e-9)) << "seed " << seed;
    }
    size_t used = r.plan.idle_devices.size();
    for (const Stage& s : r.plan.stages) used += s.devices.size();
    EXPECT_EQ(used, static_cast<size_t>(spec.devices));
  }
}

TEST(Search, MicroBatchSearchTakesTheBestDivisor) {
  for (uint32_t seed = 1; seed <= 25; ++seed) {
    InstanceSpec spec;
    spec.devices = 2 + seed % 4;
    spec.layers = 3 + seed % 5;
    spec.tight_memory = seed % 3 == 0;
    const ProfileTables t = testing::random_tables(seed, spec);
    TrainingConfig cfg;
    cfg.batch = 12;
    cfg.search_microbatches = true;
    PlanResult searched = plan_hpp(t, cfg);
    double best = std::numeric_limits<double>::infinity();
    int best_m = 0;
    for (int m : {1, 2, 3, 4, 6, 12}) {
      TrainingConfig fixed = cfg;
      fixed.search_microbatches = false;
      fixed.microbatches = m;
      PlanResult r = plan_hpp(t, fixed);
      if (r.feasible && r.evaluation.round_ms < best && !same_round(r.evaluation.round_ms, best)) {
        best = r.evaluation.round_ms;
        best_m = m;
      }
    }
    SCOPED_TRACE("seed " + std::to_string(seed));
    ASSERT_EQ(searched.feasible, best_m > 0);
    if (!searched.feasible) continue;
    EXPECT_TRUE(same_round(searched.evaluation.round_ms, best));
    EXPECT_EQ(searched.plan.batch, 12);
    EXPECT_EQ(searched.plan.microbatches * searched.plan.microbatch_size, 12);
  }
}

TEST(Search, RejectsBadConfigs) {
  const ProfileTables t = testing::random_tables(1, {});
  TrainingConfig cfg;
  cfg.batch = 10;
  cfg.microbatches = 4;
  EXPECT_THROW(plan_hpp(t, cfg), std::invalid_argument);
  cfg.batch = 0;
  EXPECT_THROW(plan_hpp(t, cfg), std::invalid_argument);
  EXPECT_THROW(parse_strategy("gpipe"), std::invalid_argument);
  EXPECT_THROW(parse_optimizer("lion"), std::invalid_argument);
}

TEST(Report, ExplainNamesStagesStepsAndRound) {
  const ProfileTables t = testing::random_tables(11, {/*devices=*/4, /*layers=*/6});
  const TrainingConfig cfg = testing::microbatched(4, 4);
  PlanResult r = plan_hpp(t, cfg);
  ASSERT_TRUE(r.feasible);
  std::string text = explain_plan(r.plan, r.evaluation, r.planning_ms);
  for (const char* part : {"step", "layers", "devices (samples)", "Ef ms", "dominant step", "T_round", "throughput",
                           "memory: fits", "planning time"})
    EXPECT_NE(text.find(part), std::string::npos) << part << "\n" << text;
  Simulation sim = simulate(r.plan, t);
  std::string st = explain_simulation(r.plan, r.evaluation, sim);
  EXPECT_NE(st.find("bubble fraction"), std::string::npos) << st;
  EXPECT_NE(st.find("0F0"), std::string::npos) << st;
}

}  // namespace
}  // namespace asteroid::planner
