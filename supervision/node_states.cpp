#include "supervision/node_states.h"

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <set>

#include "actors/ask.h"
#include "actors/connect.h"

namespace asteroid::supervision {

std::optional<Covering> newest_covered(const std::vector<KeptOn>& kept, uint32_t layers, uint64_t after,
                                       uint64_t at_most) {
  uint64_t newest_commit = 0;
  bool any_commit = false;
  std::map<uint64_t, std::vector<const KeptOn*>, std::greater<>> by_round;
  for (const auto& k : kept) {
    if (k.entry.committed) {
      newest_commit = any_commit ? std::max(newest_commit, k.entry.round) : k.entry.round;
      any_commit = true;
    }
    by_round[k.entry.round].push_back(&k);
  }
  if (!any_commit) return std::nullopt;
  for (const auto& [round, pieces] : by_round) {
    if (round <= after) break;
    if (round > at_most || round > newest_commit) continue;
    // Interval cover of [0, layers): at each point, the piece reaching furthest.
    Covering cover{round, {}};
    uint32_t at = 0;
    while (at < layers) {
      const KeptOn* best = nullptr;
      for (const KeptOn* p : pieces) {
        if (p->entry.layer_begin <= at && p->entry.layer_end > at &&
            (!best || p->entry.layer_end > best->entry.layer_end)) {
          best = p;
        }
      }
      if (!best) break;
      cover.pieces.push_back(*best);
      at = best->entry.layer_end;
    }
    if (at >= layers) return cover;
  }
  return std::nullopt;
}

std::optional<NodeStates> newer_node_states(caf::actor_system& system, const planner::Cluster& cluster,
                                            const std::string& job_id, const planner::Plan& plan,
                                            const StateLayout& layout, uint64_t after, uint64_t at_most,
                                            std::chrono::milliseconds timeout) {
  if (plan.stages.empty()) return std::nullopt;
  actors::ScopedMailbox self(system);
  std::map<std::string, caf::actor> nodes;
  std::vector<KeptOn> kept;
  for (const auto& d : cluster.devices) {
    if (d.host.empty() || d.port <= 0) continue;
    std::string failure;
    auto node = actors::connect_node(self, d, timeout, failure);
    if (!node) continue;  // a device that is down keeps nothing we can have
    auto answer = actors::ask(self, node->actor, messages::KeptRequest{job_id}, timeout, failure);
    auto* list = answer ? std::get_if<messages::KeptList>(&*answer) : nullptr;
    if (!list) continue;
    nodes[d.id] = node->actor;
    for (const auto& entry : list->entries) kept.push_back({d.id, entry});
  }
  const auto cover = newest_covered(kept, static_cast<uint32_t>(plan.stages.back().end), after, at_most);
  if (!cover) return std::nullopt;
  NodeStates out;
  out.round = cover->round;
  std::vector<messages::StageState> pieces;
  for (const auto& piece : cover->pieces) {
    const auto& e = piece.entry;
    std::string failure;
    auto answer = actors::ask(self, nodes.at(piece.device),
                              messages::ReplicaRequest{job_id, e.layer_begin, e.layer_end, e.round}, timeout, failure);
    auto* state = answer ? std::get_if<messages::StageState>(&*answer) : nullptr;
    if (!state) {
      spdlog::warn("resume: device '{}' did not hand over its state of layers [{}, {}) at round {} ({}); "
                   "resuming from the checkpoint",
                   piece.device, e.layer_begin, e.layer_end, e.round,
                   answer ? messages::kind_name(*answer) : failure);
      return std::nullopt;
    }
    pieces.push_back(std::move(*state));
    out.sources += (out.sources.empty() ? "" : " | ") + std::string("[") + std::to_string(e.layer_begin) + "," +
                   std::to_string(e.layer_end) + ") " + piece.device;
  }
  try {
    for (const auto& stage : plan.stages) out.states.push_back(layout.assemble(stage.begin, stage.end, pieces));
  } catch (const std::invalid_argument& e) {
    spdlog::warn("resume: the nodes' states of round {} do not fit the plan ({}); resuming from the checkpoint",
                 cover->round, e.what());
    return std::nullopt;
  }
  return out;
}

}  // namespace asteroid::supervision
