#include "planner/schedule.h"

#include <algorithm>
#include <cassert>

namespace asteroid::planner {

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

Op::Kind OneFOneB::due() const {
  // After a backward the window has room again and a forward is due; after
  // a forward that filled the window, a backward is due.
  if (forwards_done_ < microbatches_ && in_flight() < window_) return Op::Kind::forward;
  return Op::Kind::backward;
}

std::optional<Op> OneFOneB::next() {
  if (finished()) return std::nullopt;
  if (due() == Op::Kind::forward) {
    if (!inputs_ready_.count(forwards_done_)) return std::nullopt;
    inputs_ready_.erase(forwards_done_);
    const int microbatch = forwards_done_++;
    if (is_last_stage()) gradients_ready_.insert(microbatch);
    return Op{Op::Kind::forward, microbatch};
  }
  if (!gradients_ready_.count(backwards_done_)) return std::nullopt;
  gradients_ready_.erase(backwards_done_);
  return Op{Op::Kind::backward, backwards_done_++};
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

}  // namespace asteroid::planner
