// The 1F1B rule that makes the pipeline schedule emerge from message flow,
// as a small pure class (no actors, no clock). Stage p of P admits at most
// K_p = min(M, P - p) micro-batches whose backward has not come back: K_p
// warm-up forwards, then, with the window full, a backward must come back
// before the next forward is admitted, and the stage alternates one backward
// and one forward; the remaining backwards close the round. Micro-batches go
// in order. A stage member tells the rule what became ready (inputs arrived,
// gradients arrived) and asks it what to run next; the rule answers only
// with the next op of that order, so every stage runs the canonical 1F1B
// order whatever the timing (a greedy "any ready backward first" would
// reorder under jitter, and the order would no longer be reproducible).
//
// On the last stage a forward's backward is ready as soon as the forward
// ran (the loss is local), which gives its F B F B ... order.
//
// The one rule of the project: the stage actors run it, and the simulator
// (planner/simulator.h) drives its members with it.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace asteroid::planner {

struct Op {
  enum class Kind : uint8_t { forward, backward };
  Kind kind = Kind::forward;
  int microbatch = 0;
  bool operator==(const Op& o) const { return kind == o.kind && microbatch == o.microbatch; }
};

// "F3" / "B3".
std::string to_string(const Op& op);

class OneFOneB {
 public:
  // REQUIRES: 0 <= stage < stages, microbatches >= 1.
  OneFOneB(int stage, int stages, int microbatches);

  // K_p = min(M, P - p).
  int window() const { return window_; }
  bool is_last_stage() const { return stage_ + 1 == stages_; }

  // The input of forward `microbatch` is complete (on the first stage: the
  // data source has it, which is always true).
  void forward_ready(int microbatch);
  // The output gradient of `microbatch` is complete (not used on the last stage).
  void backward_ready(int microbatch);

  // The op to run now, or nothing (waiting for messages or done). Marks it
  // as started: the caller must run it.
  std::optional<Op> next();

  // Micro-batches admitted whose backward has not run yet.
  int in_flight() const { return forwards_done_ - backwards_done_; }
  int forwards_done() const { return forwards_done_; }
  int backwards_done() const { return backwards_done_; }
  // All M backwards ran.
  bool finished() const { return backwards_done_ == microbatches_; }

 private:
  // The kind of op due next: forward while the window has room (and
  // forwards remain), else backward.
  Op::Kind due() const;

  int stage_, stages_, microbatches_, window_;
  int forwards_done_ = 0;   // forwards admitted, in order 0, 1, ...
  int backwards_done_ = 0;
  std::set<int> inputs_ready_;
  std::set<int> gradients_ready_;
};

// The canonical 1F1B order of one stage: K_p warm-up forwards, then one
// backward and one forward alternately, then the remaining backwards.
std::vector<Op> canonical_1f1b(int stage, int stages, int microbatches);

}  // namespace asteroid::planner
