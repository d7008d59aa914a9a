// Data sets saved from Python with torch.save, read without Python
// (docs/custom-models.md): a pair (inputs, labels) or a dict with the keys
// "inputs" and "labels". inputs: [n, ...sample shape] float32 (images, any
// shape) or int64 (token ids); labels: [n] integer class indices >= 0. One
// file splits by a fixed rule (sample i is a test sample when i % 10 == 9);
// a second file, when given, is the test split instead.
//
// A data set is named by its key "tensors:<train path>" or
// "tensors:<train path>|<test path>", which is what a ModelSpec's `dataset`
// holds (compute/model_zoo.h); open_dataset (compute/dataset.h) opens it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "compute/dataset.h"
#include "compute/model_zoo.h"

namespace asteroid::compute {

// What a model needs to know of the data it trains on: the ModelSpec
// fields the data decide.
struct DataShape {
  InputKind input = InputKind::image;
  std::vector<int64_t> sample_shape;
  int64_t num_classes = 0;  // largest label + 1, over both splits
  std::string dataset;      // the key open_dataset takes
};

// The data a zoo model's own data set has (for a TorchScript model trained
// on Fashion-MNIST, the default).
DataShape fashion_mnist_shape();

// Reads and checks the file(s); `test_path` empty: the one-file split.
// Throws std::invalid_argument naming the file and what is wrong (not a
// tensor pair or dict, mismatched lengths, a dtype, a label < 0, no test
// samples).
DataShape describe_tensor_data(const std::string& train_path, const std::string& test_path = "");

// The data a key names: Fashion-MNIST's for "fashion-mnist", else
// describe_tensor_data of its files.
DataShape describe_data(const std::string& dataset);

// True for a key describe_tensor_data made.
bool is_tensor_data_key(const std::string& dataset);

// The split of the data set a key names (re-read and checked).
std::unique_ptr<Dataset> open_tensor_data(const std::string& key, Split split);

}  // namespace asteroid::compute
