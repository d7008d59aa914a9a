// The online latency model and the switch rule (supervision/adaptation.h),
// on recorded timings: no actors.
#include <gtest/gtest.h>

#include <random>

#include "supervision/adaptation.h"

namespace asteroid::supervision {
namespace {

// Rounds of measured times: every device's prediction times its speed
// factor, with up to +-`noise` relative jitter (seeded).
struct Recording {
  std::map<std::string, double> predicted;
  std::mt19937_64 rng{42};
  std::map<std::string, double> round(const std::map<std::string, double>& factor, double noise) {
    std::map<std::string, double> measured;
    for (const auto& [device, ms] : predicted) {
      const double jitter = 1 + noise * (2 * (static_cast<double>(rng() % 10001) / 10000) - 1);
      auto f = factor.find(device);
      measured[device] = ms * (f == factor.end() ? 1.0 : f->second) * jitter;
    }
    return measured;
  }
};

TEST(SpeedModel, ConvergesOnADeviceSlowedThreefoldAndSaysSoAfterItsRounds) {
  SpeedModel model({0.3, 5, 5, 0});
  Recording rec{{{"nx", 100}, {"nano", 400}}};
  model.expect(rec.predicted);
  std::vector<uint64_t> verdict_rounds;
  for (uint64_t r = 0; r < 40; ++r) {
    const auto drifted = model.observe(r, rec.round(r >= 20 ? std::map<std::string, double>{{"nx", 3.0}}
                                                            : std::map<std::string, double>{},
                                                    0.1));
    for (const auto& d : drifted) {
      EXPECT_EQ(d, "nx");
      verdict_rounds.push_back(r);
    }
  }
  // The median of 5 turns at the third slow round; five departing rounds later, the verdict.
  ASSERT_EQ(verdict_rounds.size(), 1u);
  EXPECT_GE(verdict_rounds[0], 24u);
  EXPECT_LE(verdict_rounds[0], 27u);
  EXPECT_NEAR(model.estimate("nx"), 3.0, 0.3);
  EXPECT_NEAR(model.estimate("nano"), 1.0, 0.1);
}

TEST(SpeedModel, JitterWithinTheThresholdIsNoDrift) {
  SpeedModel model({0.3, 5, 5, 0});
  Recording rec{{{"a", 50}, {"b", 80}, {"c", 120}}};
  model.expect(rec.predicted);
  for (uint64_t r = 0; r < 200; ++r) EXPECT_TRUE(model.observe(r, rec.round({}, 0.25)).empty()) << "round " << r;
  // One round far off is no verdict either: the median ignores it.
  auto spike = rec.round({}, 0);
  spike["b"] *= 10;
  EXPECT_TRUE(model.observe(200, spike).empty());
  EXPECT_NEAR(model.estimate("b"), 1.0, 0.26);
}

TEST(SpeedModel, AfterAssumingItsEstimatesOnlyAFurtherChangeCountsAndRestoringIsOne) {
  SpeedModel model({0.3, 3, 3, 0});
  Recording rec{{{"a", 100}, {"b", 100}}};
  model.expect(rec.predicted);
  int verdicts = 0;
  for (uint64_t r = 0; r < 10; ++r) verdicts += model.observe(r, rec.round({{"b", 4.0}}, 0)).size();
  EXPECT_EQ(verdicts, 1);
  model.assume_estimates();
  EXPECT_NEAR(model.assumed().at("b"), 4.0, 1e-9);
  // The plan in force now predicts b's time under scale 4.
  Recording slowed{{{"a", 100}, {"b", 400}}};
  model.expect(slowed.predicted);
  for (uint64_t r = 10; r < 30; ++r) EXPECT_TRUE(model.observe(r, slowed.round({}, 0.05)).empty()) << "round " << r;
  // b gets its speed back: a drift the other way.
  std::vector<std::string> back;
  for (uint64_t r = 30; r < 40 && back.empty(); ++r) back = model.observe(r, slowed.round({{"b", 0.25}}, 0));
  EXPECT_EQ(back, std::vector<std::string>{"b"});
  EXPECT_NEAR(model.estimate("b"), 1.0, 1e-9);
  EXPECT_NEAR(model.estimate("a"), 1.0, 1e-9);
}

TEST(SpeedModel, TheFirstRoundAfterADeploymentIsNotJudged) {
  SpeedModel model({0.3, 1, 1, 0});
  model.expect({{"a", 100}});
  EXPECT_TRUE(model.observe(0, {{"a", 1000}}).empty()) << "start-up";
  EXPECT_EQ(model.observe(1, {{"a", 1000}}), std::vector<std::string>{"a"});
}

TEST(SpeedModel, TheJobsFirstRoundsCalibrateTheProfilesBiasWithoutAVerdict) {
  SpeedModel model({0.3, 3, 3, 10});
  Recording rec{{{"a", 100}, {"b", 100}}};
  model.expect(rec.predicted);
  // The runtime computes 1.4x (a) and 1.2x (b) the profile's times from the start.
  for (uint64_t r = 0; r < 11; ++r) EXPECT_TRUE(model.observe(r, rec.round({{"a", 1.4}, {"b", 1.2}}, 0.02)).empty());
  EXPECT_FALSE(model.calibrating());
  EXPECT_NEAR(model.assumed().at("a"), 1.4, 0.05);
  EXPECT_NEAR(model.assumed().at("b"), 1.2, 0.05);
  // The same speeds go on: nothing; a slows 3x more: a verdict.
  for (uint64_t r = 11; r < 30; ++r) EXPECT_TRUE(model.observe(r, rec.round({{"a", 1.4}, {"b", 1.2}}, 0.02)).empty());
  std::vector<std::string> drifted;
  for (uint64_t r = 30; r < 40 && drifted.empty(); ++r) drifted = model.observe(r, rec.round({{"a", 4.2}, {"b", 1.2}}, 0));
  EXPECT_EQ(drifted, std::vector<std::string>{"a"});
  EXPECT_NEAR(model.estimate("a"), 4.2, 0.1);
}

TEST(SpeedModel, AnIdleDeviceProbedAtItsOldSpeedAgainDriftsBackWithTheRuntimesBias) {
  SpeedModel model({0.3, 3, 3, 4});
  Recording rec{{{"a", 100}, {"b", 100}}};  // c is idle
  model.expect(rec.predicted);
  for (uint64_t r = 0; r < 5; ++r) model.observe(r, rec.round({{"a", 1.2}, {"b", 1.2}}, 0));
  ASSERT_FALSE(model.calibrating());
  // c was left idle when it was 4x slow (the scale a switch assumed).
  model.observe_probe("c", 4.0);
  model.assume_estimates();
  EXPECT_NEAR(model.assumed().at("c"), 4.8, 1e-9) << "the probe's 4x times the runtime's 1.2 bias";
  EXPECT_FALSE(model.observe_probe("c", 4.2)) << "as slow as assumed";
  EXPECT_TRUE(model.observe_probe("c", 1.0)) << "its speed back";
  EXPECT_NEAR(model.estimate("c"), 1.2, 1e-9);
  EXPECT_FALSE(model.observe_probe("a", 5.0)) << "a device in the plan is measured by its rounds";
}

TEST(SpeedModel, ScaledProfileMultipliesTimesAndDividesCodecSpeeds) {
  planner::Profile base;
  planner::DeviceProfile d;
  d.batch = {1, 8};
  d.fwd_ms = {{1, 4}, {2, 8}};
  d.bwd_ms = {{2, 8}, {4, 16}};
  d.codecs[planner::Codec::int8] = {100, 200};
  d.update_ms[OptimizerKind::sgd] = {0.5, 1.0};
  base.devices["a"] = d;
  base.devices["b"] = d;
  const auto out = SpeedModel::scaled(base, {{"a", 2.0}});
  EXPECT_EQ(out.devices.at("a").fwd_ms[1][1], 16);
  EXPECT_EQ(out.devices.at("a").bwd_ms[0][0], 4);
  EXPECT_EQ(out.devices.at("a").update_ms.at(OptimizerKind::sgd)[1], 2.0);
  EXPECT_EQ(out.devices.at("a").codecs.at(planner::Codec::int8).encode_mb_s, 50);
  EXPECT_EQ(out.devices.at("b").fwd_ms, d.fwd_ms) << "no scale: unchanged";
}

TEST(SwitchPays, OnlyWhenTheGainOverTheHorizonExceedsTheMove) {
  EXPECT_TRUE(switch_pays(100, 80, 1000, 200));    // 4000 ms saved against 1000
  EXPECT_FALSE(switch_pays(100, 98, 1000, 200));   // 400 ms saved against 1000
  EXPECT_FALSE(switch_pays(100, 120, 0, 200));     // slower
  EXPECT_FALSE(switch_pays(100, 95, 1000, 200));   // exactly even: no
}

TEST(SwitchCosts, ADeviceBroughtInCostsItsStartOnTopOfTheInPlaceOverhead) {
  SwitchCosts costs(1000, 5000);  // nothing measured: 1 s in place, 5 s to start a device
  EXPECT_EQ(costs.estimate_ms({}), 1000);
  EXPECT_EQ(costs.estimate_ms({"nano-0"}), 6000);
  costs.measured({}, 200);  // a switch that kept every member took 0.2 s
  EXPECT_EQ(costs.estimate_ms({}), 200);
  EXPECT_EQ(costs.estimate_ms({"nano-0", "nano-1"}), 5200);
  costs.measured({"nano-0", "nano-1"}, 7400);  // their start: 7.2 s each
  EXPECT_EQ(costs.estimate_ms({"nano-0"}), 7400);
  EXPECT_EQ(costs.estimate_ms({"nano-0", "nx-0"}), 7400) << "the devices start in parallel: the slowest counts";
  costs.measured({"nano-0"}, 900);  // again, its data cached
  EXPECT_EQ(costs.estimate_ms({"nano-0"}), 900);
  EXPECT_EQ(costs.estimate_ms({"nano-1"}), 7400);
  costs.measured({}, -50);  // a clock that says less than the transfers: nothing
  EXPECT_EQ(costs.estimate_ms({}), 0);
}

TEST(SpeedSpells, TheConfiguredHorizonUntilADevicesSpeedChangesFasterThanIt) {
  SpeedSpells spells(6);   // a drift is seen 6 rounds after the change; three spells kept
  spells.started(0);
  const std::vector<std::string> nx{"nx-0"};
  EXPECT_EQ(spells.horizon(200, 50, nx), 200u);
  spells.drifted(3, nx);   // within the detection of the start: settling
  spells.drifted(60, nx);  // its speed held 60 rounds
  spells.drifted(62, nx);  // two rounds later: the same change, settling
  spells.drifted(75, nx);  // 15
  EXPECT_EQ(spells.horizon(200, 80, nx), 200u) << "two spells are not yet a pattern";
  spells.drifted(90, nx);  // 15
  EXPECT_EQ(spells.spells("nx-0"), (std::deque<uint64_t>{60, 15, 15}));
  EXPECT_EQ(spells.horizon(200, 95, nx), 9u) << "the median spell less the 6 rounds a drift takes to be seen";
  EXPECT_EQ(spells.horizon(5, 95, nx), 5u) << "never beyond the configured horizon";
  // Its speed has held 40 rounds now: the swings may have stopped.
  EXPECT_EQ(spells.horizon(200, 130, nx), 34u);
  spells.drifted(200, nx);  // 110: the oldest spell (60) goes
  EXPECT_EQ(spells.spells("nx-0"), (std::deque<uint64_t>{15, 15, 110}));
  EXPECT_EQ(spells.horizon(200, 205, nx), 9u);
  spells.drifted(400, nx);  // 200
  spells.drifted(700, nx);  // 300: calm again
  EXPECT_EQ(spells.horizon(200, 710, nx), 200u);
  SpeedSpells slow_to_see(20);
  for (uint64_t r : {0, 25, 50, 75}) slow_to_see.drifted(r, nx);
  EXPECT_EQ(slow_to_see.horizon(200, 80, nx), 5u);
  // 94 and 125 come less than 20 rounds after their spell's start (75, 110):
  // the same changes settling.
  for (uint64_t r : {94, 110, 125}) slow_to_see.drifted(r, nx);
  EXPECT_EQ(slow_to_see.spells("nx-0"), (std::deque<uint64_t>{25, 25, 35}));
  SpeedSpells faster_than_seen(20);
  for (uint64_t r : {0, 20, 40, 60}) faster_than_seen.drifted(r, nx);
  EXPECT_EQ(faster_than_seen.horizon(200, 61, nx), 0u) << "speeds that change as soon as a drift is seen: nothing to gain";
}

TEST(SpeedSpells, OneDevicesChangeThatMovesOthersIsNoSwing) {
  // nx-0 slows at 22 (the job brings the Nanos in, whose speeds the profile
  // mispredicts: they drift at 28), another device is noisy, and nx-0 gets its
  // speed back at 46: the switch back is judged over the full horizon.
  SpeedSpells spells(4);
  spells.started(0);
  spells.drifted(22, {"nx-0"});
  spells.drifted(28, {"nano-0", "nano-1"});
  for (uint64_t r : {33, 38, 43}) spells.drifted(r, {"tx2-1"});
  EXPECT_EQ(spells.spells("tx2-1"), (std::deque<uint64_t>{33, 5, 5}));
  EXPECT_EQ(spells.horizon(200, 46, {"nx-0"}), 200u);
  EXPECT_EQ(spells.horizon(200, 46, {"tx2-1"}), 1u);
  EXPECT_EQ(spells.horizon(200, 46, {"nx-0", "tx2-1"}), 1u) << "the shortest of the drifting devices'";
  EXPECT_TRUE(spells.spells("nano-2").empty());
}

}  // namespace
}  // namespace asteroid::supervision
