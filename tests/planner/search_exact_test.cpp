// The hpp search against exhaustive enumeration of COST_MODEL.md's search
// space on random small instances (fixed seeds): same T_round, and the same
// tie-breaks (stages, peak memory fraction, devices used).
#include <gtest/gtest.h>

#include "planner/search.h"
#include "tests/planner/instances.h"

namespace asteroid::planner {
namespace {

using testing::Enumerated;
using testing::InstanceSpec;

struct Case {
  uint32_t seed;
  InstanceSpec spec;
  int microbatches;
  int microbatch_size;
  Optimizer optimizer;
};

std::vector<Case> exactness_cases() {
  std::vector<Case> cases;
  std::mt19937 rng(20240815);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  for (int n = 0; n < 240; ++n) {
    Case c;
    c.seed = 1000 + n;
    c.spec.devices = pick(1, 6);
    c.spec.layers = pick(1, 8);
    c.spec.tight_memory = n % 2 == 1;
    c.spec.mixed_links = (n / 2) % 2 == 1;
    c.spec.monotone = n % 7 != 3;
    c.microbatches = pick(1, 8);
    c.microbatch_size = pick(1, 8);
    c.optimizer = static_cast<Optimizer>(n % 3);
    cases.push_back(c);
  }
  return cases;
}

// Identical devices on uniform links: many plans tie in T_round exactly, so
// the tie-breaks (stages, peak memory, devices) decide.
std::vector<Case> tie_cases() {
  std::vector<Case> cases;
  std::mt19937 rng(77);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  for (int n = 0; n < 100; ++n) {
    Case c;
    c.seed = 5000 + n;
    c.spec.devices = pick(2, 6);
    c.spec.layers = pick(2, 8);
    c.spec.tight_memory = n % 2 == 1;
    c.spec.identical = true;
    c.microbatches = pick(1, 6);
    c.microbatch_size = pick(1, 8);
    c.optimizer = static_cast<Optimizer>(n % 3);
    cases.push_back(c);
  }
  return cases;
}

void compare_with_enumeration(const std::vector<Case>& cases) {
  int compared = 0, feasible = 0, multi_stage = 0, partial_sets = 0;
  for (const Case& c : cases) {
    testing::Instance in = testing::random_instance(c.seed, c.spec);
    ProfileTables t(in.cluster, in.profile);
    TrainingConfig cfg;
    cfg.batch = c.microbatches * c.microbatch_size;
    cfg.microbatches = c.microbatches;
    cfg.optimizer = c.optimizer;
    Enumerated want = testing::enumerate_best(t, cfg.batch, cfg.microbatches, c.optimizer);
    PlanResult got = plan_hpp(t, cfg);
    SCOPED_TRACE("seed " + std::to_string(c.seed) + " devices " + std::to_string(c.spec.devices) +
                 " layers " + std::to_string(c.spec.layers) + " M " + std::to_string(c.microbatches) +
                 " B " + std::to_string(c.microbatch_size) + " (" + std::to_string(want.plans) +
                 " feasible plans)");
    ++compared;
    ASSERT_EQ(got.feasible, want.found) << got.why;
    if (!want.found) continue;
    ++feasible;
    EXPECT_TRUE(same_round(got.evaluation.round_ms, want.round))
        << "search " << got.evaluation.round_ms << " vs enumeration " << want.round;
    EXPECT_EQ(static_cast<int>(got.plan.stages.size()), want.stages);
    EXPECT_NEAR(got.evaluation.peak_memory_fraction, want.peak, 1e-12);
    int used = 0;
    for (const Stage& s : got.plan.stages) used += static_cast<int>(s.devices.size());
    EXPECT_EQ(used, want.devices);
    EXPECT_EQ(got.plan.predicted_round_ms, got.evaluation.round_ms);
    if (want.stages > 1) ++multi_stage;
    if (want.devices < c.spec.devices) ++partial_sets;
  }
  // The cases must exercise the interesting parts of the space.
  EXPECT_GE(feasible, static_cast<int>(cases.size()) * 6 / 10);
  EXPECT_GE(multi_stage, static_cast<int>(cases.size()) / 10);
  EXPECT_GE(partial_sets, static_cast<int>(cases.size()) / 20);
  std::printf("compared %d instances: %d feasible, %d multi-stage optima, %d leaving devices idle\n",
              compared, feasible, multi_stage, partial_sets);
}

TEST(SearchExact, MatchesExhaustiveEnumeration) {
  std::vector<Case> cases = exactness_cases();
  ASSERT_GE(cases.size(), 200u);
  compare_with_enumeration(cases);
}

TEST(SearchExact, BreaksTiesLikeTheEnumeration) { compare_with_enumeration(tie_cases()); }

}  // namespace
}  // namespace asteroid::planner
