#include "compute/evaluate.h"

#include <torch/torch.h>

#include <algorithm>
#include <stdexcept>

#include "compute/model_zoo.h"

namespace asteroid::compute {

EvalResult evaluate(const StageModel& model, const Dataset& data, int64_t batch, int64_t limit) {
  if (!model.is_first() || !model.is_last())
    throw std::invalid_argument("evaluate needs the whole model, got layers [" +
                                std::to_string(model.begin()) + ", " + std::to_string(model.end()) + ")");
  if (batch <= 0) throw std::invalid_argument("evaluation batch must be positive");
  const int64_t n = limit > 0 ? std::min(limit, data.size()) : data.size();
  EvalResult r;
  double loss = 0;
  int64_t correct = 0;
  for (int64_t start = 0; start < n; start += batch) {
    std::vector<int64_t> idx;
    for (int64_t i = start; i < std::min(n, start + batch); ++i) idx.push_back(i);
    const Batch b = data.get(idx);
    const at::Tensor logits = model.infer(b.inputs);
    loss += torch::nn::functional::cross_entropy(
                logits, b.labels, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                .item<double>();
    correct += logits.argmax(1).eq(b.labels).sum().item<int64_t>();
  }
  r.samples = n;
  if (n > 0) {
    r.accuracy = double(correct) / double(n);
    r.mean_loss = loss / double(n);
  }
  return r;
}

EvalResult evaluate_weights(const std::string& model, const at::Tensor& flat_weights,
                            const Dataset& data, int64_t batch, int64_t limit) {
  StageModel whole(model, 0, layer_count(model), 0, default_optimizer_config(OptimizerKind::sgd));
  whole.set_flat_weights(flat_weights);
  return evaluate(whole, data, batch, limit);
}

}  // namespace asteroid::compute
