// A resume's second source of state: the nodes. A coordinator that dies
// leaves its nodes running, and they still keep the job's last committed
// states and replicas (actors/kept_states.h), often of rounds newer than
// the last checkpoint. newest_covered picks the newest round whose kept
// states cover every layer and that is known to be committed;
// newer_node_states asks the nodes and assembles those states onto a plan.
#pragma once

#include <caf/fwd.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "messages/envelope.h"
#include "planner/types.h"
#include "supervision/stage_states.h"

namespace asteroid::supervision {

struct KeptOn {
  std::string device;
  messages::KeptEntry entry;
};

struct Covering {
  uint64_t round = 0;
  std::vector<KeptOn> pieces;  // in layer order, together covering [0, layers)
};

// The newest round r in (after, at_most] whose kept states cover layers
// [0, layers) when some node committed r or a later round (rounds commit
// in order, so a commit of r' >= r means r committed too; a replica alone
// may be of a round that never committed). nullopt when there is none.
std::optional<Covering> newest_covered(const std::vector<KeptOn>& kept, uint32_t layers, uint64_t after,
                                       uint64_t at_most);

struct NodeStates {
  uint64_t round = 0;
  std::vector<messages::StageState> states;  // one per stage of the plan
  std::string sources;                       // "[0,2) d0 | [2,6) d3" for the log
};

// Asks every device of `cluster` that answers within `timeout` what it
// keeps of `job_id`, and returns newest_covered(...)'s states assembled
// onto `plan`'s stages; nullopt when the nodes keep nothing newer, or a
// node failed to hand over a piece (then the caller keeps its checkpoint;
// the reason is logged).
std::optional<NodeStates> newer_node_states(caf::actor_system& system, const planner::Cluster& cluster,
                                            const std::string& job_id, const planner::Plan& plan,
                                            const StateLayout& layout, uint64_t after, uint64_t at_most,
                                            std::chrono::milliseconds timeout);

}  // namespace asteroid::supervision
