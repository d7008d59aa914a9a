// Flat weight vectors on disk, so runs can be compared bit for bit.
// Format (little-endian): the 8 bytes "ASTWGT01", a uint64 value count n,
// then n float32 values, nothing else.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

namespace asteroid::compute {

// Throws std::runtime_error naming the path when it cannot be written.
void save_flat_weights(const std::string& path, const at::Tensor& flat);
// Throws std::runtime_error naming the path for a missing, short or foreign file.
at::Tensor load_flat_weights(const std::string& path);

}  // namespace asteroid::compute
