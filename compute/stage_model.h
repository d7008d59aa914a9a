// A stage: layers [begin, end) of a zoo model, with their parameters, the
// activations stashed between forward and backward, and an optimizer.
// This is what a stage actor runs and what single-device training runs over
// the whole chain [0, L). Only <ATen/core/Tensor.h> leaks out of this header,
// so the actors compile without torch/torch.h.
//
// Loss convention: the last stage computes the SUM of per-sample cross
// entropy over the samples it was given and back-propagates that sum divided
// by `loss_divisor` (the mini-batch size). Gradients accumulated over all
// micro-batches and summed over a replica group are then exactly the gradient
// of the mini-batch mean loss, whatever the plan.
//
// Not thread-safe: one thread drives a StageModel at a time.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "compute/optimizer.h"

namespace asteroid::compute {

class StageModel {
 public:
  // Builds layers [begin, end) of `model` initialised from `seed`: the
  // weights equal those of the same layers of the whole model built with the
  // same seed. Throws std::invalid_argument for an unknown model (the message
  // lists the known ones) or a bad range.
  StageModel(const std::string& model, int begin, int end, uint64_t seed,
             const OptimizerConfig& optimizer);
  ~StageModel();
  StageModel(const StageModel&) = delete;
  StageModel& operator=(const StageModel&) = delete;

  const std::string& model() const;
  int begin() const;
  int end() const;
  bool is_first() const;  // begin == 0
  bool is_last() const;   // end == layer count

  // Forward of one slice of a micro-batch. Keeps what backward needs under
  // `key` (any id unique among slices in flight). Returns the output,
  // detached and contiguous.
  at::Tensor forward(int64_t key, const at::Tensor& input);

  // Called during a backward as each parameter's gradient becomes final for
  // it, in the order autograd finishes them (last layers first): the
  // parameter's index (flat order, see parameter_sizes) and its gradient
  // summed over every backward since the last zero_gradients, this one
  // included. A bucketed all-reduce starts on it while earlier layers still
  // run. Every parameter of a zoo model is used once per backward.
  using GradientReady = std::function<void(size_t parameter, const at::Tensor& total)>;

  // Backward of the slice stashed under `key`, given the gradient of its
  // output. Accumulates parameter gradients, frees the stash and returns the
  // gradient of the input (an undefined tensor on the first stage).
  at::Tensor backward(int64_t key, const at::Tensor& grad_output, const GradientReady& ready = {});

  struct LossResult {
    double loss_sum = 0;      // sum of per-sample cross entropy (not divided)
    int64_t correct = 0;      // samples whose argmax equals the label
    at::Tensor grad_input;    // undefined on a single-stage model
  };
  // Last stage only: forward, loss (sum / loss_divisor), backward in one go.
  LossResult forward_backward_loss(int64_t key, const at::Tensor& input,
                                   const at::Tensor& labels, double loss_divisor);
  // Last stage only, in two steps (so a trace can time them apart):
  // forward(key, input) as above returns the logits; backward_loss then takes
  // the loss of those logits against `labels` and runs the backward of `key`.
  // forward + backward_loss == forward_backward_loss.
  LossResult backward_loss(int64_t key, const at::Tensor& labels, double loss_divisor,
                           const GradientReady& ready = {});

  // Discards the stash of `key` (a round that was aborted). No-op if absent.
  void drop(int64_t key);
  void drop_all();
  // Slices stashed (forward done, backward not yet).
  int64_t stash_count() const;

  // Parameters as one flat float32 vector, in layer order (then each module's
  // registration order): the flat weights of [0, L) are the concatenation of
  // those of consecutive stages [0, a), [a, b), ..., [z, L).
  int64_t parameter_count() const;
  // Values of each parameter tensor, in flat order.
  std::vector<int64_t> parameter_sizes() const;
  int64_t parameter_bytes() const;
  at::Tensor flat_weights() const;
  void set_flat_weights(const at::Tensor& flat);
  // Accumulated gradients as one flat float32 vector (zeros if none yet).
  at::Tensor flat_gradients() const;
  void zero_gradients();

  // Sets the gradients to `flat_gradients` and takes one optimizer step,
  // then zeroes the gradients.
  void apply_gradients(const at::Tensor& flat_gradients);
  // One optimizer step with the gradients accumulated so far, then zeroes them.
  void step();

  Optimizer& optimizer();
  const Optimizer& optimizer() const;

  // Inference over the stage (no stash, no gradients).
  at::Tensor infer(const at::Tensor& input) const;

  // Names of layers [begin, end), as in compute/model_zoo.h.
  std::vector<std::string> layer_names() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace asteroid::compute
