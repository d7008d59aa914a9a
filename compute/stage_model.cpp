#include "compute/stage_model.h"

#include <torch/torch.h>

#include <sstream>
#include <stdexcept>
#include <unordered_map>

#include "compute/layers.h"
#include "compute/model_zoo.h"

namespace asteroid::compute {

struct StageModel::Impl {
  using LossResult = StageModel::LossResult;
  using GradientReady = StageModel::GradientReady;
  Impl(const std::string& m, int b, int e, uint64_t seed, const OptimizerConfig& opt)
      : spec(find_model(m)), begin(b), end(e), layers(build_layers(m, b, e, seed)), optimizer(opt) {
    for (auto& l : layers)
      for (auto& p : l.module->parameters()) params.push_back(p);
    for (const auto& p : params) count += p.numel();
  }

  const ModelSpec& spec;
  int begin, end;
  std::vector<NamedLayer> layers;
  std::vector<at::Tensor> params;
  int64_t count = 0;
  Optimizer optimizer;

  struct Stash {
    at::Tensor input;   // requires grad on non-first stages
    at::Tensor output;  // still attached to the graph
  };
  std::unordered_map<int64_t, Stash> stash;

  bool is_first() const { return begin == 0; }
  bool is_last() const { return end == spec.layer_count(); }

  // The input as the first layer wants it; on later stages a leaf that
  // collects the gradient for the previous stage.
  at::Tensor prepare(const at::Tensor& input) const {
    if (!input.defined()) throw std::invalid_argument("stage input is undefined");
    if (!is_first()) return input.detach().to(torch::kFloat).requires_grad_(true);
    const auto& shape = spec.sample_shape;
    bool ok = input.dim() == static_cast<int64_t>(shape.size()) + 1;
    for (size_t i = 0; ok && i < shape.size(); ++i) ok = input.size(i + 1) == shape[i];
    if (!ok) {
      std::ostringstream msg;
      msg << "model '" << spec.name << "' expects inputs of shape [n";
      for (auto s : shape) msg << ", " << s;
      msg << "], got " << input.sizes();
      throw std::invalid_argument(msg.str());
    }
    if (spec.input == InputKind::tokens) return input.detach().to(torch::kLong);
    return input.detach().to(torch::kFloat);
  }

  at::Tensor run(at::Tensor x) const {
    for (const auto& l : layers) x = l.module->forward(x);
    return x;
  }

