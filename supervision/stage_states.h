// Cutting and gluing stage states by layer. A StageState is flat: its
// weights are the parameters of layers [begin, end) in layer order, and its
// optimizer state is that same layout repeated once per optimizer buffer
// (momentum: once; Adam: exp_avg then exp_avg_sq). So when a re-plan moves
// layers between stages, the state of any new layer range can be assembled
// from the old stages' states without Torch.
#pragma once

#include <cstdint>
#include <vector>

#include "messages/envelope.h"
#include "planner/types.h"

namespace asteroid::supervision {

class StateLayout {
 public:
  // parameters[l]: parameter count of layer l; copies: optimizer buffers per
  // parameter (0 for SGD, 1 for momentum, 2 for Adam).
  StateLayout(std::vector<int64_t> parameters, int copies);
  // The layout of a model's layers (their float32 weights) under `optimizer`.
  static StateLayout of(const std::vector<planner::LayerInfo>& layers, OptimizerKind optimizer);

  int64_t parameters(int begin, int end) const;

  // The state of layers [begin, end), taken from `sources` (states of
  // consecutive or overlapping layer ranges, any order) that together cover
  // them; all sources must be of the same round. Throws std::invalid_argument
  // naming the gap or the mismatch.
  messages::StageState assemble(int begin, int end, const std::vector<messages::StageState>& sources) const;

 private:
  std::vector<int64_t> offsets_;  // offsets_[l]: parameters before layer l; offsets_[L]: total
  int copies_;
};

}  // namespace asteroid::supervision
