// Ranking the search's candidates by simulation (planner/rank.h): with
// Ranking::model the strategy's plan is returned untouched; with
// Ranking::simulated the candidates are the optimum, the optimum for every
// M and the best device alone, and the chosen plan is the one with the
// shortest simulated round, which becomes its prediction.
#include <gtest/gtest.h>

#include "planner/baselines.h"
#include "planner/json_io.h"
#include "planner/rank.h"
#include "planner/simulator.h"
#include "instances.h"

namespace asteroid::planner {
namespace {

struct Case {
  testing::Instance instance;
  TrainingConfig config;
};

// Random instances (fixed seeds) with M searched over the divisors of the batch.
std::vector<Case> cases() {
  std::vector<Case> out;
  for (uint32_t seed = 1; seed <= 40; ++seed) {
    testing::InstanceSpec spec;
    spec.devices = 2 + seed % 5;
    spec.layers = 3 + seed % 6;
    spec.mixed_links = seed % 2;
    Case c{testing::random_instance(seed, spec), {}};
    c.config.batch = 4 * (1 + seed % 4);
    c.config.search_microbatches = true;
    out.push_back(std::move(c));
  }
  return out;
}

bool same_plan(const Plan& a, const Plan& b) {
  return plan_to_json(a) == plan_to_json(b);
}

TEST(Ranking, ByModelIsTheStrategysPlan) {
  for (const auto& c : cases()) {
    const ProfileTables t(c.instance.cluster, c.instance.profile);
    const PlanResult expected = plan_hpp(t, c.config);
    const RankedPlan ranked = rank_plans(t, c.config, Strategy::hpp, Ranking::model);
    ASSERT_EQ(ranked.result.feasible, expected.feasible);
    if (!expected.feasible) continue;
    EXPECT_TRUE(same_plan(ranked.result.plan, expected.plan));
    EXPECT_EQ(ranked.result.plan.predicted_round_ms, expected.evaluation.round_ms);
    ASSERT_EQ(ranked.candidates.size(), 1u);
    EXPECT_EQ(ranked.candidates[0].simulated_round_ms, 0);
  }
}

TEST(Ranking, BySimulationChoosesTheShortestSimulatedRound) {
  int ranked_instances = 0, differs = 0;
  for (const auto& c : cases()) {
    const ProfileTables t(c.instance.cluster, c.instance.profile);
    const RankedPlan ranked = rank_plans(t, c.config, Strategy::hpp, Ranking::simulated);
    if (!ranked.result.feasible) continue;
    ++ranked_instances;
    // The candidates: the optimum first, one per M where feasible and new, the best device alone.
    ASSERT_FALSE(ranked.candidates.empty());
    EXPECT_EQ(ranked.candidates.front().source, "optimum");
    EXPECT_TRUE(same_plan(ranked.candidates.front().plan, plan_hpp(t, c.config).plan));
    const PlanResult single = plan_single(t, c.config);
    bool has_single = false;
    for (const auto& cand : ranked.candidates) has_single |= cand.plan.stages.size() == 1 &&
                                                             cand.plan.stages[0].devices.size() == 1 &&
                                                             same_round(cand.model_round_ms, single.evaluation.round_ms);
    EXPECT_TRUE(has_single) << "the best device alone is a candidate";
    // Each simulated as the simulator does; the chosen one is the shortest, the first of equals.
    for (size_t i = 0; i < ranked.candidates.size(); ++i) {
      const Candidate& cand = ranked.candidates[i];
      EXPECT_DOUBLE_EQ(cand.simulated_round_ms, simulate(cand.plan, t).round_ms) << cand.source;
      const double chosen = ranked.candidates[ranked.chosen].simulated_round_ms;
      if (i < ranked.chosen) {
        EXPECT_GT(cand.simulated_round_ms, chosen) << cand.source;
        EXPECT_FALSE(same_round(cand.simulated_round_ms, chosen)) << cand.source;
      } else {
        EXPECT_TRUE(cand.simulated_round_ms > chosen || same_round(cand.simulated_round_ms, chosen)) << cand.source;
      }
    }
    // The result is the chosen candidate, predicted at its simulated round.
    Plan expected = ranked.candidates[ranked.chosen].plan;
    expected.predicted_round_ms = ranked.candidates[ranked.chosen].simulated_round_ms;
    EXPECT_TRUE(same_plan(ranked.result.plan, expected));
    EXPECT_DOUBLE_EQ(ranked.result.evaluation.round_ms, evaluate(ranked.result.plan, t).round_ms);
    if (ranked.chosen != 0) ++differs;
  }
  EXPECT_GE(ranked_instances, 30);
  // Simulation changes the choice somewhere (the closed form never waits).
  EXPECT_GE(differs, 1);
}

// min_gain: a cluster plan must beat the best one-device candidate by that
// fraction of its simulated round, else the device alone is chosen.
TEST(Ranking, AClusterPlanMustBeatTheBestDeviceAloneByMinGain) {
  int kept = 0, given_up = 0;
  for (const auto& c : cases()) {
    const ProfileTables t(c.instance.cluster, c.instance.profile);
    const RankedPlan free = rank_plans(t, c.config, Strategy::hpp, Ranking::simulated, 0);
    const RankedPlan strict = rank_plans(t, c.config, Strategy::hpp, Ranking::simulated, 0.25);
    if (!free.result.feasible) continue;
    double alone = 0;
    for (const auto& cand : strict.candidates) {
      size_t devices = 0;
      for (const auto& s : cand.plan.stages) devices += s.devices.size();
      if (devices == 1 && (alone == 0 || cand.simulated_round_ms < alone)) alone = cand.simulated_round_ms;
    }
    ASSERT_GT(alone, 0) << "no one-device candidate";
    const Candidate& f = free.candidates[free.chosen];
    const Candidate& s = strict.candidates[strict.chosen];
    size_t devices = 0;
    for (const auto& st : s.plan.stages) devices += st.devices.size();
    if (devices > 1) {
      EXPECT_LT(s.simulated_round_ms * 1.25, alone);
      EXPECT_DOUBLE_EQ(s.simulated_round_ms, f.simulated_round_ms);
      ++kept;
    } else {
      EXPECT_DOUBLE_EQ(s.simulated_round_ms, alone);
      if (f.simulated_round_ms < alone) ++given_up;  // without the margin a cluster plan won
    }
  }
  EXPECT_GE(kept, 1);
  EXPECT_GE(given_up, 1);
}

TEST(Ranking, NamesRoundTripAndABadOneIsNamed) {
  EXPECT_EQ(parse_ranking("model"), Ranking::model);
  EXPECT_EQ(parse_ranking(ranking_name(Ranking::simulated)), Ranking::simulated);
  try {
    parse_ranking("fastest");
    FAIL() << "accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("fastest"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace asteroid::planner
