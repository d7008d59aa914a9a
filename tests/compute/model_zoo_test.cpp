// The zoo table, deterministic initialisation and slicing: a chain cut into
// stages computes exactly what the whole chain computes.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "compute/dataset.h"
#include "compute/model_zoo.h"
#include "compute/stage_model.h"

namespace asteroid::compute {
namespace {

OptimizerConfig sgd() { return default_optimizer_config(OptimizerKind::sgd); }

TEST(ModelZoo, KnowsEveryModelOfTheIssue) {
  for (const char* name :
       {"fmnist-cnn", "fmnist-resnet", "mobilenetv2", "resnet18", "efficientnet-b0", "bert-small"}) {
    ASSERT_TRUE(is_known_model(name)) << name;
    EXPECT_GT(layer_count(name), 3) << name;
  }
}

TEST(ModelZoo, UnknownNameListsTheKnownOnes) {
  try {
    find_model("vgg99");
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("vgg99"), std::string::npos) << what;
    for (const auto& n : model_names()) EXPECT_NE(what.find(n), std::string::npos) << what;
  }
  EXPECT_THROW(StageModel("vgg99", 0, 1, 1, sgd()), std::invalid_argument);
  EXPECT_THROW(open_dataset("vgg99", Split::train), std::invalid_argument);
}

TEST(ModelZoo, BadRangesAreRejected) {
  const int n = layer_count("fmnist-cnn");
  EXPECT_THROW(StageModel("fmnist-cnn", 2, 2, 1, sgd()), std::invalid_argument);
  EXPECT_THROW(StageModel("fmnist-cnn", -1, 2, 1, sgd()), std::invalid_argument);
  EXPECT_THROW(StageModel("fmnist-cnn", 0, n + 1, 1, sgd()), std::invalid_argument);
}

TEST(ModelZoo, LayerNamesOfTheModulesMatchTheTable) {
  for (const auto& spec : model_zoo()) {
    StageModel whole(spec.name, 0, spec.layer_count(), 3, sgd());
    EXPECT_EQ(whole.layer_names(), spec.layer_names) << spec.name;
  }
}

TEST(ModelZoo, InitialisationDependsOnlyOnTheSeed) {
  StageModel a("fmnist-cnn", 0, 6, 42, sgd());
  torch::manual_seed(12345);  // the global generator must not matter
  (void)torch::rand({100});
  StageModel b("fmnist-cnn", 0, 6, 42, sgd());
  StageModel c("fmnist-cnn", 0, 6, 43, sgd());
  EXPECT_TRUE(torch::equal(a.flat_weights(), b.flat_weights()));
  EXPECT_FALSE(torch::equal(a.flat_weights(), c.flat_weights()));
}

Batch sample_batch(const ModelSpec& spec, int64_t n) {
  // Synthetic data for every model, so this test does not need Fashion-MNIST.
  const std::string data_model = spec.input == InputKind::tokens ? "bert-small" : "resnet18";
  Batch b = open_dataset(data_model, Split::train)->get([&] {
    std::vector<int64_t> idx;
    for (int64_t i = 0; i < n; ++i) idx.push_back(i * 7 + 1);
    return idx;
  }());
  if (spec.input == InputKind::image && spec.sample_shape[0] == 1) {  // 1x28x28
    b.inputs = b.inputs.narrow(1, 0, 1).narrow(2, 0, 28).narrow(3, 0, 28).contiguous();
  }
  return b;
}

void expect_close(const at::Tensor& a, const at::Tensor& b, const std::string& what) {
  ASSERT_EQ(a.sizes(), b.sizes()) << what;
  const double scale = std::max(1e-3, b.abs().max().item<double>());
  const double diff = (a - b).abs().max().item<double>();
  EXPECT_LE(diff, 1e-4 * scale) << what << ": max difference " << diff << " (scale " << scale << ")";
}

// Stage [0,k) then [k,L) against the whole chain: the same loss, the same
// logits and the same parameter gradients, for several cut points.
class Slicing : public ::testing::TestWithParam<std::string> {};

TEST_P(Slicing, TwoStagesEqualTheWholeModel) {
  const uint64_t seed = 11;
  {
    const ModelSpec& spec = find_model(GetParam());
    const int L = spec.layer_count();
    const Batch batch = sample_batch(spec, 3);
    StageModel whole(spec.name, 0, L, seed, sgd());
    const at::Tensor logits = whole.infer(batch.inputs);
    const auto ref = whole.forward_backward_loss(0, batch.inputs, batch.labels, 3.0);
    const at::Tensor ref_grads = whole.flat_gradients();
    ASSERT_GT(ref_grads.abs().sum().item<double>(), 0);
    std::vector<int> cuts{1, L / 2, L - 1};
    for (size_t c = 0; c < cuts.size(); ++c) {
      const int k = cuts[c];
      SCOPED_TRACE("cut at " + std::to_string(k));
      StageModel first(spec.name, 0, k, seed, sgd());
      StageModel last(spec.name, k, L, seed, sgd());
      ASSERT_TRUE(first.is_first() && !first.is_last() && last.is_last() && !last.is_first());
      expect_close(torch::cat({first.flat_weights(), last.flat_weights()}), whole.flat_weights(),
                   "weights");
      const at::Tensor mid = first.forward(7, batch.inputs);
      EXPECT_FALSE(mid.requires_grad());
      expect_close(last.infer(mid), logits, "logits");
      // The last stage in one go, or (every other cut) as forward then backward_loss.
      StageModel::LossResult r;
      if (c % 2 == 0) {
        r = last.forward_backward_loss(7, mid, batch.labels, 3.0);
      } else {
        expect_close(last.forward(7, mid), logits, "logits of forward");
        r = last.backward_loss(7, batch.labels, 3.0);
        EXPECT_EQ(last.stash_count(), 0);
      }
      EXPECT_NEAR(r.loss_sum, ref.loss_sum, 1e-4 * std::abs(ref.loss_sum));
      EXPECT_EQ(r.correct, ref.correct);
      ASSERT_TRUE(r.grad_input.defined());
      EXPECT_EQ(r.grad_input.sizes(), mid.sizes());
      EXPECT_EQ(first.stash_count(), 1);
      const at::Tensor g0 = first.backward(7, r.grad_input);
      EXPECT_FALSE(g0.defined());  // nothing upstream of the first stage
      EXPECT_EQ(first.stash_count(), 0);
      expect_close(torch::cat({first.flat_gradients(), last.flat_gradients()}), ref_grads,
                   "gradients");
    }
  }
}

INSTANTIATE_TEST_SUITE_P(EveryModel, Slicing, ::testing::ValuesIn(model_names()),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

TEST(SlicingMicroBatches, ThreeStagesWithMicroBatchesAccumulateTheMiniBatchGradient) {
  const auto& spec = find_model("fmnist-resnet");
  const Batch batch = sample_batch(spec, 6);
  StageModel whole(spec.name, 0, 7, 5, sgd());
  whole.forward_backward_loss(0, batch.inputs, batch.labels, 6.0);
  StageModel s0(spec.name, 0, 2, 5, sgd()), s1(spec.name, 2, 5, 5, sgd()), s2(spec.name, 5, 7, 5, sgd());
  // Two micro-batches of 2 and 4 samples, both forwards in flight before the backwards.
  const at::Tensor x0 = batch.inputs.narrow(0, 0, 2), x1 = batch.inputs.narrow(0, 2, 4);
  const at::Tensor y0 = batch.labels.narrow(0, 0, 2), y1 = batch.labels.narrow(0, 2, 4);
  at::Tensor a0 = s1.forward(0, s0.forward(0, x0));
  at::Tensor a1 = s1.forward(1, s0.forward(1, x1));
  auto r1 = s2.forward_backward_loss(1, a1, y1, 6.0);
  s0.backward(1, s1.backward(1, r1.grad_input));
  auto r0 = s2.forward_backward_loss(0, a0, y0, 6.0);
  s0.backward(0, s1.backward(0, r0.grad_input));
  expect_close(torch::cat({s0.flat_gradients(), s1.flat_gradients(), s2.flat_gradients()}),
               whole.flat_gradients(), "gradients");
}

TEST(StageModel, BadCallsAreErrorsNotCrashes) {
  StageModel first("fmnist-cnn", 0, 3, 1, sgd());
  StageModel last("fmnist-cnn", 3, 6, 1, sgd());
  EXPECT_THROW(first.backward(99, torch::zeros({1})), std::invalid_argument);
  EXPECT_THROW(first.forward(0, torch::zeros({2, 3, 32, 32})), std::invalid_argument);
  EXPECT_THROW(first.forward_backward_loss(0, torch::zeros({2, 1, 28, 28}), torch::zeros({2}), 2),
               std::invalid_argument);
  EXPECT_THROW(first.set_flat_weights(torch::zeros({5})), std::invalid_argument);
  first.forward(1, torch::zeros({2, 1, 28, 28}));
  EXPECT_THROW(first.forward(1, torch::zeros({2, 1, 28, 28})), std::invalid_argument);
  first.drop(1);
  first.drop(1);
  EXPECT_EQ(first.stash_count(), 0);
}

TEST(StageModel, FlatWeightsRoundTrip) {
  StageModel a("fmnist-cnn", 0, 6, 1, sgd());
  StageModel b("fmnist-cnn", 0, 6, 2, sgd());
  EXPECT_EQ(a.flat_weights().numel(), a.parameter_count());
  EXPECT_EQ(a.parameter_bytes(), 4 * a.parameter_count());
  b.set_flat_weights(a.flat_weights());
  EXPECT_TRUE(torch::equal(a.flat_weights(), b.flat_weights()));
}

TEST(StageModel, ReportsEveryParametersFinalGradientDuringTheLastBackward) {
  // Two micro-batches through the last two layers and the loss; during the
  // second backward every parameter is reported once, its total equal to
  // the gradient accumulated after it, the last layers before the first.
  StageModel stage("fmnist-cnn", 2, 6, 1, sgd());  // conv2, pool2, fc1, fc2
  const auto sizes = stage.parameter_sizes();
  int64_t values = 0;
  for (int64_t n : sizes) values += n;
  ASSERT_EQ(values, stage.parameter_count());
  torch::manual_seed(3);
  const at::Tensor labels = torch::tensor({1, 7, 3}, torch::kLong);
  stage.forward(0, torch::randn({3, 32, 14, 14}));
  stage.backward_loss(0, labels, 6.0);
  stage.forward(1, torch::randn({3, 32, 14, 14}));
  std::vector<size_t> order;
  std::vector<at::Tensor> totals(sizes.size());
  stage.backward_loss(1, labels, 6.0, [&](size_t parameter, const at::Tensor& total) {
    order.push_back(parameter);
    totals.at(parameter) = total.reshape({-1}).clone();
  });
  ASSERT_EQ(order.size(), sizes.size());
  EXPECT_GE(order.front(), sizes.size() - 2) << "the last layer's parameters (fc2 weight, bias) are final first";
  const at::Tensor flat = stage.flat_gradients();
  int64_t offset = 0;
  for (size_t p = 0; p < sizes.size(); ++p) {
    ASSERT_TRUE(totals[p].defined()) << "parameter " << p << " never reported";
    EXPECT_TRUE(at::equal(totals[p], flat.narrow(0, offset, sizes[p]))) << "parameter " << p;
    offset += sizes[p];
  }
  // Without a callback nothing is reported and nothing changes.
  stage.forward(2, torch::randn({3, 32, 14, 14}));
  EXPECT_NO_THROW(stage.backward_loss(2, labels, 6.0));
}

}  // namespace
}  // namespace asteroid::compute
