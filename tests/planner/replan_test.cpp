// Re-planning after devices are lost or added: literal cases and
// properties over random instances.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "planner/replan.h"
#include "tests/planner/instances.h"

namespace asteroid::planner {
namespace {

Device dev(const std::string& id, double memory_mb) { return {id, "", 0, memory_mb, std::nullopt}; }

// Four devices, six layers, linear profiles; a pipeline of three stages:
// [0, 2) on a, [2, 4) on b + c, [4, 6) on d.
struct Pipeline {
  Cluster c;
  Profile p;
  Plan plan;
  Pipeline() {
    for (const char* id : {"a", "b", "c", "d", "e"}) c.devices.push_back(dev(id, 64));
    c.default_bandwidth_mbps = 100;
    for (int l = 0; l < 6; ++l) p.layers.push_back({"l" + std::to_string(l), 1000.0 * (l + 1), 5000, 2000});
    for (const Device& d : c.devices) {
      DeviceProfile dp;
      dp.batch = {1};
      dp.fwd_ms.assign(6, {1.0});
      dp.bwd_ms.assign(6, {2.0});
      p.devices[d.id] = dp;
    }
    plan.batch = 8;
    plan.microbatches = 2;
    plan.microbatch_size = 4;
    plan.stages = {{0, 2, {{"a", 4}}}, {2, 4, {{"b", 2}, {"c", 2}}}, {4, 6, {{"d", 4}}}};
    plan.idle_devices = {"e"};
  }
  // The lightweight re-plan without `lost` (and with `added`), layers kept
  // where they are (no shift), under `config`.
  ReplanResult without(const std::string& lost, std::vector<std::string> added = {},
                       const TrainingConfig& config = {}) const {
    ReplanOptions no_shift;
    no_shift.max_shift = 0;
    return replan_lightweight(plan, c, p, config, {lost}, std::move(added), no_shift);
  }
};

std::map<std::string, std::pair<int, int>> ranges(const Plan& plan) {
  std::map<std::string, std::pair<int, int>> out;
  for (const Stage& s : plan.stages)
    for (const StageDevice& d : s.devices) out[d.id] = {s.begin, s.end};
  return out;
}

TEST(Replan, GroupMemberLostSurvivorTakesAllSamples) {
  Pipeline x;
  ReplanResult r = x.without("c");
  ASSERT_TRUE(r.feasible) << r.why;
  ASSERT_EQ(r.plan.stages.size(), 3u);
  ASSERT_EQ(r.plan.stages[1].devices.size(), 1u);
  EXPECT_EQ(r.plan.stages[1].devices[0].id, "b");
  EXPECT_EQ(r.plan.stages[1].devices[0].samples, 4);
  EXPECT_TRUE(r.moves.empty());  // nobody needs new layers
  EXPECT_EQ(r.layers_moved, 0);
}

TEST(Replan, LostMiddleStageMovesToTheReplicaHolder) {
  // Stage 2 = [4, 6) on d alone: its replica is on the first device of the
  // next stage; d is the last stage, so its replica is on a (stage 0).
  // Lose d: layers [4, 6) join the stage before (b, c), and both fetch them
  // from a: W = 5000 + 6000 = 11000 B each, SGD: 11000 * (1 + 0).
  Pipeline x;
  ReplanResult r = x.without("d");
  ASSERT_TRUE(r.feasible) << r.why;
  ASSERT_EQ(r.plan.stages.size(), 2u);
  EXPECT_EQ(r.plan.stages[1].begin, 2);
  EXPECT_EQ(r.plan.stages[1].end, 6);
  ASSERT_EQ(r.moves.size(), 2u);
  for (const LayerMove& m : r.moves) {
    EXPECT_EQ(m.begin, 4);
    EXPECT_EQ(m.end, 6);
    EXPECT_EQ(m.source, "a");
    EXPECT_DOUBLE_EQ(m.bytes, 11000);
  }
  EXPECT_EQ(r.layers_moved, 4);
  EXPECT_DOUBLE_EQ(r.bytes_moved, 22000);
  // Adam moves the optimizer state too: 11000 * 3 per device.
  TrainingConfig adam;
  adam.optimizer = OptimizerKind::adam;
  EXPECT_DOUBLE_EQ(x.without("d", {}, adam).bytes_moved, 66000);
}

TEST(Replan, LostFirstStageJoinsTheNextWhoseFirstDeviceHoldsTheReplica) {
  // Stage 0 = [0, 2) on a; its replica is on b (first of the next group):
  // b already has the bytes (a local move), c fetches them from b.
  Pipeline x;
  ReplanResult r = x.without("a");
  ASSERT_TRUE(r.feasible) << r.why;
  ASSERT_EQ(r.plan.stages.size(), 2u);
  EXPECT_EQ(r.plan.stages[0].begin, 0);
  EXPECT_EQ(r.plan.stages[0].end, 4);
  ASSERT_EQ(r.moves.size(), 2u);
  EXPECT_EQ(r.moves[0].device, "b");
  EXPECT_TRUE(r.moves[0].local);
  EXPECT_EQ(r.moves[1].device, "c");
  EXPECT_EQ(r.moves[1].source, "b");
  EXPECT_FALSE(r.moves[1].local);
  EXPECT_EQ(r.layers_moved, 2);
  EXPECT_DOUBLE_EQ(r.bytes_moved, 3000);  // layers 0, 1: 1000 + 2000
}

TEST(Replan, AMemberStepsOutToRunALostStageWhenThatIsFaster) {
  // Layers of 4 MB: merged into the group (b, c), layers [2, 6) would be
  // all-reduced every round (2 * 16 MB over 100 Mbit/s, over a second);
  // b or c running [4, 6) alone needs no all-reduce at all. Its layers come
  // from d's replica on a (the last stage's replica holder).
  Pipeline x;
  for (auto& layer : x.p.layers) layer.weight_bytes = 4e6;
  ReplanResult r = x.without("d");
  ASSERT_TRUE(r.feasible) << r.why;
  ASSERT_EQ(r.plan.stages.size(), 3u);
  auto rg = ranges(r.plan);
  EXPECT_EQ(rg["a"], std::make_pair(0, 2));
  EXPECT_EQ(r.plan.stages[1].devices.size(), 1u);
  EXPECT_EQ(r.plan.stages[2].devices.size(), 1u);
  EXPECT_EQ(r.plan.stages[2].begin, 4);
  const std::string stepped = r.plan.stages[2].devices[0].id;
  EXPECT_TRUE(stepped == "b" || stepped == "c") << stepped;
  ASSERT_EQ(r.moves.size(), 1u);
  EXPECT_EQ(r.moves[0].device, stepped);
  EXPECT_EQ(r.moves[0].source, "a");
  EXPECT_DOUBLE_EQ(r.bytes_moved, 8e6);
  // Without step-out the group takes the layers over, and is slower.
  ReplanOptions no_step_out;
  no_step_out.max_shift = 0;
  no_step_out.step_out = false;
  ReplanResult merged = replan_lightweight(x.plan, x.c, x.p, {}, {"d"}, {}, no_step_out);
  ASSERT_TRUE(merged.feasible) << merged.why;
  EXPECT_EQ(merged.plan.stages.size(), 2u);
  EXPECT_GT(merged.evaluation.round_ms, r.evaluation.round_ms);
}

TEST(Replan, AddedDeviceJoinsWhereItHelps) {
  // Lose c; e (idle) comes back. Without e, the three stages a, b, d each
  // take E = 2 layers * 4 samples * (1 + 2) ms = 24; transfers 4 * 5000 B *
  // 8 / 1e3 / 100 = 1.6 ms each way (E = 3.2). Where e helps most:
  //   in stage 2: E = [24, 3.2, 24, 3.2, 12]; M E_c + sum before:
  //     48, 30.4, 75.2, 57.6, 24 + 54.4 = 78.4 -> T = 78.4 (+ max(Ta - PB) = 0);
  //   in stage 1: E = [24, 3.2, 12, 3.2, 24]: last 48 + 42.4 = 90.4;
  //   in stage 0: E = [12, 3.2, 24, 3.2, 24]: last 48 + 42.4 = 90.4.
  // So e joins the last stage [4, 6).
  Pipeline x;
  ReplanResult r = x.without("c", {"e"});
  ASSERT_TRUE(r.feasible) << r.why;
  auto rg = ranges(r.plan);
  ASSERT_TRUE(rg.count("e"));
  EXPECT_EQ(rg["e"], std::make_pair(4, 6));
  EXPECT_NEAR(r.evaluation.round_ms, 78.4, 1e-9);
  EXPECT_TRUE(r.plan.idle_devices.empty());
}

TEST(Replan, RejectsUnknownIds) {
  Pipeline x;
  EXPECT_THROW(replan_lightweight(x.plan, x.c, x.p, {}, {"zz"}), std::invalid_argument);
  EXPECT_THROW(replan_lightweight(x.plan, x.c, x.p, {}, {}, {"zz"}), std::invalid_argument);
  EXPECT_THROW(replan_heavy(x.plan, x.c, x.p, {}, {}, {"a"}), std::invalid_argument);
}

TEST(Replan, EverythingLost) {
  Pipeline x;
  ReplanResult r = replan_lightweight(x.plan, x.c, x.p, {}, {"a", "b", "c", "d", "e"});
  EXPECT_FALSE(r.feasible);
  EXPECT_FALSE(r.why.empty());
}

// Over random instances: plan with hpp, lose one device (each in turn),
// re-plan both ways.
TEST(Replan, LightweightIsFeasibleWheneverHeavyIsAndKeepsSurvivorsLayers) {
  int cases = 0, heavy_feasible = 0, whole_stage_lost = 0, fell_back = 0, stepped_out = 0;
  for (uint32_t seed = 1; seed <= 80; ++seed) {
    testing::InstanceSpec spec;
    spec.devices = 2 + seed % 5;
    spec.layers = 3 + seed % 6;
    spec.tight_memory = seed % 3 == 0;
    spec.mixed_links = seed % 2 == 0;
    testing::Instance in = testing::random_instance(seed, spec);
    ProfileTables t(in.cluster, in.profile);
    const TrainingConfig cfg = testing::microbatched(1 + seed % 4, 2 + seed % 6);
    PlanResult planned = plan_hpp(t, cfg);
    if (!planned.feasible) continue;
    for (const Stage& st : planned.plan.stages)
      for (const StageDevice& gone : st.devices) {
        const std::pair<int, int> gone_range{st.begin, st.end};
        for (int variant = 0; variant < 4; ++variant) {
          const int shift = variant % 2 == 0 ? 0 : 2;
          const bool step_out = variant >= 2;
          ReplanOptions opt;
          opt.max_shift = shift;
          opt.step_out = step_out;
          opt.fall_back_to_heavy = true;
          ReplanResult light = replan_lightweight(planned.plan, in.cluster, in.profile, cfg, {gone.id}, {}, opt);
          ReplanResult heavy = replan_heavy(planned.plan, in.cluster, in.profile, cfg, {gone.id});
          SCOPED_TRACE("seed " + std::to_string(seed) + " lost " + gone.id + " shift " + std::to_string(shift) +
                       (step_out ? " step-out" : ""));
          ++cases;
          if (heavy.feasible) {
            ++heavy_feasible;
            EXPECT_TRUE(light.feasible) << light.why;
          }
          if (st.devices.size() == 1) ++whole_stage_lost;
          if (light.fell_back_to_heavy) {
            ++fell_back;
            continue;
          }
          if (!light.feasible) continue;
          // Survivors keep their layers (plus what they take over); with
          // shifts, each end moves by at most max_shift. With step-out, a
          // member of a group may instead run the lost stage's layers alone,
          // and only where that beats keeping every survivor in place.
          auto before = ranges(planned.plan), after = ranges(light.plan);
          bool someone_stepped_out = false;
          for (const auto& [id, range] : before) {
            if (id == gone.id) continue;
            ASSERT_TRUE(after.count(id)) << id << " lost its stage";
            const bool kept = after[id].first <= range.first + shift && after[id].second >= range.second - shift;
            if (kept) continue;
            const bool runs_lost_layers = after[id].first < gone_range.second && after[id].second > gone_range.first;
            EXPECT_TRUE(step_out && st.devices.size() == 1 && runs_lost_layers) << id << " moved";
            someone_stepped_out = true;
          }
          if (someone_stepped_out) {
            ReplanOptions in_place = opt;
            in_place.step_out = false;
            ReplanResult kept = replan_lightweight(planned.plan, in.cluster, in.profile, cfg, {gone.id}, {}, in_place);
            if (kept.feasible && !kept.fell_back_to_heavy) {
              EXPECT_LT(light.evaluation.round_ms, kept.evaluation.round_ms);
            }
            ++stepped_out;
          }
          // The moves account for every layer a device did not hold.
          double bytes = 0;
          for (const LayerMove& m : light.moves)
            if (!m.local) bytes += m.bytes;
          EXPECT_DOUBLE_EQ(bytes, light.bytes_moved);
          EXPECT_DOUBLE_EQ(light.plan.predicted_round_ms, light.evaluation.round_ms);
        }
      }
  }
  EXPECT_GE(cases, 150);
  EXPECT_GE(heavy_feasible, 100);
  EXPECT_GE(whole_stage_lost, 20);
  EXPECT_GE(stepped_out, 1);
  std::printf("%d re-plans, heavy feasible in %d, %d whole single-device stages lost, %d fell back to heavy, "
              "%d with a member stepping out\n",
              cases, heavy_feasible, whole_stage_lost, fell_back, stepped_out);
}

}  // namespace
}  // namespace asteroid::planner
