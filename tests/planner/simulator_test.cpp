// The simulator against textbook pipeline schedules and small literal cases.
#include <gtest/gtest.h>

#include "planner/cost_model.h"
#include "planner/schedule.h"
#include "planner/search.h"
#include "planner/simulator.h"
#include "tests/planner/instances.h"

namespace asteroid::planner {
namespace {

// P devices "d0".."d{P-1}", one layer each; every layer takes tf forward and
// tb backward for any batch (profiled at 1 and 64 with the time growing
// linearly is NOT wanted here: the textbook assumes a fixed stage time, so
// the profile is flat: t(b) = t for b in [1, 64]).
struct Pipeline {
  Cluster cluster;
  Profile profile;
  Plan plan;
};

Pipeline textbook(int p, int m, double tf, double tb, double out_bytes = 0, double bandwidth = 100) {
  Pipeline x;
  x.cluster.default_bandwidth_mbps = bandwidth;
  for (int s = 0; s < p; ++s) {
    std::string id = "d" + std::to_string(s);
    x.cluster.devices.push_back({id, "", 0, 1024, std::nullopt});
    x.profile.layers.push_back({"l" + std::to_string(s), 0, out_bytes, 0});
  }
  for (int s = 0; s < p; ++s) {
    DeviceProfile dp;
    dp.batch.push_back(1);
    dp.batch.push_back(64);
    dp.fwd_ms.assign(p, {tf, tf});
    dp.bwd_ms.assign(p, {tb, tb});
    x.profile.devices["d" + std::to_string(s)] = dp;
  }
  x.plan.batch = m;
  x.plan.microbatches = m;
  x.plan.microbatch_size = 1;
  for (int s = 0; s < p; ++s) x.plan.stages.push_back({s, s + 1, {{"d" + std::to_string(s), 1}}});
  return x;
}

TEST(Simulator, TextbookOneFOneBRoundIsMPlusPMinusOneSteps) {
  for (int p = 1; p <= 5; ++p)
    for (int m = 1; m <= 8; ++m)
      for (auto [tf, tb] : {std::pair{1.0, 1.0}, std::pair{1.0, 2.0}, std::pair{3.0, 1.5}}) {
        Pipeline x = textbook(p, m, tf, tb);
        ProfileTables t(x.cluster, x.profile);
        Simulation sim = simulate(x.plan, t);
        SCOPED_TRACE("P " + std::to_string(p) + " M " + std::to_string(m) + " tf " + std::to_string(tf) +
                     " tb " + std::to_string(tb) + "\n" + format_grid(x.plan, sim));
        EXPECT_DOUBLE_EQ(sim.round_ms, (m + p - 1) * (tf + tb));
        // The cost model says the same for equal stages and free transfers.
        EXPECT_DOUBLE_EQ(evaluate(x.plan, t).round_ms, (m + p - 1) * (tf + tb));
        // Each device computes M (tf + tb): the bubble is (P-1)/(M+P-1).
        EXPECT_NEAR(sim.bubble_fraction, static_cast<double>(p - 1) / (m + p - 1), 1e-12);
        EXPECT_EQ(sim.ops.size(), static_cast<size_t>(2 * m * p));
      }
}

TEST(Simulator, GridOfTwoStagesTwoMicroBatches) {
  // tf = tb = 1. Stage 0 admits K_0 = min(2, 2) = 2 forwards, stage 1 one.
  // t=0 0F0; t=1 0F1 and 1F0; t=2 1B0 (backward first; 1F1 is also ready);
  // t=3 0B0 and 1F1; t=4 1B1; t=5 0B1. Round 6 = (2 + 2 - 1) x 2.
  Pipeline x = textbook(2, 2, 1, 1);
  ProfileTables t(x.cluster, x.profile);
  Simulation sim = simulate(x.plan, t);
  EXPECT_EQ(format_grid(x.plan, sim),
            "t(ms)  0.0 1.0 2.0 3.0 4.0 5.0\n"
            "stage0 0F0 0F1 .   0B0 .   0B1\n"
            "stage1 .   1F0 1B0 1F1 1B1 .\n");
  EXPECT_DOUBLE_EQ(sim.round_ms, 6);
}

TEST(Simulator, OneFOneBWindowLimitsStashedMicroBatches) {
  // With P = 4 and M = 8, stage p never has more than min(M, P - p)
  // forwards without their backward.
  Pipeline x = textbook(4, 8, 1, 2);
  ProfileTables t(x.cluster, x.profile);
  Simulation sim = simulate(x.plan, t);
  for (int s = 0; s < 4; ++s) {
    int in_flight = 0, most = 0;
    for (const SimOp& op : sim.ops) {
      if (op.stage != s) continue;
      in_flight += op.kind == 'F' ? 1 : -1;
      most = std::max(most, in_flight);
    }
    EXPECT_EQ(most, std::min(8, 4 - s)) << "stage " << s << "\n" << format_grid(x.plan, sim);
  }
}

TEST(Simulator, TransfersShareTheirLinkOneAtATime) {
  // Two stages, free compute, M = 2, one sample of 12500 bytes per
  // micro-batch at 100 Mbit/s: 12500 * 8 / 1e3 / 100 = 1 ms a transfer.
  // t=0: 0F0, 0F1 (free); act0 on d0->d1 [0, 1], act1 waits: [1, 2].
  // t=1: 1F0, 1B0; grad0 on d1->d0 [1, 2] (the other direction: no wait).
  // t=2: 1F1, 1B1, 0B0; grad1 [2, 3]. t=3: 0B1. Round 3.
  // (The cost model charges the transfer step M times: 2 * (1 + 1) = 4.)
  Pipeline x = textbook(2, 2, 0, 0, 12500, 100);
  ProfileTables t(x.cluster, x.profile);
  Simulation sim = simulate(x.plan, t);
  EXPECT_DOUBLE_EQ(sim.round_ms, 3);
  ASSERT_EQ(sim.transfers.size(), 4u);
  EXPECT_DOUBLE_EQ(sim.transfers[1].start_ms, 1);  // act1 waited for act0
  EXPECT_DOUBLE_EQ(evaluate(x.plan, t).round_ms, 4);
}

TEST(Simulator, GroupAllReducesAfterItsLastBackward) {
  // One stage of two devices, M = 1, B = 2 (one sample each), tf = 1,
  // tb = 2: both finish their backward at 3. W = 250000 bytes at
  // 100 Mbit/s: Ta = 2 (2-1)/2 * 250000 * 8 / 1e3 / 100 = 20 ms. Round 23.
  Pipeline x = textbook(2, 1, 1, 2);
  x.profile.layers = {{"l0", 250000, 0, 0}};
  for (auto& [id, dp] : x.profile.devices) {
    dp.fwd_ms = {{1, 1}};
    dp.bwd_ms = {{2, 2}};
  }
  x.plan.batch = 2;
  x.plan.microbatch_size = 2;
  x.plan.stages = {{0, 1, {{"d0", 1}, {"d1", 1}}}};
  ProfileTables t(x.cluster, x.profile);
  Simulation sim = simulate(x.plan, t);
  EXPECT_DOUBLE_EQ(sim.round_ms, 23);
  EXPECT_DOUBLE_EQ(sim.devices[0].allreduce_ms, 20);
  EXPECT_DOUBLE_EQ(sim.devices[1].busy_ms, 3);
  EXPECT_DOUBLE_EQ(evaluate(x.plan, t).round_ms, 23);  // M E + Ta = 1 * 3 + 20
}

TEST(Simulator, EveryMemberEndsItsRoundWithItsOptimizerUpdate) {
  // Two single-device stages (tf 1, tb 2, M = 2): the textbook round is
  // (M + P - 1)(tf + tb) = 9; d0's last backward ends at 9, d1's at 7.
  // Momentum updates: d0 0.25 (its layer 0), d1 4 (its layer 1).
  Pipeline x = textbook(2, 2, 1, 2);
  x.profile.devices["d0"].update_ms = {{OptimizerKind::momentum, {0.25, 0.5}}, {OptimizerKind::adam, {9, 9}}};
  x.profile.devices["d1"].update_ms = {{OptimizerKind::momentum, {0, 4}}};
  ProfileTables t(x.cluster, x.profile);
  const Simulation sgd = simulate(x.plan, t);  // no SGD update profiled: the textbook
  EXPECT_DOUBLE_EQ(sgd.devices[0].finish_ms, 9);
  EXPECT_DOUBLE_EQ(sgd.devices[1].finish_ms, 7);
  EvalOptions momentum;
  momentum.optimizer = OptimizerKind::momentum;
  const Simulation sim = simulate(x.plan, t, momentum);
  EXPECT_DOUBLE_EQ(sim.devices[0].finish_ms, 9.25);
  EXPECT_DOUBLE_EQ(sim.devices[1].finish_ms, 7 + 4);
  EXPECT_DOUBLE_EQ(sim.round_ms, 11);
  EXPECT_DOUBLE_EQ(sim.devices[1].busy_ms, 2 * 3 + 4);
  // The closed form of COST_MODEL.md does not change.
  EXPECT_DOUBLE_EQ(evaluate(x.plan, t, momentum).round_ms, 9);

  // A group updates after its all-reduce (GroupAllReducesAfterItsLastBackward: ends at 23).
  Pipeline g = textbook(2, 1, 1, 2);
  g.profile.layers = {{"l0", 250000, 0, 0}};
  for (auto& [id, dp] : g.profile.devices) {
    dp.fwd_ms = {{1, 1}};
    dp.bwd_ms = {{2, 2}};
  }
  g.profile.devices["d1"].update_ms = {{OptimizerKind::momentum, {1.5}}};
  g.plan.batch = 2;
  g.plan.microbatch_size = 2;
  g.plan.stages = {{0, 1, {{"d0", 1}, {"d1", 1}}}};
  ProfileTables tg(g.cluster, g.profile);
  const Simulation group = simulate(g.plan, tg, momentum);
  EXPECT_DOUBLE_EQ(group.devices[0].finish_ms, 23);
  EXPECT_DOUBLE_EQ(group.devices[1].finish_ms, 24.5);
  EXPECT_DOUBLE_EQ(group.devices[1].allreduce_ms, 20);
  EXPECT_DOUBLE_EQ(group.round_ms, 24.5);
}

// The hpp plan of each of the tests' random instances that has one (seeds
// 1..60: up to 6 devices, 8 layers, 5 micro-batches, mixed links), with its
// tables; returns how many there were.
template <typename Check>
int for_each_planned_instance(Check check) {
  int planned = 0;
  for (uint32_t seed = 1; seed <= 60; ++seed) {
    testing::InstanceSpec spec;
    spec.devices = 1 + seed % 6;
    spec.layers = 2 + seed % 7;
    spec.mixed_links = seed % 2;
    const ProfileTables t = testing::random_tables(seed, spec);
    const TrainingConfig cfg = testing::microbatched(1 + seed % 5, 1 + seed % 8);
    PlanResult r = plan_hpp(t, cfg);
    if (!r.feasible) continue;
    ++planned;
    SCOPED_TRACE("seed " + std::to_string(seed));
    check(r.plan, t);
  }
  return planned;
}

TEST(Simulator, RunsEveryPlannedRandomInstanceToTheEnd) {
  const int simulated = for_each_planned_instance([](const Plan& plan, const ProfileTables& t) {
    Simulation sim = simulate(plan, t);
    size_t devices = 0;
    for (const Stage& s : plan.stages) devices += s.devices.size();
    EXPECT_EQ(sim.ops.size(), 2 * devices * plan.microbatches);
    for (const SimDevice& d : sim.devices) {
      EXPECT_GE(d.idle_ms, -1e-9);
      EXPECT_LE(d.finish_ms, sim.round_ms + 1e-9);
    }
    EXPECT_GE(sim.bubble_fraction, 0);
    EXPECT_LT(sim.bubble_fraction, 1);
  });
  EXPECT_GE(simulated, 40);
}

// Every member of every stage runs the canonical 1F1B order of
// planner/schedule.h, the rule the stage actors follow (the runtime test
// Runtime.EveryStageFollowsTheCanonicalOneFOneBOrder asserts the same of
// real processes), whatever the stage times, links and groups.
TEST(Simulator, EveryMemberRunsTheStageActorsOneFOneBOrder) {
  int pipelines = 0;
  for_each_planned_instance([&](const Plan& plan, const ProfileTables& t) {
    const Simulation sim = simulate(plan, t);
    const int stages = static_cast<int>(plan.stages.size());
    if (stages > 1) ++pipelines;
    for (int p = 0; p < stages; ++p) {
      std::string canonical;
      for (const Op& op : canonical_1f1b(p, stages, plan.microbatches)) canonical += to_string(op) + " ";
      for (size_t j = 0; j < plan.stages[p].devices.size(); ++j) {
        std::string ran;
        for (const SimOp& op : sim.ops) {  // one member runs one op at a time: its order
          if (op.stage == p && op.member == static_cast<int>(j)) {
            ran += std::string(1, op.kind) + std::to_string(op.microbatch) + " ";
          }
        }
        EXPECT_EQ(ran, canonical) << "stage " << p << " of " << stages << ", member " << j;
      }
    }
  });
  EXPECT_GE(pipelines, 10);
}

}  // namespace
}  // namespace asteroid::planner
