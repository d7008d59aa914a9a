// Test accuracy of a whole model: what single-device training and the
// distributed coordinator report at the end of a run.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

#include "compute/dataset.h"
#include "compute/stage_model.h"

namespace asteroid::compute {

struct EvalResult {
  double accuracy = 0;   // fraction of samples classified correctly
  double mean_loss = 0;  // mean cross entropy
  int64_t samples = 0;
};

// Inference over the first `limit` samples of `data` (all when limit <= 0),
// `batch` at a time. REQUIRES: `model` covers the whole chain [0, L).
EvalResult evaluate(const StageModel& model, const Dataset& data, int64_t batch = 500,
                    int64_t limit = 0);

// The same for a model given as its full flat weights (the concatenation of
// every stage's flat_weights() in stage order). Throws std::invalid_argument
// when the size does not match the model.
EvalResult evaluate_weights(const std::string& model, const at::Tensor& flat_weights,
                            const Dataset& data, int64_t batch = 500, int64_t limit = 0);

}  // namespace asteroid::compute
