#include "actors/kept_states.h"

#include <algorithm>

namespace asteroid::actors {
namespace {

uint64_t bytes_of(const messages::StageState& s) {
  return s.weights.bytes + s.weights.scale_bytes + s.optimizer_state.bytes + s.optimizer_state.scale_bytes;
}

// Erases the entries of `map` that belong to the release's job and whose
// range it does not keep; returns how many states went.
template <typename Map, typename Count>
size_t erase_released(Map& map, const messages::Release& release, Count states_in) {
  size_t dropped = 0;
  for (auto it = map.begin(); it != map.end();) {
    const auto& [job, begin, end] = it->first;
    const bool kept = job != release.job_id ||
                      (!release.keep.empty() && std::find(release.keep.begin(), release.keep.end(),
                                                          messages::LayerRange{begin, end}) != release.keep.end());
    if (kept) {
      ++it;
    } else {
      dropped += states_in(it->second);
      it = map.erase(it);
    }
  }
  return dropped;
}

}  // namespace

void KeptStates::keep_committed(const messages::StageState& state) {
  committed_[{state.job_id, state.layer_begin, state.layer_end}] = state;
}

void KeptStates::store_replica(messages::StageState state) {
  auto& rounds = replicas_[{state.job_id, state.layer_begin, state.layer_end}];
  const uint64_t round = state.round;
  rounds[round] = std::move(state);
  while (rounds.size() > kReplicaRounds) rounds.erase(rounds.begin());
}

std::optional<messages::StageState> KeptStates::find(const std::string& job, uint32_t begin, uint32_t end,
                                                     uint64_t round) const {
  const Key key{job, begin, end};
  if (auto it = committed_.find(key); it != committed_.end() && it->second.round == round) return it->second;
  if (auto it = replicas_.find(key); it != replicas_.end()) {
    if (auto r = it->second.find(round); r != it->second.end()) return r->second;
  }
  return std::nullopt;
}

std::vector<messages::KeptEntry> KeptStates::list(const std::string& job) const {
  std::vector<messages::KeptEntry> entries;
  for (const auto& [key, state] : committed_) {
    if (std::get<0>(key) == job) entries.push_back({state.layer_begin, state.layer_end, state.round, true});
  }
  for (const auto& [key, rounds] : replicas_) {
    if (std::get<0>(key) != job) continue;
    for (const auto& [round, state] : rounds) entries.push_back({state.layer_begin, state.layer_end, round, false});
  }
  return entries;
}

size_t KeptStates::release(const messages::Release& release) {
  return erase_released(committed_, release, [](const messages::StageState&) { return size_t{1}; }) +
         erase_released(replicas_, release, [](const auto& rounds) { return rounds.size(); });
}

uint64_t KeptStates::bytes() const {
  uint64_t total = 0;
  for (const auto& [key, state] : committed_) total += bytes_of(state);
  for (const auto& [key, rounds] : replicas_) {
    for (const auto& [round, state] : rounds) total += bytes_of(state);
  }
  return total;
}

uint32_t KeptStates::count() const {
  size_t total = committed_.size();
  for (const auto& [key, rounds] : replicas_) total += rounds.size();
  return static_cast<uint32_t>(total);
}

}  // namespace asteroid::actors
