// Optimizers over a stage's parameters, with their whole state exposed as one
// flat tensor so that it can be shipped between devices, replicated and
// checkpointed. Update rules equal torch.optim's SGD (with momentum,
// dampening 0, no Nesterov) and Adam (no amsgrad).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "messages/optimizer_kind.h"

namespace asteroid::compute {

using asteroid::OptimizerKind;

using OptimizerConfig = asteroid::OptimizerSettings;

// The default hyper-parameters of a kind (lr 0.05 for SGD/momentum, 1e-3 for Adam).
OptimizerConfig default_optimizer_config(OptimizerKind kind);

class Optimizer {
 public:
  explicit Optimizer(OptimizerConfig config);
  const OptimizerConfig& config() const { return config_; }

  // One step over `params` (updated in place) with gradients `grads`.
  // REQUIRES: the same parameter list (count and shapes) on every call.
  void step(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads);

  // Steps taken so far (Adam's bias correction uses it).
  int64_t steps() const { return steps_; }
  // All state as one flat float32 tensor (empty for plain SGD or before the
  // first step) plus the step count; load_state restores both exactly.
  at::Tensor state() const;
  void load_state(const at::Tensor& flat_state, int64_t steps);

 private:
  OptimizerConfig config_;
  int64_t steps_ = 0;
  std::vector<at::Tensor> buffers_;  // momentum; or Adam's exp_avg then exp_avg_sq
  at::Tensor pending_state_;  // loaded state, split into buffers_ at the next step
};

}  // namespace asteroid::compute
