// Data: the sample order, the Fashion-MNIST reader and its errors, the
// synthetic sets.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "compute/dataset.h"
#include "test_util.h"

namespace asteroid::compute {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

const std::string kFmnist = "/usr/share/datasets/fashion-mnist";

TEST(EpochOrder, IsAPermutationFixedBySeedAndEpoch) {
  const auto a = epoch_order(1000, 7, 0);
  std::vector<int64_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(sorted[i], i);
  EXPECT_EQ(a, epoch_order(1000, 7, 0));  // same run twice
  EXPECT_NE(a, epoch_order(1000, 8, 0));  // another seed
  EXPECT_NE(a, epoch_order(1000, 7, 1));  // another epoch
  EXPECT_TRUE(epoch_order(0, 7, 0).empty());
  EXPECT_EQ(epoch_order(1, 7, 3), std::vector<int64_t>{0});
}

TEST(EpochOrder, LiteralValuesGuardAgainstDrift) {
  // mt19937_64 and the reduction are fully specified, so this order is the
  // same with every standard library and build. If it changes, the sample
  // order of every recorded run changes with it.
  EXPECT_EQ(epoch_order(10, 7, 0), (std::vector<int64_t>{1, 2, 0, 3, 5, 7, 4, 6, 8, 9}));
}

TEST(RoundIndices, TileEpochsWithoutRepeats) {
  EXPECT_EQ(rounds_per_epoch(60000, 64), 937);
  EXPECT_EQ(rounds_per_epoch(10, 20), 0);
  EXPECT_THROW(rounds_per_epoch(10, 0), std::invalid_argument);
  const int64_t n = 100, batch = 32;  // 3 rounds per epoch, 4 samples dropped
  std::set<int64_t> seen;
  for (int64_t r = 0; r < 3; ++r)
    for (int64_t i : round_indices(n, batch, 5, r)) EXPECT_TRUE(seen.insert(i).second) << i;
  EXPECT_EQ(seen.size(), 96u);
  // Round 3 is the first round of epoch 1.
  const auto e1 = epoch_order(n, 5, 1);
  EXPECT_EQ(round_indices(n, batch, 5, 3), std::vector<int64_t>(e1.begin(), e1.begin() + batch));
  EXPECT_EQ(round_indices(n, batch, 5, 1), round_indices(n, batch, 5, 1));
  EXPECT_NE(round_indices(n, batch, 5, 1), round_indices(n, batch, 6, 1));
  EXPECT_THROW(round_indices(10, 20, 5, 0), std::invalid_argument);
}

TEST(FashionMnist, ReadsTheDebianFiles) {
  const auto train = open_dataset("fmnist-cnn", Split::train);
  const auto test = open_dataset("fmnist-resnet", Split::test);
  ASSERT_EQ(train->size(), 60000);
  ASSERT_EQ(test->size(), 10000);
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < 2000; ++i) idx.push_back(i * 29);
  const Batch b = train->get(idx);
  EXPECT_EQ(b.inputs.sizes(), (std::vector<int64_t>{2000, 1, 28, 28}));
  EXPECT_EQ(b.inputs.scalar_type(), torch::kFloat);
  EXPECT_EQ(b.labels.scalar_type(), torch::kLong);
  EXPECT_GE(b.labels.min().item<int64_t>(), 0);
  EXPECT_LE(b.labels.max().item<int64_t>(), 9);
  // Normalised with the data set's mean and std.
  EXPECT_NEAR(b.inputs.mean().item<double>(), 0.0, 0.05);
  EXPECT_NEAR(b.inputs.std().item<double>(), 1.0, 0.05);
  // Every class is present, and the same indices give the same samples.
  EXPECT_EQ(std::get<0>(at::_unique(b.labels)).numel(), 10);
  const Batch again = train->get({idx[5], idx[3]});
  EXPECT_TRUE(torch::equal(again.inputs[0], b.inputs[5]));
  EXPECT_TRUE(torch::equal(again.labels[1], b.labels[3]));
  EXPECT_THROW(train->get({60000}), std::out_of_range);
  EXPECT_THROW(train->get({-1}), std::out_of_range);
}

