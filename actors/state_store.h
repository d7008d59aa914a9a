// What a stage member keeps of its states between rounds, as a pure class
// (no actors, no Torch: the state type is a parameter): the committed state
// (what an abort rolls back to), the rounds the coordinator asked it to keep
// until they commit (replica rounds), and its two newest stepped states.
// Nothing older can be asked for: the coordinator starts at most one round
// ahead of the newest round it saw done, and asks to keep, or commits, only
// rounds it saw done. So however far commits lag behind (paced replication),
// a member holds at most the committed state, the kept ones and two more.
#pragma once

#include <cstdint>
#include <iterator>
#include <map>
#include <set>
#include <utility>

namespace asteroid::actors {

template <typename State>
class StateStore {
 public:
  static constexpr size_t kNewestStepped = 2;

  // `committed_round` -1: the state before round 0.
  StateStore(int64_t committed_round, State committed)
      : committed_round_(committed_round), committed_(std::move(committed)) {}

  int64_t committed_round() const { return committed_round_; }
  const State& committed() const { return committed_; }
  State& committed() { return committed_; }

  // The state after `round` stepped here; older stepped states that are
  // neither kept nor among the newest two are forgotten.
  const State& stepped(uint64_t round, State state) {
    const State& stored = stepped_[round] = std::move(state);
    size_t newer = 0;
    for (auto it = stepped_.rbegin(); it != stepped_.rend();) {
      if (newer++ < kNewestStepped || kept_.count(it->first)) {
        ++it;
      } else {
        it = decltype(it)(stepped_.erase(std::next(it).base()));
      }
    }
    return stored;
  }

  // The state after `round`, committed or stepped, or nullptr.
  const State* find(uint64_t round) const {
    if (auto it = stepped_.find(round); it != stepped_.end()) return &it->second;
    return committed_round_ == static_cast<int64_t>(round) ? &committed_ : nullptr;
  }

  // Keeps `round`'s state until it commits; nullptr when it is not held.
  const State* keep(uint64_t round) {
    const State* state = find(round);
    if (state) kept_.insert(round);
    return state;
  }

  // `round` becomes the committed state and everything older goes. False
  // when this member does not hold it (and it is not already committed).
  bool commit(uint64_t round) {
    auto it = stepped_.find(round);
    if (it == stepped_.end()) return committed_round_ == static_cast<int64_t>(round);
    committed_ = std::move(it->second);
    committed_round_ = static_cast<int64_t>(round);
    stepped_.erase(stepped_.begin(), std::next(it));
    kept_.erase(kept_.begin(), kept_.upper_bound(round));
    return true;
  }

  // Forgets every state not committed (an abort, a new assignment).
  void forget_uncommitted() {
    stepped_.clear();
    kept_.clear();
  }

  // Starts over from `state` as the committed state of `round`.
  void reset(int64_t round, State state) {
    forget_uncommitted();
    committed_round_ = round;
    committed_ = std::move(state);
  }

  size_t stepped_count() const { return stepped_.size(); }

 private:
  int64_t committed_round_;
  State committed_;
  std::map<uint64_t, State> stepped_;
  std::set<uint64_t> kept_;
};

}  // namespace asteroid::actors
