// The cost model on hand-checked plans; the arithmetic is in the comments.
#include <gtest/gtest.h>

#include "planner/allocation.h"
#include "planner/cost_model.h"

#include <random>

namespace asteroid::planner {
namespace {

Device dev(const std::string& id, double memory_mb) { return {id, "", 0, memory_mb, std::nullopt}; }

DeviceProfile flat(std::vector<int> batch, std::vector<std::vector<double>> fwd, std::vector<std::vector<double>> bwd) {
  DeviceProfile p;
  p.batch = std::move(batch);
  p.fwd_ms = std::move(fwd);
  p.bwd_ms = std::move(bwd);
  return p;
}

// One device d0 of 1 MB, profiled at b = 2 and 8, and two layers: [0, 2)
// sum to fwd 3 at b=2, 8 at b=8 (bwd 6 and 10).
struct OneDevice {
  Cluster c;
  Profile p;
  OneDevice() {
    c.devices = {dev("d0", 1)};
    p.layers = {{"l0", 1000, 100, 10}, {"l1", 3000, 200, 20}};
    p.devices["d0"] = flat({2, 8}, {{1.0, 3.0}, {2.0, 5.0}}, {{2.0, 6.0}, {4.0, 10.0}});
  }
};

TEST(CostModel, InterpolatesAsTheCostModelSays) {
  OneDevice x;
  ProfileTables t(x.c, x.p);
  EXPECT_DOUBLE_EQ(t.fwd_ms(0, 0, 2, 2), 3.0);
  EXPECT_DOUBLE_EQ(t.fwd_ms(0, 0, 2, 8), 8.0);
  EXPECT_NEAR(t.fwd_ms(0, 0, 2, 4), 3.0 + 5.0 * 2 / 6, 1e-12);  // between: linear
  EXPECT_DOUBLE_EQ(t.fwd_ms(0, 0, 2, 1), 1.5);                  // below b_1: 3 * 1/2
  EXPECT_DOUBLE_EQ(t.fwd_ms(0, 0, 2, 10), 10.0);                // above b_k: 8 * 10/8
  EXPECT_DOUBLE_EQ(t.fwd_ms(0, 1, 2, 0), 0.0);
}

TEST(CostModel, OneStageOneDevice) {
  // OneDevice; plan: one stage [0, 2) on d0 with y = 4, M = 3, batch 12.
  // fwd(4) = 3 + 5 * 2/6 = 4.6667, bwd(4) = 6 + 10 * 2/6 = 9.3333, E = 14.
  // One step: T = M E + Ta = 3 * 14 + 0 = 42; throughput 12 / 42 per ms.
  // Memory (SGD): W (2 + 0) + K y stash = 4000 * 2 + min(3, 1) * 4 * 30 = 8120 B.
  OneDevice x;
  Plan plan;
  plan.batch = 12;
  plan.microbatches = 3;
  plan.microbatch_size = 4;
  plan.stages = {{0, 2, {{"d0", 4}}}};
  Evaluation ev = evaluate(plan, x.c, x.p);
  ASSERT_EQ(ev.steps.size(), 1u);
  EXPECT_NEAR(ev.steps[0].ef_ms, 14.0 / 3, 1e-12);
  EXPECT_NEAR(ev.steps[0].eb_ms, 28.0 / 3, 1e-12);
  EXPECT_NEAR(ev.round_ms, 42, 1e-12);
  EXPECT_NEAR(ev.throughput, 12.0 / 42, 1e-12);
  EXPECT_EQ(ev.dominant_step, 0);
  ASSERT_EQ(ev.memory.size(), 1u);
  EXPECT_DOUBLE_EQ(ev.memory[0].used_bytes(), 8120);
  EXPECT_TRUE(ev.feasible);
  // Adam: 4000 * (2 + 2) + 120 = 16120 B.
  EvalOptions adam;
  adam.optimizer = OptimizerKind::adam;
  EXPECT_DOUBLE_EQ(evaluate(plan, x.c, x.p, adam).memory[0].used_bytes(), 16120);
}

// Two stages of one device each, profiles linear in the batch (one
// profiled size, b = 1: t(y) = t(1) y). a: fwd 1, bwd 2 per sample and
// layer; b: fwd 2, bwd 3. B = 2, M = 2; out_bytes[0] = 1000 at 8 Mbit/s.
struct TwoStages {
  Cluster c;
  Profile p;
  Plan plan;
  TwoStages(int first_end) {
    c.devices = {dev("a", 100), dev("b", 100)};
    c.default_bandwidth_mbps = 8;
    p.layers = {{"l0", 1000, 1000, 100}, {"l1", 1000, 1000, 100}, {"l2", 1000, 1000, 100}};
    p.devices["a"] = flat({1}, {{1}, {1}, {1}}, {{2}, {2}, {2}});
    p.devices["b"] = flat({1}, {{2}, {2}, {2}}, {{3}, {3}, {3}});
    plan.batch = 4;
    plan.microbatches = 2;
    plan.microbatch_size = 2;
    plan.stages = {{0, first_end, {{"a", 2}}}, {first_end, 3, {{"b", 2}}}};
  }
};

TEST(CostModel, TwoStagesDominatedByTheLast) {
  // Stage 0 = [0, 1) on a: Ef = 1*2 = 2, Eb = 2*2 = 4, E0 = 6.
  // Transfer: 2 samples * 1000 B * 8 / 1e3 / 8 Mbit/s = 2 ms each way, E1 = 4.
  // Stage 1 = [1, 3) on b: Ef = 2*2*2 = 8, Eb = 2*3*2 = 12, E2 = 20.
  // M E_c + sum_{i<c} E_i: c0 = 12, c1 = 8 + 6 = 14, c2 = 40 + 10 = 50: dm = 2.
  // Tw = [0, 2, 4]; Te = [40 + 6 + 4, 40 + 4, 40] = [50, 44, 40];
  // T = max(50, 46, 44) + Ta 0 = 50.
  TwoStages x(1);
  Evaluation ev = evaluate(x.plan, x.c, x.p);
  ASSERT_EQ(ev.steps.size(), 3u);
  EXPECT_DOUBLE_EQ(ev.steps[1].ef_ms, 2);
  EXPECT_EQ(ev.steps[1].kind, StepKind::transfer);
  EXPECT_EQ(ev.dominant_step, 2);
  EXPECT_DOUBLE_EQ(ev.steps[0].te_ms, 50);
  EXPECT_DOUBLE_EQ(ev.steps[1].tw_ms, 2);
  EXPECT_DOUBLE_EQ(ev.steps[1].te_ms, 44);
  EXPECT_DOUBLE_EQ(ev.steps[2].tw_ms, 4);
  EXPECT_DOUBLE_EQ(ev.round_ms, 50);
  // Memory: stage 0 keeps K = min(2, 2 - 0) = 2 micro-batches: 1000*2 + 2*2*100 = 2400 B;
  // stage 1: K = min(2, 1) = 1: 2000*2 + 1*2*200 = 4400 B.
  EXPECT_DOUBLE_EQ(ev.memory[0].used_bytes(), 2400);
  EXPECT_DOUBLE_EQ(ev.memory[1].used_bytes(), 4400);
}

TEST(CostModel, TwoStagesDominatedByTheFirst) {
  // Stage 0 = [0, 2) on a: Ef = 2 layers * 1 * 2 samples = 4, Eb = 2*2*2 = 8,
  // E0 = 12. Transfer E1 = 4 (as above). Stage 1 = [2, 3) on b: Ef = 4,
  // Eb = 6, E2 = 10. c0 = 24, c1 = 8 + 12 = 20, c2 = 20 + 16 = 36: dm = 2;
  // Tw = [0, 4, 6], Te = [20 + 12 + 4, 20 + 4, 20] = [36, 24, 20]: T = 36.
  TwoStages x(2);
  Evaluation ev = evaluate(x.plan, x.c, x.p);
  EXPECT_EQ(ev.dominant_step, 2);
  EXPECT_DOUBLE_EQ(ev.round_ms, 36);
  // a twice as slow (fwd 2, bwd 4): E0 = 2*2*2 + 2*4*2 = 24. c0 = 48,
  // c1 = 8 + 24 = 32, c2 = 20 + 28 = 48: equal, the first maximum is dm = 0.
  // Te = [48, 48 - 24, 48 - 24 - 4] = [48, 24, 20], Tw = [0, 8, 10]:
  // T = max(48, 32, 30) = 48.
  x.p.devices["a"] = flat({1}, {{2}, {2}, {2}}, {{4}, {4}, {4}});
  ev = evaluate(x.plan, x.c, x.p);
  EXPECT_EQ(ev.dominant_step, 0);
  EXPECT_DOUBLE_EQ(ev.steps[1].te_ms, 24);
  EXPECT_DOUBLE_EQ(ev.steps[2].te_ms, 20);
  EXPECT_DOUBLE_EQ(ev.round_ms, 48);
}

TEST(CostModel, GroupOfThree) {
  // x: fwd 1, bwd 1 per sample; y: fwd 2, bwd 2; z: fwd 1, bwd 3 (linear).
  // Sorted order (same memory, total time x 2 < y 4 = z 4, then id): x, y, z.
  // Algorithm 1, B = 6: start [1, 1, 1]; after-gift times x 4, y 8, z 8 -> x;
  // x 6, y 8, z 8 -> x; x 8, y 8, z 8 -> tie, first in order: x. y = [4, 1, 1].
  // Ef = max(4, 2, 1) = 4; Eb = max(4, 2, 3) = 4; E = 8.
  // Ta: W = 600000 B, slowest link inside the group x-y 50 Mbit/s:
  // 2 (3-1)/3 * 600000 * 8 / 1e3 / 50 = 128 ms. M = 1: T = 8 + 128 = 136.
  Cluster c;
  c.devices = {dev("z", 10), dev("y", 10), dev("x", 10)};
  c.default_bandwidth_mbps = 100;
  c.links = {{"x", "y", 50}};
  Profile p;
  p.layers = {{"l0", 600000, 10, 10}};
  p.devices["x"] = flat({1}, {{1}}, {{1}});
  p.devices["y"] = flat({1}, {{2}}, {{2}});
  p.devices["z"] = flat({1}, {{1}}, {{3}});
  ProfileTables t(c, p);
  ASSERT_EQ(t.sorted_order(), (std::vector<int>{2, 1, 0}));
  StageAllocation a = allocate_samples(t, t.sorted_order(), 0, 1, 6, 1, 0);
  ASSERT_TRUE(a.feasible) << a.why;
  EXPECT_EQ(a.samples, (std::vector<int>{4, 1, 1}));
  EXPECT_DOUBLE_EQ(a.ef_ms, 4);
  EXPECT_DOUBLE_EQ(a.eb_ms, 4);
  Plan plan;
  plan.batch = 6;
  plan.microbatches = 1;
  plan.microbatch_size = 6;
  plan.stages = {{0, 1, {{"x", 4}, {"y", 1}, {"z", 1}}}};
  Evaluation ev = evaluate(plan, t);
  EXPECT_NEAR(ev.steps[0].ta_ms, 128, 1e-9);
  EXPECT_NEAR(ev.round_ms, 136, 1e-9);
}

TEST(CostModel, MemoryInfeasiblePlanNamesTheDeviceAndTheBytes) {
  // nano has 1 MiB = 1048576 B. Adam: W (2 + 2) = 300000 * 4 = 1200000 B,
  // plus K y stash = 1 * 2 * 1000 = 2000 B: 1202000 B, short by 153424 B.
  Cluster c;
  c.devices = {dev("nano", 1)};
  Profile p;
  p.layers = {{"l0", 300000, 10, 1000}};
  p.devices["nano"] = flat({1}, {{1}}, {{1}});
  Plan plan;
  plan.batch = 2;
  plan.microbatches = 1;
  plan.microbatch_size = 2;
  plan.stages = {{0, 1, {{"nano", 2}}}};
  EvalOptions adam;
  adam.optimizer = OptimizerKind::adam;
  Evaluation ev = evaluate(plan, c, p, adam);
  EXPECT_FALSE(ev.feasible);
  EXPECT_NE(ev.infeasible_reason.find("nano"), std::string::npos) << ev.infeasible_reason;
  EXPECT_NE(ev.infeasible_reason.find("short by 153424 bytes"), std::string::npos) << ev.infeasible_reason;
  // Still timed: Ef = 1 * 2, Eb = 1 * 2, T = M E = 1 * 4.
  EXPECT_DOUBLE_EQ(ev.round_ms, 4);
}

TEST(CostModel, ClosedFormMatchesTheLiteralFormula) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> u(0, 10);
  for (int n = 0; n < 500; ++n) {
    int steps = 1 + 2 * (n % 5);
    std::vector<double> ef(steps), eb(steps), ta(steps, 0);
    for (int i = 0; i < steps; ++i) {
      ef[i] = u(rng);
      eb[i] = i % 2 ? ef[i] : u(rng);
      if (i % 2 == 0 && n % 3 == 0) ta[i] = u(rng) * 5;
    }
    int m = 1 + n % 8;
    EXPECT_NEAR(round_latency(ef, eb, ta, m), round_latency_closed_form(ef, eb, ta, m), 1e-9);
  }
}

TEST(CostModel, ReplicaBytesAreCountedOnTheHolderWhenAsked) {
  // Stages [0,1) on a, [1,3) on b. Replica of stage 0 on b (first device of
  // the next group), of stage 1 (the last) on a. SGD: W (1 + 0).
  TwoStages x(1);
  EXPECT_EQ(replica_holder(x.plan, 0), std::optional<std::string>("b"));
  EXPECT_EQ(replica_holder(x.plan, 1), std::optional<std::string>("a"));
  EvalOptions with;
  with.count_replica_bytes = true;
  Evaluation off = evaluate(x.plan, x.c, x.p);
  Evaluation on = evaluate(x.plan, x.c, x.p, with);
  EXPECT_DOUBLE_EQ(on.memory[0].replica_bytes, 2000);  // a holds stage 1: W = 2000
  EXPECT_DOUBLE_EQ(on.memory[1].replica_bytes, 1000);  // b holds stage 0: W = 1000
  EXPECT_DOUBLE_EQ(on.memory[0].used_bytes(), off.memory[0].used_bytes() + 2000);
  // A group of two holds no replica; a one-stage plan has no holder.
  Plan one = x.plan;
  one.stages = {{0, 3, {{"a", 1}, {"b", 1}}}};
  EXPECT_EQ(replica_holder(one, 0), std::nullopt);
}

TEST(CostModel, RejectsInvalidPlans) {
  TwoStages x(1);
  Plan bad = x.plan;
  bad.stages[1].devices[0].samples = 1;
  EXPECT_THROW(evaluate(bad, x.c, x.p), std::invalid_argument);
  bad = x.plan;
  bad.stages[1].devices[0].id = "ghost";
  EXPECT_THROW(evaluate(bad, x.c, x.p), std::invalid_argument);
  bad = x.plan;
  bad.stages[1].end = 2;
  EXPECT_THROW(evaluate(bad, x.c, x.p), std::invalid_argument);
}

}  // namespace
}  // namespace asteroid::planner