std::string error_of(const std::string& dir, Split split) {
  try {
    open_dataset("fmnist-cnn", split, dir);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

TEST(FashionMnist, MissingFileNamesTheFileAndThePackage) {
  TempDir dir;
  std::string what = error_of(dir.path(), Split::train);
  EXPECT_NE(what.find(dir.file("train-images-idx3-ubyte.gz")), std::string::npos) << what;
  EXPECT_NE(what.find("dataset-fashion-mnist"), std::string::npos) << what;
  fs::copy_file(kFmnist + "/t10k-images-idx3-ubyte.gz", dir.file("t10k-images-idx3-ubyte.gz"));
  what = error_of(dir.path(), Split::test);
  EXPECT_NE(what.find("t10k-labels-idx1-ubyte.gz"), std::string::npos) << what;
  EXPECT_NE(what.find("dataset-fashion-mnist"), std::string::npos) << what;
}

TEST(FashionMnist, TruncatedGzipNamesTheFile) {
  TempDir dir;
  const std::string images = dir.file("t10k-images-idx3-ubyte.gz");
  fs::copy_file(kFmnist + "/t10k-images-idx3-ubyte.gz", images);
  fs::copy_file(kFmnist + "/t10k-labels-idx1-ubyte.gz", dir.file("t10k-labels-idx1-ubyte.gz"));
  ASSERT_NO_THROW(open_dataset("fmnist-cnn", Split::test, dir.path()));
  fs::resize_file(images, fs::file_size(images) / 2);
  const std::string what = error_of(dir.path(), Split::test);
  EXPECT_NE(what.find(images), std::string::npos) << what;
  EXPECT_NE(what.find("truncated"), std::string::npos) << what;
}

TEST(FashionMnist, ShortIdxPayloadNamesTheFile) {
  // A well-formed gzip whose IDX header promises more labels than it holds.
  TempDir dir;
  fs::copy_file(kFmnist + "/t10k-images-idx3-ubyte.gz", dir.file("t10k-images-idx3-ubyte.gz"));
  const std::string labels = dir.file("t10k-labels-idx1-ubyte.gz");
  gzFile f = gzopen(labels.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  const unsigned char header[8] = {0, 0, 8, 1, 0, 0, 0x27, 0x10};  // 10000 labels
  const unsigned char few[3] = {1, 2, 3};
  gzwrite(f, header, 8);
  gzwrite(f, few, 3);
  gzclose(f);
  const std::string what = error_of(dir.path(), Split::test);
  EXPECT_NE(what.find(labels), std::string::npos) << what;
  EXPECT_NE(what.find("expected 10000 data bytes, found 3"), std::string::npos) << what;
}

TEST(SyntheticData, IsDeterministicAndWellFormed) {
  for (const char* model : {"resnet18", "mobilenetv2", "efficientnet-b0"}) {
    const auto a = open_dataset(model, Split::train);
    const auto b = open_dataset(model, Split::train);
    const auto t = open_dataset(model, Split::test);
    EXPECT_EQ(a->size(), 50000);
    EXPECT_EQ(t->size(), 10000);
    const Batch x = a->get({0, 17, 49999}), y = b->get({0, 17, 49999});
    EXPECT_EQ(x.inputs.sizes(), (std::vector<int64_t>{3, 3, 32, 32}));
    EXPECT_TRUE(torch::equal(x.inputs, y.inputs));
    EXPECT_TRUE(torch::equal(x.labels, y.labels));
    EXPECT_FALSE(torch::equal(x.inputs[0], t->get({0}).inputs[0]));  // test split differs
  }
  const auto tokens = open_dataset("bert-small", Split::train);
  const Batch tb = tokens->get({0, 1, 2, 3});
  EXPECT_EQ(tb.inputs.sizes(), (std::vector<int64_t>{4, 128}));
  EXPECT_EQ(tb.inputs.scalar_type(), torch::kLong);
  EXPECT_GE(tb.inputs.min().item<int64_t>(), 0);
  EXPECT_LT(tb.inputs.max().item<int64_t>(), 30522);
  EXPECT_LE(tb.labels.max().item<int64_t>(), 1);
}

TEST(SyntheticData, LabelsDependOnTheInput) {
  // A nearest-template rule recovers the labels far above chance, so a model can learn them.
  const auto d = open_dataset("resnet18", Split::train);
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < 2000; ++i) idx.push_back(i);
  const Batch b = d->get(idx);
  const at::Tensor x = b.inputs.flatten(1);
  std::vector<at::Tensor> means;
  for (int64_t c = 0; c < 10; ++c) means.push_back(x.index({b.labels.eq(c)}).mean(0));
  const at::Tensor centroids = torch::stack(means);
  const at::Tensor pred = torch::cdist(x, centroids).argmin(1);
  const double acc = pred.eq(b.labels).to(torch::kFloat).mean().item<double>();
  EXPECT_GT(acc, 0.5) << "labels look independent of the images";
}

}  // namespace
}  // namespace asteroid::compute
