#include "supervision/stage_states.h"

#include <cstring>
#include <stdexcept>
#include <string>

namespace asteroid::supervision {

StateLayout::StateLayout(std::vector<int64_t> parameters, int copies) : copies_(copies) {
  offsets_.push_back(0);
  for (int64_t p : parameters) offsets_.push_back(offsets_.back() + p);
}

StateLayout StateLayout::of(const std::vector<planner::LayerInfo>& layers, OptimizerKind optimizer) {
  std::vector<int64_t> parameters;
  for (const auto& layer : layers) parameters.push_back(static_cast<int64_t>(layer.weight_bytes / sizeof(float)));
  return StateLayout(std::move(parameters), planner::optimizer_state_factor(optimizer));
}

int64_t StateLayout::parameters(int begin, int end) const { return offsets_.at(end) - offsets_.at(begin); }

messages::StageState StateLayout::assemble(int begin, int end, const std::vector<messages::StageState>& sources) const {
  const int layers = static_cast<int>(offsets_.size()) - 1;
  if (begin < 0 || end > layers || begin >= end) {
    throw std::invalid_argument("layer range " + std::to_string(begin) + "-" + std::to_string(end) + " outside 0-" +
                                std::to_string(layers));
  }
  const int64_t count = parameters(begin, end);
  std::vector<float> weights(static_cast<size_t>(count));
  std::vector<float> optimizer;
  bool with_optimizer = false;
  const messages::StageState* first = nullptr;
  const messages::StageState* without_optimizer = nullptr;  // a source with parameters but no optimizer state
  int covered_to = begin;
  while (covered_to < end) {
    const messages::StageState* source = nullptr;
    for (const auto& s : sources) {
      if (static_cast<int>(s.layer_begin) <= covered_to && covered_to < static_cast<int>(s.layer_end)) source = &s;
    }
    if (!source) throw std::invalid_argument("no state covers layer " + std::to_string(covered_to));
    if (!first) first = source;
    const int64_t source_params = parameters(static_cast<int>(source->layer_begin), static_cast<int>(source->layer_end));
    if (source_params > 0 && source->optimizer_state.bytes == 0) without_optimizer = source;
    // A stage of layers without parameters has no optimizer state to say
    // whether the others have one: the first source with parameters says.
    if (!with_optimizer && source->optimizer_state.bytes > 0) {
      with_optimizer = true;
      optimizer.resize(static_cast<size_t>(count * copies_));
    }
    if (source->round != first->round || source->optimizer_steps != first->optimizer_steps) {
      throw std::invalid_argument("states of layers " + std::to_string(first->layer_begin) + " and " +
                                  std::to_string(source->layer_begin) + " are of different rounds");
    }
    const int sb = static_cast<int>(source->layer_begin), se = static_cast<int>(source->layer_end);
    const int64_t source_count = parameters(sb, se);
    if (source->weights.bytes != static_cast<size_t>(source_count) * sizeof(float)) {
      throw std::invalid_argument("the state of layers " + std::to_string(sb) + "-" + std::to_string(se) + " has " +
                                  std::to_string(source->weights.bytes / sizeof(float)) + " weights, expected " +
                                  std::to_string(source_count));
    }
    const int upto = std::min(end, se);
    const int64_t from = offsets_[covered_to] - offsets_[sb];  // inside the source
    const int64_t to = offsets_[covered_to] - offsets_[begin];  // inside the result
    const int64_t n = offsets_[upto] - offsets_[covered_to];
    std::memcpy(weights.data() + to, source->weights.data + from * sizeof(float), n * sizeof(float));
    if (with_optimizer && source_count > 0) {
      if (source->optimizer_state.bytes != static_cast<size_t>(source_count * copies_) * sizeof(float)) {
        throw std::invalid_argument("the optimizer state of layers " + std::to_string(sb) + "-" + std::to_string(se) +
                                    " does not match its weights");
      }
      for (int c = 0; c < copies_; ++c) {
        std::memcpy(optimizer.data() + c * count + to,
                    source->optimizer_state.data + (c * source_count + from) * sizeof(float), n * sizeof(float));
      }
    }
    covered_to = upto;
  }
  if (with_optimizer && without_optimizer) {
    throw std::invalid_argument("the optimizer state of layers " + std::to_string(without_optimizer->layer_begin) +
                                "-" + std::to_string(without_optimizer->layer_end) + " does not match its weights");
  }
  messages::StageState out;
  out.round = first->round;
  out.layer_begin = static_cast<uint32_t>(begin);
  out.layer_end = static_cast<uint32_t>(end);
  out.optimizer_steps = first->optimizer_steps;
  out.job_id = first->job_id;
  out.weights = messages::TensorBlob::copy_of(messages::DType::float32, {count}, weights.data(),
                                              weights.size() * sizeof(float));
  if (with_optimizer) {
    out.optimizer_state = messages::TensorBlob::copy_of(messages::DType::float32, {count * copies_},
                                                        optimizer.data(), optimizer.size() * sizeof(float));
  }
  return out;
}

}  // namespace asteroid::supervision
