// The layer profiler: sane numbers and a profile.json that round-trips.
#include <gtest/gtest.h>

#include <numeric>

#include "compute/model_zoo.h"
#include "compute/optimizer.h"
#include "compute/profiler.h"
#include "compute/stage_model.h"
#include "planner/json_io.h"
#include "test_util.h"

namespace asteroid::compute {
namespace {

ProfileOptions quick() {
  ProfileOptions o;
  o.batches = {1, 4, 32};
  o.repeats = 3;
  return o;
}

TEST(Profiler, NumbersArePositiveAndGrowWithBatchSize) {
  const planner::Profile p = profile_model("fmnist-cnn", "dev0", quick());
  EXPECT_EQ(p.model, "fmnist-cnn");
  ASSERT_EQ(p.layers.size(), 6u);
  ASSERT_EQ(p.devices.count("dev0"), 1u);
  const auto& d = p.devices.at("dev0");
  EXPECT_EQ(d.batch, (std::vector<int>{1, 4, 32}));
  ASSERT_EQ(d.fwd_ms.size(), 6u);
  ASSERT_EQ(d.bwd_ms.size(), 6u);
  double fwd1 = 0, fwd32 = 0, bwd1 = 0, bwd32 = 0;
  for (size_t l = 0; l < 6; ++l) {
    ASSERT_EQ(d.fwd_ms[l].size(), 3u);
    for (size_t k = 0; k < 3; ++k) {
      EXPECT_GT(d.fwd_ms[l][k], 0);
      EXPECT_GT(d.bwd_ms[l][k], 0);
      if (k > 0) {
        EXPECT_GE(d.fwd_ms[l][k], d.fwd_ms[l][k - 1]);
        EXPECT_GE(d.bwd_ms[l][k], d.bwd_ms[l][k - 1]);
      }
    }
    fwd1 += d.fwd_ms[l][0];
    fwd32 += d.fwd_ms[l][2];
    bwd1 += d.bwd_ms[l][0];
    bwd32 += d.bwd_ms[l][2];
  }
  // 32 samples cost clearly more than one (the running max alone cannot do this).
  EXPECT_GT(fwd32, 2 * fwd1);
  EXPECT_GT(bwd32, 2 * bwd1);
  // Every optimizer's update of every layer: none for a layer without
  // weights (pool1 may read a clock tick), more for Adam's two buffers than
  // for plain SGD over the whole model.
  ASSERT_EQ(d.update_ms.size(), 3u);
  double sgd = 0, adam = 0;
  for (const auto& [kind, times] : d.update_ms) {
    ASSERT_EQ(times.size(), 6u) << optimizer_name(kind);
    for (double ms : times) EXPECT_GE(ms, 0);
    EXPECT_GT(times[4], 0) << "fc1, " << optimizer_name(kind);
    EXPECT_LT(times[1], times[4]) << "pool1 against fc1, " << optimizer_name(kind);
  }
  for (double ms : d.update_ms.at(OptimizerKind::sgd)) sgd += ms;
  for (double ms : d.update_ms.at(OptimizerKind::adam)) adam += ms;
  EXPECT_GT(adam, sgd);
}

TEST(Profiler, LayerSizesAreExact) {
  const auto layers = measure_layers("fmnist-cnn", 8);
  ASSERT_EQ(layers.size(), 6u);
  const std::vector<std::string> names{"conv1", "pool1", "conv2", "pool2", "fc1", "fc2"};
  // float32 outputs of one sample: 32x28x28, 32x14x14, 64x14x14, 64x7x7, 128, 10.
  const std::vector<double> out{100352, 25088, 50176, 12544, 512, 40};
  for (size_t l = 0; l < 6; ++l) {
    EXPECT_EQ(layers[l].name, names[l]);
    EXPECT_EQ(layers[l].out_bytes, out[l]) << names[l];
    StageModel one("fmnist-cnn", int(l), int(l) + 1, 0, default_optimizer_config(OptimizerKind::sgd));
    EXPECT_EQ(layers[l].weight_bytes, double(one.parameter_bytes())) << names[l];
    // The output is held, so at least it is counted; a max-pool also keeps its int64 indices.
    EXPECT_GE(layers[l].stash_bytes, out[l]) << names[l];
    EXPECT_LT(layers[l].stash_bytes, 20 * out[l] + 100000) << names[l];
  }
  EXPECT_EQ(layers[1].weight_bytes, 0);
  EXPECT_GE(layers[1].stash_bytes, out[1] + 2 * out[1]);  // output + int64 indices
}

TEST(Profiler, ProfileJsonRoundTrips) {
  const planner::Profile p = profile_model("fmnist-cnn", "nx0", quick());
  testing::TempDir dir;
  const std::string path = dir.file("profile.json");
  planner::save_profile(p, path);
  const planner::Profile q = planner::load_profile(path);
  EXPECT_EQ(q.model, p.model);
  ASSERT_EQ(q.layers.size(), p.layers.size());
  for (size_t l = 0; l < p.layers.size(); ++l) {
    EXPECT_EQ(q.layers[l].name, p.layers[l].name);
    EXPECT_EQ(q.layers[l].weight_bytes, p.layers[l].weight_bytes);
    EXPECT_EQ(q.layers[l].out_bytes, p.layers[l].out_bytes);
    EXPECT_EQ(q.layers[l].stash_bytes, p.layers[l].stash_bytes);
  }
  ASSERT_EQ(q.devices.count("nx0"), 1u);
  EXPECT_EQ(q.devices.at("nx0").batch, p.devices.at("nx0").batch);
  EXPECT_EQ(q.devices.at("nx0").fwd_ms, p.devices.at("nx0").fwd_ms);
  EXPECT_EQ(q.devices.at("nx0").bwd_ms, p.devices.at("nx0").bwd_ms);
  EXPECT_EQ(q.devices.at("nx0").update_ms, p.devices.at("nx0").update_ms);
}

TEST(Profiler, EveryZooModelHasSizes) {
  for (const auto& spec : model_zoo()) {
    if (spec.name == "bert-small") continue;  // covered by the slicing test; its sizes take seconds
    const auto layers = measure_layers(spec.name, 2);
    ASSERT_EQ(int(layers.size()), spec.layer_count()) << spec.name;
    double weights = 0;
    for (const auto& l : layers) {
      EXPECT_GT(l.out_bytes, 0) << spec.name << " " << l.name;
      EXPECT_GT(l.stash_bytes, 0) << spec.name << " " << l.name;
      weights += l.weight_bytes;
    }
    StageModel whole(spec.name, 0, spec.layer_count(), 0, default_optimizer_config(OptimizerKind::sgd));
    EXPECT_EQ(weights, double(whole.parameter_bytes())) << spec.name;
  }
}

TEST(Profiler, BadOptionsAreErrors) {
  ProfileOptions o = quick();
  o.batches = {4, 2};
  EXPECT_THROW(profile_model("fmnist-cnn", "d", o), std::invalid_argument);
  o = quick();
  o.repeats = 0;
  EXPECT_THROW(profile_model("fmnist-cnn", "d", o), std::invalid_argument);
  EXPECT_THROW(profile_model("vgg99", "d", quick()), std::invalid_argument);
  EXPECT_EQ(parse_batch_list("1,2,8"), (std::vector<int>{1, 2, 8}));
  EXPECT_THROW(parse_batch_list("1,x"), std::invalid_argument);
  EXPECT_THROW(parse_batch_list("2,2"), std::invalid_argument);
  EXPECT_THROW(parse_batch_list("0,1"), std::invalid_argument);
  EXPECT_THROW(parse_batch_list(""), std::invalid_argument);
}

}  // namespace
}  // namespace asteroid::compute
