#include "compute/optimizer.h"

#include <torch/torch.h>

#include <cmath>
#include <stdexcept>

namespace asteroid::compute {

OptimizerConfig default_optimizer_config(OptimizerKind kind) {
  OptimizerConfig c;
  c.kind = kind;
  c.lr = kind == OptimizerKind::adam ? 1e-3 : 0.05;
  return c;
}

Optimizer::Optimizer(OptimizerConfig config) : config_(config) {
  if (!(config_.lr > 0) || !std::isfinite(config_.lr))
    throw std::invalid_argument("optimizer learning rate must be a positive number, got " +
                                std::to_string(config_.lr));
}

namespace {

// Splits `flat` into tensors shaped like `params`, `copies` times in a row.
std::vector<at::Tensor> split_like(const at::Tensor& flat, const std::vector<at::Tensor>& params,
                                   int copies) {
  int64_t total = 0;
  for (const auto& p : params) total += p.numel();
  if (flat.numel() != total * copies)
    throw std::invalid_argument("optimizer state has " + std::to_string(flat.numel()) +
                                " values, expected " + std::to_string(total * copies));
  std::vector<at::Tensor> out;
  int64_t offset = 0;
  const at::Tensor f = flat.to(torch::kFloat).contiguous();
  for (int c = 0; c < copies; ++c)
    for (const auto& p : params) {
      out.push_back(f.narrow(0, offset, p.numel()).view(p.sizes()).clone());
      offset += p.numel();
    }
  return out;
}

}  // namespace

void Optimizer::step(const std::vector<at::Tensor>& params, const std::vector<at::Tensor>& grads) {
  if (params.size() != grads.size())
    throw std::invalid_argument("optimizer step: " + std::to_string(params.size()) +
                                " parameters but " + std::to_string(grads.size()) + " gradients");
  torch::NoGradGuard no_grad;
  const int copies = config_.kind == OptimizerKind::adam ? 2 : 1;
  if (pending_state_.defined()) {  // state loaded before the parameter shapes were known
    buffers_ = split_like(pending_state_, params, copies);
    pending_state_ = at::Tensor();
  }
  const bool first = buffers_.empty();
  if (!first && config_.kind != OptimizerKind::sgd && buffers_.size() != params.size() * copies)
    throw std::invalid_argument("optimizer step: parameter list changed between steps");
  ++steps_;
  const double lr = config_.lr, wd = config_.weight_decay;
  for (size_t i = 0; i < params.size(); ++i) {
    at::Tensor p = params[i];
    at::Tensor g = grads[i].defined() ? grads[i] : torch::zeros_like(p);
    if (wd != 0) g = g.add(p, wd);
    switch (config_.kind) {
      case OptimizerKind::sgd:
        p.add_(g, -lr);
        break;
      case OptimizerKind::momentum: {
        // torch.optim.SGD: buf = g on the first step, else momentum * buf + g.
        if (first) {
          buffers_.push_back(g.clone());
        } else {
          buffers_[i].mul_(config_.momentum).add_(g);
        }
        p.add_(buffers_[i], -lr);
        break;
      }
      case OptimizerKind::adam: {
        if (first) {
          buffers_.push_back(torch::zeros_like(p));
        }
        break;
      }
    }
  }
  if (config_.kind == OptimizerKind::adam) {
    const size_t n = params.size();
    if (first)  // exp_avg were pushed above; now the exp_avg_sq
      for (size_t i = 0; i < n; ++i) buffers_.push_back(torch::zeros_like(params[i]));
    const double b1 = config_.beta1, b2 = config_.beta2;
    const double bias1 = 1 - std::pow(b1, static_cast<double>(steps_));
    const double bias2 = 1 - std::pow(b2, static_cast<double>(steps_));
    const double step_size = config_.lr / bias1;
    const double bias2_sqrt = std::sqrt(bias2);
    for (size_t i = 0; i < n; ++i) {
      at::Tensor p = params[i];
      at::Tensor g = grads[i].defined() ? grads[i] : torch::zeros_like(p);
      if (wd != 0) g = g.add(p, wd);
      at::Tensor& m = buffers_[i];
      at::Tensor& v = buffers_[n + i];
      m.mul_(b1).add_(g, 1 - b1);
      v.mul_(b2).addcmul_(g, g, 1 - b2);
      at::Tensor denom = (v.sqrt() / bias2_sqrt).add_(config_.eps);
      p.addcdiv_(m, denom, -step_size);
    }
  }
}

at::Tensor Optimizer::state() const {
  if (pending_state_.defined()) return pending_state_.clone();
  if (buffers_.empty()) return torch::empty({0}, torch::kFloat);
  std::vector<at::Tensor> flat;
  for (const auto& b : buffers_) flat.push_back(b.reshape({-1}));
  return torch::cat(flat).to(torch::kFloat);
}

void Optimizer::load_state(const at::Tensor& flat_state, int64_t steps) {
  if (steps < 0) throw std::invalid_argument("optimizer step count must be >= 0");
  buffers_.clear();
  pending_state_ = at::Tensor();
  if (flat_state.defined() && flat_state.numel() > 0) {
    if (config_.kind == OptimizerKind::sgd)
      throw std::invalid_argument("plain SGD has no state, got " +
                                  std::to_string(flat_state.numel()) + " values");
    pending_state_ = flat_state.detach().to(torch::kFloat).reshape({-1}).clone();
  }
  steps_ = steps;
}

}  // namespace asteroid::compute