  // Cross entropy (summed) of `logits` against `labels`, backward of
  // sum / divisor through the graph, and the gradient of `x`.
  LossResult loss_backward(const at::Tensor& x, const at::Tensor& logits, const at::Tensor& labels,
                           double divisor) {
    torch::AutoGradMode grad(true);
    at::Tensor y = labels.to(torch::kLong);
    if (y.dim() != 1 || y.size(0) != logits.size(0))
      throw std::invalid_argument("labels must be a vector of " + std::to_string(logits.size(0)) +
                                  " class indices");
    at::Tensor loss = torch::nn::functional::cross_entropy(
        logits, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
    (loss / divisor).backward();
    LossResult r;
    r.loss_sum = loss.item<double>();
    r.correct = logits.detach().argmax(1).eq(y).sum().item<int64_t>();
    if (x.requires_grad()) r.grad_input = x.grad().defined() ? x.grad() : torch::zeros_like(x);
    return r;
  }

  // For one backward: a hook on every parameter reporting its gradient plus
  // what .grad() holds already (a leaf's hook runs before accumulation).
  class ReadyHooks {
   public:
    ReadyHooks(std::vector<at::Tensor>& params, const GradientReady& ready) : params_(params) {
      if (!ready) return;
      for (size_t i = 0; i < params.size(); ++i) {
        const at::Tensor p = params[i];
        handles_.emplace_back(i, params[i].register_hook([i, p, &ready](const at::Tensor& grad) {
          ready(i, p.grad().defined() ? p.grad() + grad : grad);
        }));
      }
    }
    ~ReadyHooks() {
      for (const auto& [i, handle] : handles_) params_[i].remove_hook(handle);
    }
    ReadyHooks(const ReadyHooks&) = delete;
    ReadyHooks& operator=(const ReadyHooks&) = delete;

   private:
    std::vector<at::Tensor>& params_;
    std::vector<std::pair<size_t, unsigned>> handles_;
  };

  void zero_grads() {
    for (auto& p : params)
      if (p.grad().defined()) p.mutable_grad().zero_();
  }
};

StageModel::StageModel(const std::string& model, int begin, int end, uint64_t seed,
                       const OptimizerConfig& optimizer)
    : impl_(std::make_unique<Impl>(model, begin, end, seed, optimizer)) {}

StageModel::~StageModel() = default;

const std::string& StageModel::model() const { return impl_->spec.name; }
int StageModel::begin() const { return impl_->begin; }
int StageModel::end() const { return impl_->end; }
bool StageModel::is_first() const { return impl_->is_first(); }
bool StageModel::is_last() const { return impl_->is_last(); }

at::Tensor StageModel::forward(int64_t key, const at::Tensor& input) {
  if (impl_->stash.count(key))
    throw std::invalid_argument("stage forward: key " + std::to_string(key) + " is already in flight");
  torch::AutoGradMode grad(true);
  at::Tensor x = impl_->prepare(input);
  at::Tensor y = impl_->run(x);
  impl_->stash.emplace(key, Impl::Stash{x, y});
  return y.detach().contiguous();
}

at::Tensor StageModel::backward(int64_t key, const at::Tensor& grad_output, const GradientReady& ready) {
  auto it = impl_->stash.find(key);
  if (it == impl_->stash.end())
    throw std::invalid_argument("stage backward: no forward stashed under key " + std::to_string(key));
  Impl::Stash s = std::move(it->second);
  impl_->stash.erase(it);
  if (!grad_output.defined() || grad_output.sizes() != s.output.sizes()) {
    std::ostringstream msg;
    msg << "stage backward: gradient shape "
        << (grad_output.defined() ? grad_output.sizes() : at::IntArrayRef{}) << " differs from output "
        << s.output.sizes();
    throw std::invalid_argument(msg.str());
  }
  {
    Impl::ReadyHooks hooks(impl_->params, ready);
    torch::autograd::backward({s.output}, {grad_output.to(s.output.dtype())});
  }
  if (!s.input.requires_grad()) return at::Tensor();
  return s.input.grad().defined() ? s.input.grad() : torch::zeros_like(s.input);
}

StageModel::LossResult StageModel::forward_backward_loss(int64_t key, const at::Tensor& input,
                                                         const at::Tensor& labels,
                                                         double loss_divisor) {
  if (!is_last())
    throw std::invalid_argument("forward_backward_loss on stage [" + std::to_string(begin()) + ", " +
                                std::to_string(end()) + ") which is not the last stage");
  if (!(loss_divisor > 0)) throw std::invalid_argument("loss divisor must be positive");
  torch::AutoGradMode grad(true);
  at::Tensor x = impl_->prepare(input);
  at::Tensor logits = impl_->run(x);
  (void)key;
  return impl_->loss_backward(x, logits, labels, loss_divisor);
}

StageModel::LossResult StageModel::backward_loss(int64_t key, const at::Tensor& labels, double loss_divisor,
                                                 const GradientReady& ready) {
  if (!is_last())
    throw std::invalid_argument("backward_loss on stage [" + std::to_string(begin()) + ", " +
                                std::to_string(end()) + ") which is not the last stage");
  if (!(loss_divisor > 0)) throw std::invalid_argument("loss divisor must be positive");
  auto it = impl_->stash.find(key);
  if (it == impl_->stash.end())
    throw std::invalid_argument("backward_loss: no forward stashed under key " + std::to_string(key));
  if (!labels.defined() || labels.dim() != 1 || labels.size(0) != it->second.output.size(0))
    throw std::invalid_argument("labels must be a vector of " +
                                std::to_string(it->second.output.size(0)) + " class indices");
  Impl::Stash s = std::move(it->second);
  impl_->stash.erase(it);
  Impl::ReadyHooks hooks(impl_->params, ready);
  return impl_->loss_backward(s.input, s.output, labels, loss_divisor);
}

void StageModel::drop(int64_t key) { impl_->stash.erase(key); }
void StageModel::drop_all() { impl_->stash.clear(); }
int64_t StageModel::stash_count() const { return static_cast<int64_t>(impl_->stash.size()); }

int64_t StageModel::parameter_count() const { return impl_->count; }
int64_t StageModel::parameter_bytes() const { return impl_->count * 4; }

std::vector<int64_t> StageModel::parameter_sizes() const {
  std::vector<int64_t> sizes;
  for (const auto& p : impl_->params) sizes.push_back(p.numel());
  return sizes;
}

at::Tensor StageModel::flat_weights() const {
  std::vector<at::Tensor> parts;
  for (const auto& p : impl_->params) parts.push_back(p.detach().reshape({-1}));
  if (parts.empty()) return torch::empty({0}, torch::kFloat);
  return torch::cat(parts).to(torch::kFloat);
}

void StageModel::set_flat_weights(const at::Tensor& flat) {
  if (!flat.defined() || flat.numel() != impl_->count)
    throw std::invalid_argument("set_flat_weights: got " +
                                std::to_string(flat.defined() ? flat.numel() : 0) +
                                " values, the stage has " + std::to_string(impl_->count));
  torch::NoGradGuard no_grad;
  const at::Tensor f = flat.reshape({-1}).to(torch::kFloat);
  int64_t offset = 0;
  for (auto& p : impl_->params) {
    p.copy_(f.narrow(0, offset, p.numel()).view(p.sizes()));
    offset += p.numel();
  }
}

at::Tensor StageModel::flat_gradients() const {
  std::vector<at::Tensor> parts;
  for (const auto& p : impl_->params)
    parts.push_back(p.grad().defined() ? p.grad().reshape({-1}) : torch::zeros({p.numel()}));
  if (parts.empty()) return torch::empty({0}, torch::kFloat);
  return torch::cat(parts).to(torch::kFloat);
}

void StageModel::zero_gradients() { impl_->zero_grads(); }

void StageModel::apply_gradients(const at::Tensor& flat_gradients) {
  if (!flat_gradients.defined() || flat_gradients.numel() != impl_->count)
    throw std::invalid_argument("apply_gradients: got " +
                                std::to_string(flat_gradients.defined() ? flat_gradients.numel() : 0) +
                                " values, the stage has " + std::to_string(impl_->count));
  const at::Tensor f = flat_gradients.reshape({-1}).to(torch::kFloat);
  std::vector<at::Tensor> grads;
  int64_t offset = 0;
  for (const auto& p : impl_->params) {
    grads.push_back(f.narrow(0, offset, p.numel()).view(p.sizes()));
    offset += p.numel();
  }
  impl_->optimizer.step(impl_->params, grads);
  impl_->zero_grads();
}

void StageModel::step() {
  std::vector<at::Tensor> grads;
  for (const auto& p : impl_->params) grads.push_back(p.grad());
  impl_->optimizer.step(impl_->params, grads);
  impl_->zero_grads();
}

Optimizer& StageModel::optimizer() { return impl_->optimizer; }
const Optimizer& StageModel::optimizer() const { return impl_->optimizer; }

at::Tensor StageModel::infer(const at::Tensor& input) const {
  torch::NoGradGuard no_grad;
  return impl_->run(impl_->prepare(input).detach());
}

std::vector<std::string> StageModel::layer_names() const {
  std::vector<std::string> names;
  for (const auto& l : impl_->layers) names.push_back(l.name);
  return names;
}

}  // namespace asteroid::compute
