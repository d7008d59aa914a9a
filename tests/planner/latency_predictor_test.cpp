// The learned latency predictor (planner/latency_predictor.h) on profiles
// made from its own model, where it must be exact, and its failures.
#include <gtest/gtest.h>

#include <cmath>

#include "planner/latency_predictor.h"

namespace asteroid::planner {
namespace {

const std::vector<int> kBatches = {1, 2, 4, 8, 16, 32, 64};

// Layers with per-call and per-sample costs (fwd; bwd twice as much per
// sample), devices with speeds; each device measured at `measured` sizes.
Profile synthetic(const std::map<std::string, std::vector<int>>& measured) {
  const std::vector<std::pair<double, double>> layers = {{0.05, 0.01}, {0.2, 0.3}, {0.01, 0.002}, {1.0, 0.0}};
  const std::map<std::string, double> speed = {{"a", 1.0}, {"b", 2.5}, {"c", 0.5}};
  Profile p;
  p.model = "synthetic";
  for (size_t l = 0; l < layers.size(); ++l) p.layers.push_back({"l" + std::to_string(l), 100, 10, 10});
  for (const auto& [id, batches] : measured) {
    DeviceProfile d;
    d.batch = batches;
    for (const auto& [a, c] : layers) {
      std::vector<double> fwd, bwd;
      for (int b : batches) {
        fwd.push_back(speed.at(id) * (a + c * b));
        bwd.push_back(speed.at(id) * (a + 2 * c * b));
      }
      d.fwd_ms.push_back(fwd);
      d.bwd_ms.push_back(bwd);
    }
    p.devices[id] = d;
  }
  return p;
}

TEST(LatencyPredictor, ThreeBatchSizesPredictTheOthersOfItsOwnModel) {
  const Profile full = synthetic({{"a", kBatches}, {"b", kBatches}, {"c", kBatches}});
  const auto points = spread_points(kBatches, 3);
  const LatencyPredictor predictor(synthetic({{"a", points}, {"b", points}, {"c", points}}));
  EXPECT_NEAR(predictor.scale("a"), 1.0, 1e-9);
  EXPECT_NEAR(predictor.scale("b"), 2.5, 1e-6);
  EXPECT_NEAR(predictor.scale("c"), 0.5, 1e-6);
  for (const auto& [id, device] : full.devices) {
    for (size_t l = 0; l < full.layers.size(); ++l) {
      for (size_t k = 0; k < kBatches.size(); ++k) {
        EXPECT_NEAR(predictor.fwd_ms(id, static_cast<int>(l), kBatches[k]) / device.fwd_ms[l][k], 1.0, 1e-6)
            << id << " layer " << l << " batch " << kBatches[k];
        EXPECT_NEAR(predictor.bwd_ms(id, static_cast<int>(l), kBatches[k]) / device.bwd_ms[l][k], 1.0, 1e-6);
      }
    }
  }
}

TEST(LatencyPredictor, ADeviceWithOneBatchSizeGetsItsScaleFromTheOthers) {
  const LatencyPredictor predictor(synthetic({{"a", kBatches}, {"b", {64}}, {"c", {1, 64}}}));
  EXPECT_NEAR(predictor.scale("b"), 2.5, 1e-6);
  EXPECT_NEAR(predictor.fwd_ms("b", 1, 1), 2.5 * (0.2 + 0.3), 1e-6) << "batch 1, never measured on b";
}

TEST(LatencyPredictor, CompletedKeepsWhatWasMeasuredAndFillsTheRest) {
  Profile measured = synthetic({{"a", {1, 8, 64}}, {"b", {1, 8, 64}}});
  measured.devices["a"].fwd_ms[0][1] = 123;  // a measurement the model would not predict
  const Profile out = LatencyPredictor(measured).completed(measured, kBatches);
  ASSERT_EQ(out.devices.at("a").batch, kBatches);
  EXPECT_EQ(out.devices.at("a").fwd_ms[0][3], 123) << "batch 8 as measured";
  EXPECT_NEAR(out.devices.at("b").bwd_ms[1][6], 2.5 * (0.2 + 2 * 0.3 * 64), 1e-3);
  EXPECT_GT(out.devices.at("b").fwd_ms[3][0], 0);
  // Between a's own points: batch 4 on the line from 1 to 8 (whatever the model says).
  const auto& a0 = measured.devices.at("a").fwd_ms[0];
  EXPECT_NEAR(out.devices.at("a").fwd_ms[0][2], a0[0] + (4.0 - 1) / 7 * (a0[1] - a0[0]), 1e-9);
  // A device with one point gets the model's prediction.
  Profile joining = synthetic({{"a", {1, 8, 64}}, {"b", {64}}});
  const Profile filled = LatencyPredictor(joining).completed(joining, kBatches);
  EXPECT_NEAR(filled.devices.at("b").fwd_ms[1][0], 2.5 * (0.2 + 0.3), 1e-6);
}

TEST(LatencyPredictor, ALayerWithoutTwoBatchSizesAnywhereIsAnError) {
  EXPECT_THROW(LatencyPredictor(synthetic({{"a", {64}}, {"b", {64}}})), std::invalid_argument);
  Profile p = synthetic({{"a", {1, 64}}});
  p.devices["a"].fwd_ms[2] = {0, 0};
  p.devices["a"].bwd_ms[2] = {0, 0};
  try {
    LatencyPredictor predictor(p);
    ADD_FAILURE() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("layer l2"), std::string::npos) << e.what();
  }
}

TEST(SpreadPoints, TheEndsAndEvenlyOnALogScale) {
  EXPECT_EQ(spread_points(kBatches, 3), (std::vector<int>{1, 8, 64}));
  EXPECT_EQ(spread_points(kBatches, 2), (std::vector<int>{1, 64}));
  EXPECT_EQ(spread_points(kBatches, 1), (std::vector<int>{64}));
  EXPECT_EQ(spread_points(kBatches, 4), (std::vector<int>{1, 4, 16, 64}));
  EXPECT_EQ(spread_points(kBatches, 7), kBatches);
  EXPECT_EQ(spread_points(kBatches, 0), kBatches);
}

}  // namespace
}  // namespace asteroid::planner
