#include "actors/schedule.h"

#include <algorithm>
#include <cassert>

namespace asteroid::actors {

std::string to_string(const Op& op) {
  return (op.kind == Op::Kind::forward ? "F" : "B") + std::to_string(op.microbatch);
}

OneFOneB::OneFOneB(int stage, int stages, int microbatches)
    : stage_(stage),
      stages_(stages),
      microbatches_(microbatches),
      window_(std::min(microbatches, stages - stage)) {
  assert(stage >= 0 && stage < stages && microbatches >= 1);
}

void OneFOneB::forward_ready(int microbatch) { inputs_ready_.insert(microbatch); }

void OneFOneB::backward_ready(int microbatch) { gradients_ready_.insert(microbatch); }

std::optional<Op> OneFOneB::next() {
  // Backwards run in micro-batch order; the oldest admitted one goes first.
  if (backwards_done_ < forwards_done_ && gradients_ready_.count(backwards_done_)) {
    gradients_ready_.erase(backwards_done_);
    return Op{Op::Kind::backward, backwards_done_++};
  }
  if (forwards_done_ < microbatches_ && in_flight() < window_ && inputs_ready_.count(forwards_done_)) {
    inputs_ready_.erase(forwards_done_);
    const int microbatch = forwards_done_++;
    if (is_last_stage()) gradients_ready_.insert(microbatch);
    return Op{Op::Kind::forward, microbatch};
  }
  return std::nullopt;
}

std::vector<Op> canonical_1f1b(int stage, int stages, int microbatches) {
  const int warmup = std::min(microbatches, stages - stage);
  std::vector<Op> order;
  int forward = 0, backward = 0;
  while (forward < warmup) order.push_back({Op::Kind::forward, forward++});
  while (forward < microbatches) {
    order.push_back({Op::Kind::backward, backward++});
    order.push_back({Op::Kind::forward, forward++});
  }
  while (backward < microbatches) order.push_back({Op::Kind::backward, backward++});
  return order;
}

}  // namespace asteroid::actors
