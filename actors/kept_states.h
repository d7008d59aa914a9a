// What a node keeps of jobs' stage states so that they can recover: the
// committed state of every stage it hosts (a stage actor that failed
// restarts from it) and the replicas that other devices' stages ship to it
// (the two newest rounds of each), by job and layer range. A job's
// coordinator releases the ranges of a superseded plan once the new plan
// has committed a round, and everything of the job when it finishes
// (messages::Release), so a long-lived node keeps only what running jobs
// may still ask for. Pure and not thread-safe: NodeContext locks it.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "messages/envelope.h"

namespace asteroid::actors {

class KeptStates {
 public:
  static constexpr size_t kReplicaRounds = 2;

  // The committed state of a stage hosted here (one per job and range).
  void keep_committed(const messages::StageState& state);
  // A replica of another device's stage; older rounds of its range beyond
  // the newest kReplicaRounds go.
  void store_replica(messages::StageState state);
  // The state of `round` of those layers, committed here or a replica.
  std::optional<messages::StageState> find(const std::string& job, uint32_t begin, uint32_t end,
                                           uint64_t round) const;
  // Every state kept of `job`: range, round, committed or replica.
  std::vector<messages::KeptEntry> list(const std::string& job) const;
  // Drops the job's states of ranges not in release.keep (all of the job's
  // when keep is empty); returns how many went.
  size_t release(const messages::Release& release);

  // What is kept: tensor bytes (weights and optimizer state) and states.
  uint64_t bytes() const;
  uint32_t count() const;

 private:
  using Key = std::tuple<std::string, uint32_t, uint32_t>;  // job, layer range
  std::map<Key, messages::StageState> committed_;
  std::map<Key, std::map<uint64_t, messages::StageState>> replicas_;  // by round
};

}  // namespace asteroid::actors
