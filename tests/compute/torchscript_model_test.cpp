// TorchScript models and tensor data sets (docs/custom-models.md): the
// document's own export snippet makes a chain that trains, split into stages
// it computes what the whole module computes, and every file that breaks a
// rule is refused with the file and the child or field named.
#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <fstream>
#include <iterator>

#include "compute/dataset.h"
#include "compute/layers.h"
#include "compute/stage_model.h"
#include "compute/torchscript_model.h"
#include "tests/support/custom_model_files.h"

namespace asteroid::compute {
namespace {

using test_support::doc_model_files;
using test_support::run_python;
using test_support::TempDir;

#define EXPECT_THROW_MENTIONING(statement, text)                                              \
  try {                                                                                       \
    statement;                                                                                \
    ADD_FAILURE() << "no exception; expected one mentioning: " << (text);                     \
  } catch (const std::invalid_argument& e) {                                                  \
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << "message: " << e.what(); \
  }

std::string doc_model() {
  const auto& files = doc_model_files();
  return register_scripted_file(files.model, describe_tensor_data(files.train, files.test)).spec.name;
}

TEST(TorchScriptModel, TheDocumentsChainRegistersWithItsChildrenAsLayers) {
  const std::string name = doc_model();
  const ModelSpec& spec = find_model(name);
  EXPECT_EQ(name.substr(0, name.find('@')), "model");
  EXPECT_EQ(name.size(), std::string("model@").size() + 12);
  EXPECT_EQ(spec.layer_names, (std::vector<std::string>{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}));
  EXPECT_EQ(spec.sample_shape, (std::vector<int64_t>{1, 28, 28}));
  EXPECT_EQ(spec.num_classes, 10);
  EXPECT_EQ(spec.input, InputKind::image);
  const ScriptedModel* scripted = find_scripted(name);
  ASSERT_NE(scripted, nullptr);
  std::ifstream file(doc_model_files().model, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  EXPECT_EQ(scripted->sha256, sha256_hex(bytes));
  EXPECT_EQ(name.substr(name.size() - 12), scripted->sha256.substr(0, 12));
  EXPECT_TRUE(is_known_model(name));
  EXPECT_EQ(resolve_model(name), name) << "a registered name resolves to itself";
}

TEST(TorchScriptModel, StagesComputeWhatTheWholeModuleComputes) {
  const std::string name = doc_model();
  torch::jit::Module whole = torch::jit::load(doc_model_files().model);
  const auto data = open_dataset(name, Split::train);
  const Batch batch = data->get({0, 1, 2, 3});
  torch::NoGradGuard no_grad;
  const at::Tensor expected = whole.forward({batch.inputs}).toTensor();
  at::Tensor x = batch.inputs;
  for (auto [begin, end] : {std::pair{0, 3}, {3, 7}, {7, 10}}) {
    for (const auto& layer : build_layers(name, begin, end, /*seed=*/1)) x = layer.module->forward(x);
  }
  EXPECT_TRUE(torch::equal(x, expected));
}

TEST(TorchScriptModel, StartsFromTheFilesWeightsAndEachBuildHasItsOwnParameters) {
  const std::string name = doc_model();
  StageModel a(name, 0, 10, /*seed=*/1, OptimizerConfig{}), b(name, 0, 10, /*seed=*/99, OptimizerConfig{});
  EXPECT_TRUE(torch::equal(a.flat_weights(), b.flat_weights())) << "the seed does not change a file's weights";
  torch::jit::Module whole = torch::jit::load(doc_model_files().model);
  int64_t count = 0;
  for (const auto& p : whole.parameters()) count += p.numel();
  EXPECT_EQ(a.parameter_count(), count);
  a.set_flat_weights(a.flat_weights() + 1);
  EXPECT_FALSE(torch::equal(a.flat_weights(), b.flat_weights()));
}

TEST(TorchScriptModel, EveryRangeOfChildrenIsAStageThatTrains) {
  const std::string name = doc_model();
  const auto data = open_dataset(name, Split::train);
  const Batch batch = data->get({0, 1, 2, 3});
  std::vector<at::Tensor> inputs = {batch.inputs};  // the input of each layer
  {
    torch::NoGradGuard no_grad;
    for (const auto& layer : build_layers(name, 0, 10, 1)) inputs.push_back(layer.module->forward(inputs.back()));
  }
  for (int begin = 0; begin < 10; ++begin) {
    for (int end = begin + 1; end <= 10; ++end) {
      SCOPED_TRACE("layers [" + std::to_string(begin) + ", " + std::to_string(end) + ")");
      StageModel stage(name, begin, end, 1, OptimizerConfig{});
      const at::Tensor out = stage.forward(0, inputs[static_cast<size_t>(begin)]);
      if (end == 10) {
        stage.backward_loss(0, batch.labels, 4);
      } else {
        stage.backward(0, torch::ones_like(out));
      }
      stage.step();
      EXPECT_EQ(stage.flat_weights().numel(), stage.parameter_count());
      EXPECT_TRUE(stage.optimizer().state().defined());
    }
  }
}

TEST(TorchScriptModel, TrainsOnItsTensorData) {
  const std::string name = doc_model();
  StageModel model(name, 0, 10, 1, OptimizerConfig{});
  const auto data = open_dataset(name, Split::train);
  EXPECT_EQ(data->size(), 6000) << "--test-data given: the whole training file trains";
  double first = 0, last = 0;
  for (int round = 0; round < 30; ++round) {
    const Batch batch = data->get(round_indices(data->size(), 32, 7, round));
    const double loss = model.forward_backward_loss(round, batch.inputs, batch.labels, 32).loss_sum / 32;
    model.step();
    (round == 0 ? first : last) = loss;
  }
  EXPECT_LT(last, first * 0.8) << "30 rounds of SGD on Fashion-MNIST samples";
}

TEST(TensorData, OneFileSplitsOneSampleInTenForTesting) {
  TempDir dir("asteroid-tensor-data");
  run_python(dir.path(), R"(
import torch
x = torch.arange(25 * 3, dtype=torch.float32).reshape(25, 3)
torch.save((x, torch.arange(25) % 4), "pair.pt")
torch.save({"inputs": torch.arange(25 * 2).reshape(25, 2), "labels": torch.arange(25, dtype=torch.int32) % 3}, "dict.pt")
)");
  const DataShape pair = describe_tensor_data(dir.file("pair.pt"));
  EXPECT_EQ(pair.sample_shape, (std::vector<int64_t>{3}));
  EXPECT_EQ(pair.num_classes, 4);
  EXPECT_EQ(pair.input, InputKind::image);
  const auto train = open_tensor_data(pair.dataset, Split::train), test = open_tensor_data(pair.dataset, Split::test);
  ASSERT_EQ(train->size(), 23);
  ASSERT_EQ(test->size(), 2);
  EXPECT_EQ(test->get({0, 1}).labels[1].item<int64_t>(), 19 % 4) << "the test split is samples 9 and 19";
  EXPECT_EQ(train->get({9}).inputs[0][0].item<float>(), 30.0f) << "training sample 9 is file sample 10";
  const DataShape tokens = describe_tensor_data(dir.file("dict.pt"));
  EXPECT_EQ(tokens.input, InputKind::tokens);
  EXPECT_EQ(tokens.num_classes, 3);
  EXPECT_EQ(open_tensor_data(tokens.dataset, Split::train)->get({0}).labels.scalar_type(), at::kLong);
}

TEST(TensorData, BadFilesAreRefusedNamingTheFileAndTheFault) {
  TempDir dir("asteroid-tensor-data");
  run_python(dir.path(), R"(
import torch
x = torch.zeros(20, 4)
torch.save((x, torch.zeros(19, dtype=torch.int64)), "lengths.pt")
torch.save((x, torch.zeros(20)), "float_labels.pt")
torch.save((x.to(torch.uint8), torch.zeros(20, dtype=torch.int64)), "uint8.pt")
torch.save((x, torch.zeros(20, dtype=torch.int64), x), "three.pt")
torch.save({"inputs": x, "targets": torch.zeros(20, dtype=torch.int64)}, "no_labels.pt")
torch.save((x, torch.zeros(20, 1, dtype=torch.int64)), "matrix_labels.pt")
torch.save((x, torch.full((20,), -1)), "negative.pt")
torch.save([1, 2], "not_tensors.pt")
torch.save((torch.zeros(20, 5), torch.zeros(20, dtype=torch.int64)), "other_shape.pt")
open("garbage.pt", "w").write("not a torch file")
)");
  auto refused = [&](const std::string& file, const std::string& why, const std::string& test = "") {
    SCOPED_TRACE(file);
    EXPECT_THROW_MENTIONING(describe_tensor_data(dir.file(file), test.empty() ? "" : dir.file(test)), why);
  };
  refused("lengths.pt", "has 20 inputs but 19 labels");
  refused("float_labels.pt", "labels are Float; they must be integer class indices");
  refused("uint8.pt", "inputs are Byte; they must be float32 (images) or int64");
  refused("three.pt", "holds 3 items; a data set is a pair (inputs, labels)");
  refused("no_labels.pt", "a dict without the key 'labels'");
  refused("matrix_labels.pt", "labels of shape [20, 1] are not a vector");
  refused("negative.pt", "a label is negative");
  refused("not_tensors.pt", "is not a tensor");
  refused("garbage.pt", "is not a file torch.save wrote");
  refused("missing.pt", "cannot be read");
  refused("lengths.pt", "has 20 inputs but 19 labels", "negative.pt");
  EXPECT_THROW_MENTIONING(describe_tensor_data(dir.file("float_labels.pt")), dir.file("float_labels.pt"));
  // Both files fine on their own, but their samples differ.
  run_python(dir.path(), R"(
import torch
torch.save((torch.zeros(20, 4), torch.zeros(20, dtype=torch.int64)), "train.pt")
)");
  refused("train.pt", "has samples of shape [5]", "other_shape.pt");
}

TEST(TorchScriptModel, ModulesThatAreNoChainAreRefusedNamingTheChild) {
  TempDir dir("asteroid-torchscript");
  run_python(dir.path(), R"(
import torch, torch.nn as nn

class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.flat = nn.Flatten()
        self.a = nn.Linear(784, 784)
        self.b = nn.Linear(784, 10)
    def forward(self, x):
        x = self.flat(x)
        return self.b(self.a(x) + x)

class Pair(nn.Module):
    def forward(self, x):
        return x, x

class Tuple(nn.Module):
    def __init__(self):
        super().__init__()
        self.pair = Pair()
    def forward(self, x):
        return self.pair(x)[0]

class Skips(nn.Module):
    def __init__(self):
        super().__init__()
        self.flat = nn.Flatten()
        self.unused = nn.Linear(2, 2)
        self.fc = nn.Linear(784, 10)
    def forward(self, x):
        return self.fc(self.flat(x))

class OwnWeight(nn.Module):
    def __init__(self):
        super().__init__()
        self.flat = nn.Flatten()
        self.w = nn.Parameter(torch.zeros(10, 784))
    def forward(self, x):
        return self.flat(x)

torch.jit.script(Residual()).save("residual.pt")
torch.jit.script(Tuple()).save("tuple.pt")
torch.jit.script(Skips()).save("skips.pt")
torch.jit.script(OwnWeight()).save("own_weight.pt")
torch.jit.script(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))).save("batchnorm.pt")
torch.jit.script(nn.Sequential(nn.Linear(784, 10))).save("wrong_input.pt")
torch.jit.script(nn.Sequential(nn.Flatten(), nn.Linear(784, 5))).save("few_classes.pt")
torch.jit.script(nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.Linear(100, 10))).save("mismatch.pt")
open("garbage.pt", "w").write("not torchscript")
)");
  const DataShape fmnist = fashion_mnist_shape();
  auto refused = [&](const std::string& file, const std::string& why) {
    SCOPED_TRACE(file);
    EXPECT_THROW_MENTIONING(register_scripted_file(dir.file(file), fmnist), why);
  };
  refused("residual.pt", "is not a chain of its children: its forward computes aten::add after child 'a'");
  refused("tuple.pt", "child 'pair' returns (Tensor, Tensor), not a tensor");
  refused("skips.pt", "its forward never calls child 'unused'");
  refused("own_weight.pt", "it has a parameter of its own ('w')");
  refused("batchnorm.pt", "has the buffer '1.running_mean'");
  refused("wrong_input.pt", "child '0' fails on samples of shape [2, 1, 28, 28]");
  refused("few_classes.pt", "the last child's output has shape [2, 5] for 2 samples; the data have 10 classes");
  refused("mismatch.pt", "child '2' fails on the output of child '1' ([2, 64])");
  refused("garbage.pt", "does not load as TorchScript");
  refused("missing.pt", "cannot be read");
  EXPECT_THROW_MENTIONING(resolve_model(dir.file("missing.pt")), "does not exist");
  EXPECT_THROW_MENTIONING(resolve_model("no-such-model"), "unknown model 'no-such-model'");
  EXPECT_THROW_MENTIONING(resolve_model("fmnist-cnn", dir.file("x.pt")), "zoo model 'fmnist-cnn' has its own data set");
}

TEST(TorchScriptModel, ReceivedBytesMustHashToTheirNameAndHoldTheNamedChain) {
  const std::string name = doc_model();
  const ScriptedModel& model = *find_scripted(name);
  std::string tampered = model.bytes;
  tampered[tampered.size() / 2] ^= 1;
  EXPECT_THROW_MENTIONING(register_scripted_bytes(model.spec, model.sha256, tampered), "do not hash to");
  ModelSpec renamed = model.spec;
  renamed.name = "model@000000000000";
  EXPECT_THROW_MENTIONING(register_scripted_bytes(renamed, model.sha256, model.bytes), "does not end in its hash");
  ModelSpec other_chain = model.spec;
  other_chain.layer_names.pop_back();
  EXPECT_THROW_MENTIONING(register_scripted_bytes(other_chain, model.sha256, model.bytes), "is not the one named");
  EXPECT_EQ(register_scripted_bytes(model.spec, model.sha256, model.bytes).spec.name, name);
}

}  // namespace
}  // namespace asteroid::compute
