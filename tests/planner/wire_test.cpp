// The compressed wire: the cost model's codec terms on hand-checked plans
// (the arithmetic is in the comments), the search on literal instances
// where the fastest codec is not the answer, the dp baseline, the policies,
// the simulator and the lightweight re-plan's codecs.
#include <gtest/gtest.h>

#include <algorithm>

#include "planner/cost_model.h"
#include "planner/replan.h"
#include "planner/report.h"
#include "planner/baselines.h"
#include "planner/search.h"
#include "planner/simulator.h"
#include "tests/planner/instances.h"

namespace asteroid::planner {
namespace {

Device dev(const std::string& id, double memory_mb) { return {id, "", 0, memory_mb, std::nullopt}; }

DeviceProfile linear(std::vector<double> fwd, std::vector<double> bwd) {
  DeviceProfile p;
  p.batch = {1};
  for (double f : fwd) p.fwd_ms.push_back({f});
  for (double b : bwd) p.bwd_ms.push_back({b});
  return p;
}

TEST(Wire, PolicyNamesAndNestedCodecSets) {
  for (WirePolicy p : {WirePolicy::exact, WirePolicy::fp16, WirePolicy::int8, WirePolicy::int4, WirePolicy::auto_})
    EXPECT_EQ(parse_wire_policy(wire_policy_name(p)), p);
  EXPECT_THROW(parse_wire_policy("int2"), std::invalid_argument);
  using C = std::vector<Codec>;
  EXPECT_EQ(wire_codecs(WirePolicy::exact), (C{Codec::fp32}));
  EXPECT_EQ(wire_codecs(WirePolicy::fp16), (C{Codec::fp32, Codec::fp16, Codec::bf16}));
  EXPECT_EQ(wire_codecs(WirePolicy::int8), (C{Codec::fp32, Codec::fp16, Codec::bf16, Codec::int8}));
  EXPECT_EQ(wire_codecs(WirePolicy::int4), (C{Codec::fp32, Codec::fp16, Codec::bf16, Codec::int8, Codec::int4}));
  EXPECT_EQ(wire_codecs(WirePolicy::auto_), wire_codecs(WirePolicy::int4));
  // Lossiness: fewer int4, then int8, then bf16, then fp16 choices.
  EXPECT_LT(1000 * codec_lossiness(Codec::fp16), codec_lossiness(Codec::bf16));
  EXPECT_LT(1000 * codec_lossiness(Codec::bf16), codec_lossiness(Codec::int8));
  EXPECT_LT(1000 * codec_lossiness(Codec::int8), codec_lossiness(Codec::int4));
  TrainingConfig defaults;
  EXPECT_EQ(defaults.wire, WirePolicy::exact);
  EXPECT_EQ(defaults.codec_block, wire_codec::kDefaultBlock);
}

// Two stages of one device each (as in cost_model_test's TwoStages): a runs
// [0, 1), b runs [1, 3); a: fwd 1, bwd 2 per sample and layer; b: fwd 2,
// bwd 3. B = 2, M = 2; out_bytes 1000 at 8 Mbit/s.
struct TwoStages {
  Cluster c;
  Profile p;
  Plan plan;
  TwoStages() {
    c.devices = {dev("a", 100), dev("b", 100)};
    c.default_bandwidth_mbps = 8;
    p.layers = {{"l0", 1000, 1000, 100}, {"l1", 1000, 1000, 100}, {"l2", 1000, 1000, 100}};
    p.devices["a"] = linear({1, 1, 1}, {2, 2, 2});
    p.devices["b"] = linear({2, 2, 2}, {3, 3, 3});
    p.devices["a"].codecs[Codec::int8] = {1, 2};    // MB/s encode, decode
    p.devices["b"].codecs[Codec::int8] = {0.5, 4};
    plan.batch = 4;
    plan.microbatches = 2;
    plan.microbatch_size = 2;
    plan.stages = {{0, 1, {{"a", 2}}}, {1, 3, {{"b", 2}}}};
  }
};

TEST(Wire, CompressedTransferChargesEncodedBytesAndBothEndsCodecTime) {
  // int8 of 1000 B = 250 values: 250 data bytes + 4 scales of 4 B
  // (ceil(250 / 64) = 4) = 266 B per sample; 2 samples at 8 Mbit/s:
  // 2 * 266 * 8 / 1e3 / 8 = 0.532 ms each way.
  // Ef: a encodes 2 x 1000 B at 1 MB/s = 2 ms, b decodes them at 4 MB/s = 0.5 ms:
  //   0.532 + 2 + 0.5 = 3.032.
  // Eb: b encodes at 0.5 MB/s = 4 ms, a decodes at 2 MB/s = 1 ms: 5.532.
  // E = [6, 8.564, 20]; M E_c + PE_c = 12, 17.128 + 6, 40 + 14.564: dm = 2.
  // T = max(Tw + Te) = max(0 + 40 + 6 + 8.564, 2 + 40 + 8.564, 5.032 + 40) = 54.564.
  TwoStages x;
  x.plan.stages[0].to_next = Codec::int8;
  Evaluation ev = evaluate(x.plan, x.c, x.p);
  ASSERT_EQ(ev.steps.size(), 3u);
  const StepTime& tr = ev.steps[1];
  EXPECT_EQ(tr.codec, Codec::int8);
  EXPECT_DOUBLE_EQ(tr.wire_bytes, 266);
  EXPECT_NEAR(tr.ef_ms, 3.032, 1e-12);
  EXPECT_NEAR(tr.eb_ms, 5.532, 1e-12);
  EXPECT_NEAR(tr.codec_ef_ms, 2.5, 1e-12);
  EXPECT_NEAR(tr.codec_eb_ms, 5, 1e-12);
  EXPECT_EQ(ev.dominant_step, 2);
  EXPECT_NEAR(ev.round_ms, 54.564, 1e-9);
  EXPECT_TRUE(ev.warnings.empty());
  // The other codecs' bytes: fp16 2 B per value, int4 half a byte + scales.
  EXPECT_DOUBLE_EQ(wire_bytes(Codec::fp16, 1000, 64), 500);
  EXPECT_DOUBLE_EQ(wire_bytes(Codec::bf16, 1000, 64), 500);
  EXPECT_DOUBLE_EQ(wire_bytes(Codec::int4, 1000, 64), 125 + 16);
  EXPECT_DOUBLE_EQ(wire_bytes(Codec::int8, 1000, 8), 250 + 4 * 32);
  EXPECT_DOUBLE_EQ(wire_bytes(Codec::fp32, 1001, 64), 1001);  // fp32 is the bytes themselves
  EXPECT_DOUBLE_EQ(wire_bytes(Codec::fp16, 1001, 64), 2 * 251);
  // fp32 on the same boundary: exactly COST_MODEL.md (2 ms each way, T 50).
  x.plan.stages[0].to_next = Codec::fp32;
  EXPECT_DOUBLE_EQ(evaluate(x.plan, x.c, x.p).round_ms, 50);
}

TEST(Wire, ACodecWithoutSpeedsIsChargedBytesOnlyAndSaysSo) {
  // b has no int8 speeds: Ef = 0.532 + a's encode 2 = 2.532, Eb = 0.532 +
  // a's decode 1 = 1.532; E1 = 4.064. c2 = 40 + 6 + 4.064 = 50.064, dm = 2;
  // T = max(50.064, 2 + 44.064, 4.532 + 40) = 50.064.
  TwoStages x;
  x.p.devices["b"].codecs.clear();
  x.plan.stages[0].to_next = Codec::int8;
  Evaluation ev = evaluate(x.plan, x.c, x.p);
  EXPECT_NEAR(ev.steps[1].ef_ms, 2.532, 1e-12);
  EXPECT_NEAR(ev.steps[1].eb_ms, 1.532, 1e-12);
  EXPECT_NEAR(ev.round_ms, 50.064, 1e-9);
  ASSERT_EQ(ev.warnings.size(), 1u);
  EXPECT_NE(ev.warnings[0].find("int8 not profiled on b"), std::string::npos) << ev.warnings[0];
  EXPECT_NE(explain_plan(x.plan, ev).find("warning: stage 0 -> 1: int8 not profiled on b"), std::string::npos);
  // A lossy codec on the last stage's (absent) boundary is an invalid plan.
  Plan bad = x.plan;
  bad.stages[1].to_next = Codec::fp16;
  EXPECT_THROW(evaluate(bad, x.c, x.p), std::invalid_argument);
}

// x: fwd 1, bwd 1 per sample; y: fwd 2, bwd 2; z: fwd 1, bwd 3 (linear), as
// cost_model_test's GroupOfThree: one stage, y = [4, 1, 1], E = 8, W = 600000 B,
// slowest link in the group 50 Mbit/s, fp32 Ta = 128 ms, T = 136.
struct GroupOfThree {
  Cluster c;
  Profile p;
  Plan plan;
  GroupOfThree() {
    c.devices = {dev("z", 10), dev("y", 10), dev("x", 10)};
    c.default_bandwidth_mbps = 100;
    c.links = {{"x", "y", 50}};
    p.layers = {{"l0", 600000, 10, 10}};
    p.devices["x"] = linear({1}, {1});
    p.devices["y"] = linear({2}, {2});
    p.devices["z"] = linear({1}, {3});
    p.devices["x"].codecs[Codec::fp16] = {100, 200};
    p.devices["y"].codecs[Codec::fp16] = {60, 100};
    p.devices["z"].codecs[Codec::fp16] = {300, 40};
    p.devices["x"].codecs[Codec::bf16] = {1000, 1000};  // z has no bf16: not usable on this group
    p.devices["y"].codecs[Codec::bf16] = {1000, 1000};
    plan.batch = 6;
    plan.microbatches = 1;
    plan.microbatch_size = 6;
    plan.stages = {{0, 1, {{"x", 4}, {"y", 1}, {"z", 1}}}};
  }
};

TEST(Wire, CompressedAllReduceChargesEncodedBytesAndTheSlowestMember) {
  // fp16 of W = 600000 B = 150000 values: 300000 B. Ring: 2 (3-1)/3 *
  // 300000 * 8 / 1e3 / 50 = 64 ms. Each member encodes W (n chunks of W/n)
  // and decodes 2 (n-1)/n W = 800000 B: x 6 + 4 = 10 ms, y 10 + 8 = 18 ms,
  // z 2 + 20 = 22 ms. Ta = 64 + 22 = 86; T = 8 + 86 = 94.
  GroupOfThree g;
  g.plan.stages[0].allreduce = Codec::fp16;
  Evaluation ev = evaluate(g.plan, g.c, g.p);
  EXPECT_EQ(ev.steps[0].codec, Codec::fp16);
  EXPECT_DOUBLE_EQ(ev.steps[0].wire_bytes, 300000);
  EXPECT_NEAR(ev.steps[0].codec_ta_ms, 22, 1e-12);
  EXPECT_NEAR(ev.steps[0].ta_ms, 86, 1e-9);
  EXPECT_NEAR(ev.round_ms, 94, 1e-9);
  // dp (equal split 2, 2, 2: Ef = 4, Eb = 6, E = 10) picks the all-reduce
  // codec with the smallest Ta among the usable ones (bf16 is not: z lacks
  // it): fp32 T = 10 + 128, fp16 T = 10 + 86.
  ProfileTables t(g.c, g.p);
  TrainingConfig cfg = testing::microbatched(1, 6);
  PlanResult exact = plan_dp(t, cfg);
  EXPECT_EQ(exact.plan.stages[0].allreduce, Codec::fp32);
  EXPECT_NEAR(exact.evaluation.round_ms, 138, 1e-9);
  cfg.wire = WirePolicy::fp16;
  PlanResult fp16 = plan_dp(t, cfg);
  EXPECT_EQ(fp16.plan.stages[0].allreduce, Codec::fp16);
  EXPECT_NEAR(fp16.evaluation.round_ms, 96, 1e-9);
  // hpp can only do better (it has Algorithm 1's split, 94, among others).
  PlanResult hpp = plan_hpp(t, cfg);
  EXPECT_LE(hpp.evaluation.round_ms, 94 + 1e-9);
}

// The model's reason the search branches on boundary codecs: Eb of a
// transfer counts against the all-reduces after it (T = V + max_s (Ta_s -
// PB_s)), so a slower transfer can hide more of an all-reduce.
TEST(Wire, ASlowerTransferCodecCanGiveASmallerRound) {
  // a runs [0, 1) alone: 10 ms per sample each way, B = 2: E0 = 40.
  // {b, c} run [1, 2), one sample each: E2 = 2; W = 3e6 B at 100 Mbit/s.
  // Boundary: 50000 B per sample. M = 2.
  //   fp32: 2 * 50000 * 8 / 1e3 / 100 = 8 ms each way, E1 = 16.
  //   int8: 12500 values -> 12500 + 4 * 196 = 13284 B: 2.12544 ms on the
  //         link; a encodes 1e5 B at 1000 MB/s (0.1 ms), b and c decode
  //         5e4 B (0.05): Ef = Eb = 2.27544, E1 = 4.55088.
  //   All-reduce int8: 750000 values -> 750000 + 4 * 11719 = 796876 B:
  //         1 * 796876 * 8 / 1e3 / 100 = 63.75008 ms + encode 3e6 B (3 ms)
  //         + decode 3e6 B (3 ms) = 69.75008.
  // V = max(2 * 40, 2 E1 + 40, 2 * 2 + 40 + E1) = 80 either way.
  // A = Ta2 - (Eb0 + Eb1) = 69.75008 - (20 + 8) = 41.75008 with fp32,
  //     69.75008 - (20 + 2.27544) = 47.47464 with int8.
  Cluster c;
  c.devices = {dev("a", 100), dev("b", 100), dev("c", 100)};
  c.default_bandwidth_mbps = 100;
  Profile p;
  p.layers = {{"l0", 1000, 50000, 10}, {"l1", 3e6, 10, 10}};
  for (const char* id : {"a", "b", "c"}) {
    p.devices[id] = linear({10, 1}, {10, 1});
    p.devices[id].codecs[Codec::int8] = {1000, 1000};
  }
  Plan plan;
  plan.batch = 4;
  plan.microbatches = 2;
  plan.microbatch_size = 2;
  plan.stages = {{0, 1, {{"a", 2}}}, {1, 2, {{"b", 1}, {"c", 1}}}};
  plan.stages[1].allreduce = Codec::int8;
  plan.stages[0].to_next = Codec::fp32;
  Evaluation slow_link = evaluate(plan, c, p);
  plan.stages[0].to_next = Codec::int8;
  Evaluation fast_link = evaluate(plan, c, p);
  EXPECT_NEAR(slow_link.steps[1].ef_ms + slow_link.steps[1].eb_ms, 16, 1e-12);
  EXPECT_NEAR(fast_link.steps[1].ef_ms + fast_link.steps[1].eb_ms, 4.55088, 1e-12);
  EXPECT_NEAR(slow_link.steps[2].ta_ms, 69.75008, 1e-9);
  EXPECT_NEAR(slow_link.round_ms, 80 + 41.75008, 1e-9);
  EXPECT_NEAR(fast_link.round_ms, 80 + 47.47464, 1e-9);
}

// Two suffixes in the same cell of the search: [1, 2) on d1 then [2, 3) on
// d2 (fast: v about 8) and [1, 3) on {d1, d2} (v about 22). The first
// dominates the second in (v, a), but d1 decodes and encodes slowly, and in
// the first it receives both samples of the activation from d0 (int4:
// 200 ms each way, worse than fp32's 160), in the second only one (100 ms):
// d0 + the group is the optimum. A Pareto set of (v, a) alone would lose it;
// the search compares the first stages' codec terms too.
TEST(Wire, SearchKeepsSuffixesWhoseFirstGroupDecodesFaster) {
  Cluster c;
  c.devices = {dev("d0", 4096), dev("d1", 4000), dev("d2", 3900)};
  c.default_bandwidth_mbps = 100;
  Profile p;
  p.layers = {{"l0", 1000, 1e6, 10}, {"l1", 1000, 1, 10}, {"l2", 1000, 1, 10}};
  p.devices["d0"] = linear({1, 1000, 1000}, {1, 1000, 1000});
  p.devices["d1"] = linear({1000, 1, 10}, {1000, 1, 10});
  p.devices["d2"] = linear({1000, 10, 1}, {1000, 10, 1});
  p.devices["d0"].codecs[Codec::int4] = {1000, 1000};
  p.devices["d1"].codecs[Codec::int4] = {10, 10};
  p.devices["d2"].codecs[Codec::int4] = {1000, 1000};
  ProfileTables t(c, p);
  TrainingConfig cfg = testing::microbatched(1, 2);
  cfg.wire = WirePolicy::int4;
  PlanResult r = plan_hpp(t, cfg);
  ASSERT_TRUE(r.feasible) << r.why;
  ASSERT_EQ(r.plan.stages.size(), 2u);
  EXPECT_EQ(r.plan.stages[0].devices.size(), 1u);
  EXPECT_EQ(r.plan.stages[1].devices.size(), 2u);
  EXPECT_EQ(r.plan.stages[0].to_next, Codec::int4);
  testing::EnumeratedWire want = testing::enumerate_best_wire(t, 2, 1, OptimizerKind::sgd, WirePolicy::int4, 64);
  EXPECT_TRUE(same_round(r.evaluation.round_ms, want.round)) << r.evaluation.round_ms << " vs " << want.round;
  // The pipeline of three is slower: its fp32 boundary (int4 would be worse).
  Plan three = r.plan;
  three.stages = {{0, 1, {{"d0", 2}}}, {1, 2, {{"d1", 2}}}, {2, 3, {{"d2", 2}}}};
  choose_codecs(three, t, WirePolicy::int4);
  EXPECT_EQ(three.stages[0].to_next, Codec::fp32);
  EXPECT_GT(evaluate(three, t).round_ms, r.evaluation.round_ms);
}

// Identical devices and a fast codec: many plans tie in T_round; among the
// ties the search prefers fp32 to fp16 to bf16 to int8 to int4.
TEST(Wire, TiesPreferTheMoreExactCodec) {
  Cluster c;
  c.devices = {dev("a", 100), dev("b", 100)};
  c.default_bandwidth_mbps = 1000;
  Profile p;
  p.layers = {{"l0", 10, 100, 10}, {"l1", 10, 100, 10}};
  for (const char* id : {"a", "b"}) {
    p.devices[id] = linear({5, 5}, {5, 5});
    for (Codec x : {Codec::fp16, Codec::bf16, Codec::int8, Codec::int4}) p.devices[id].codecs[x] = {1e6, 1e6};
  }
  ProfileTables t(c, p);
  TrainingConfig cfg = testing::microbatched(4, 2);
  cfg.wire = WirePolicy::auto_;
  PlanResult r = plan_hpp(t, cfg);
  ASSERT_TRUE(r.feasible);
  // Whatever the structure, nothing on the wire matters enough to be lossy
  // unless it lowers T_round beyond the tie tolerance.
  TrainingConfig exact = cfg;
  exact.wire = WirePolicy::exact;
  PlanResult e = plan_hpp(t, exact);
  if (same_round(r.evaluation.round_ms, e.evaluation.round_ms)) {
    EXPECT_EQ(wire_lossiness(r.plan), 0);
  } else {
    EXPECT_LT(r.evaluation.round_ms, e.evaluation.round_ms);
  }
}

TEST(Wire, SimulatorSendsEncodedSlicesAndCountsCodecTime) {
  // The same two stages: each direction's slice of 2 samples carries
  // 2 * 266 B in int8 and holds the link for encode + bytes + decode.
  TwoStages x;
  x.plan.stages[0].to_next = Codec::int8;
  ProfileTables t(x.c, x.p);
  Simulation sim = simulate(x.plan, t);
  ASSERT_FALSE(sim.transfers.empty());
  for (const SimTransfer& tr : sim.transfers) {
    EXPECT_EQ(tr.codec, Codec::int8);
    EXPECT_DOUBLE_EQ(tr.bytes, 532);
    EXPECT_NEAR(tr.codec_ms, tr.forward ? 2.5 : 5, 1e-12);
    EXPECT_NEAR(tr.end_ms - tr.start_ms, (tr.forward ? 2.5 : 5) + 0.532, 1e-9);
  }
  // The all-reduce of a group in its codec: the cost model's Ta.
  GroupOfThree g;
  g.plan.stages[0].allreduce = Codec::fp16;
  ProfileTables tg(g.c, g.p);
  Simulation sg = simulate(g.plan, tg);
  // x's last backward ends last, at 4 + 4 = 8 ms; then Ta = 86 ms.
  for (const SimDevice& d : sg.devices) {
    if (d.id == "x") {
      EXPECT_NEAR(d.allreduce_ms, 86, 1e-9);
    }
    EXPECT_NEAR(d.finish_ms, 8 + 86, 1e-9);
  }
}

TEST(Wire, LightweightReplanKeepsEveryCodecUsable) {
  // Random instances with codec speeds, some devices without some codecs:
  // after losing any one device, every codec of the new plan is usable by
  // the devices on both ends, and the heavy plan is the search's.
  int checked = 0, lossy = 0;
  for (uint32_t seed = 1; seed <= 40; ++seed) {
    testing::InstanceSpec spec;
    spec.devices = 3 + seed % 4;
    spec.layers = 3 + seed % 5;
    spec.mixed_links = seed % 2 == 0;
    testing::Instance in = testing::random_instance(seed, spec);
    testing::add_codec_speeds(in, seed, 0.35);
    ProfileTables t(in.cluster, in.profile);
    TrainingConfig cfg = testing::microbatched(1 + seed % 3, 3 + seed % 5);
    cfg.wire = WirePolicy::auto_;
    PlanResult planned = plan_hpp(t, cfg);
    if (!planned.feasible) continue;
    for (const Stage& st : planned.plan.stages)
      for (const StageDevice& gone : st.devices) {
        ReplanResult light = replan_lightweight(planned.plan, in.cluster, in.profile, cfg, {gone.id});
        SCOPED_TRACE("seed " + std::to_string(seed) + " lost " + gone.id);
        if (light.plan.stages.empty()) continue;
        ++checked;
        const Plan& np = light.plan;
        EXPECT_TRUE(light.evaluation.warnings.empty()) << light.evaluation.warnings.front();
        for (size_t s = 0; s < np.stages.size(); ++s) {
          std::vector<std::string> ids;
          for (const StageDevice& d : np.stages[s].devices) ids.push_back(d.id);
          std::vector<Codec> u = testing::usable_codecs(t, cfg.wire, ids);
          if (ids.size() > 1) {
            EXPECT_NE(std::find(u.begin(), u.end(), np.stages[s].allreduce), u.end());
            lossy += np.stages[s].allreduce != Codec::fp32;
          }
          if (s + 1 == np.stages.size()) {
            EXPECT_EQ(np.stages[s].to_next, Codec::fp32);
            continue;
          }
          for (const StageDevice& d : np.stages[s + 1].devices) ids.push_back(d.id);
          u = testing::usable_codecs(t, cfg.wire, ids);
          EXPECT_NE(std::find(u.begin(), u.end(), np.stages[s].to_next), u.end()) << "boundary " << s;
          lossy += np.stages[s].to_next != Codec::fp32;
        }
        EXPECT_EQ(np.codec_block, planned.plan.codec_block);
        ReplanResult heavy = replan_heavy(planned.plan, in.cluster, in.profile, cfg, {gone.id});
        if (heavy.feasible) {
          EXPECT_TRUE(heavy.evaluation.warnings.empty());
        }
      }
  }
  EXPECT_GE(checked, 60);
  EXPECT_GE(lossy, 10);
}

}  // namespace
}  // namespace asteroid::planner
