// Training and test data: Fashion-MNIST from Debian's dataset-fashion-mnist,
// and seeded synthetic image and token sets for models no shipped data set
// fits. The sample order is a pure function of (seed, epoch), so every plan
// sees the same samples in the same rounds.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "compute/model_zoo.h"

namespace asteroid::compute {

enum class Split { train, test };

struct Batch {
  at::Tensor inputs;  // [n, ...sample shape]; float32 images or int64 tokens
  at::Tensor labels;  // [n] int64
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  // Samples at `indices`, in that order. REQUIRES: every index < size().
  virtual Batch get(const std::vector<int64_t>& indices) const = 0;
};

// The data set a zoo model trains on: Fashion-MNIST for fmnist-* models
// (read from `data_dir`, default /usr/share/datasets/fashion-mnist; a missing
// or truncated file is a std::runtime_error naming the file and the Debian
// package), seeded synthetic data for the others; a model registered with
// a tensor data set (compute/tensor_dataset.h) opens that.
std::unique_ptr<Dataset> open_dataset(const std::string& model, Split split,
                                      const std::string& data_dir = "");
// The same for a spec's `dataset` (and the fields its synthetic sets read).
std::unique_ptr<Dataset> open_dataset(const ModelSpec& spec, Split split, const std::string& data_dir = "");

// A permutation of [0, n) that depends only on (seed, epoch).
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch);

// Rounds (mini-batches) in one epoch: n / batch, the last partial batch dropped.
int64_t rounds_per_epoch(int64_t n, int64_t batch);

// Sample indices of global round `round` (0-based, counting across epochs):
// the mini-batch of `batch` samples of that round in epoch_order.
std::vector<int64_t> round_indices(int64_t n, int64_t batch, uint64_t seed, int64_t round);

}  // namespace asteroid::compute
