// Re-planning for supervision: given the running plan and the devices lost
// (or added), a new plan, its T_round, whether it fits, and which layers
// (and how many bytes) each device must receive before training resumes.
//
// Lightweight (replan_lightweight), in this order:
//   1. every stage keeps its layers on its surviving members, which re-split
//      the samples (Algorithm 1);
//   2. a stage whose whole group is lost moves its layers to the neighbour
//      that holds its replica: the next stage (replica_holder(): the first
//      device of the next stage's group), or, for the last stage, the stage
//      before it (its replica sits on the first stage, and layers must stay
//      contiguous; the bytes still come from the replica holder);
//   2b. (step_out) instead, one member of a neighbouring group of two or
//      more may leave it to run the orphaned stage alone, where that lowers
//      T_round (its layers then come from the replica holder);
//   3. each added device joins the group where it lowers T_round most (or
//      stays idle);
//   4. optionally, layers shift between adjacent stages, at most
//      `max_shift` per boundary, while that lowers T_round (or, first, while
//      it reduces the number of stages that do not fit in memory);
//   5. if the result still does not fit but the heavy plan does, the heavy
//      plan is returned (fell_back_to_heavy).
// Heavy (replan_heavy): the hpp search over the surviving (and added)
// devices, with the running plan's batch, M and codec block and the
// config's wire policy.
//
// Codecs (config.wire): the lightweight plan's codecs are chosen afresh for
// its groups every time a candidate is scored (choose_codecs in search.h:
// each all-reduce its fastest usable codec, each boundary its fastest
// usable one, then one greedy pass over the boundaries on T_round), so a
// codec is never left on a link whose new devices have no speed for it.
//
// Bytes moved count weights and optimizer state, W (1 + k_opt) per layer.
// A move's source is a surviving device that held the layers (a group
// member, or the replica holder) or "checkpoint" when none survives.
#pragma once

#include <string>
#include <vector>

#include "planner/cost_model.h"
#include "planner/profile_tables.h"
#include "planner/search.h"
#include "planner/types.h"

namespace asteroid::planner {

struct LayerMove {
  std::string device;  // receives layers [begin, end)
  int begin = 0, end = 0;
  double bytes = 0;
  std::string source;  // device id, or "checkpoint"
  bool local = false;  // the device held these layers as a replica: nothing crosses a link
};

struct ReplanResult {
  bool feasible = false;
  std::string why;  // when not feasible
  Plan plan;
  Evaluation evaluation;
  std::vector<LayerMove> moves;
  int layers_moved = 0;   // sum of (end - begin) over moves that are not local
  double bytes_moved = 0;  // sum of bytes over moves that are not local
  bool fell_back_to_heavy = false;
  double planning_ms = 0;
};

struct ReplanOptions {
  int max_shift = 2;        // layers per boundary in step 4; 0 disables it
  bool step_out = true;     // step 2b; false: survivors keep their stages
  bool fall_back_to_heavy = true;
};

// `cluster` must contain the running plan's devices and the added ones;
// `config` gives the optimizer (batch and M are the running plan's; with
// search_microbatches the heavy plan may change M). Throws
// std::invalid_argument for an unknown lost/added id or an invalid plan.
ReplanResult replan_lightweight(const Plan& running, const Cluster& cluster, const Profile& profile,
                                const TrainingConfig& config, const std::vector<std::string>& lost,
                                const std::vector<std::string>& added = {},
                                const ReplanOptions& options = {});
ReplanResult replan_heavy(const Plan& running, const Cluster& cluster, const Profile& profile,
                          const TrainingConfig& config, const std::vector<std::string>& lost,
                          const std::vector<std::string>& added = {});

// Layers each device of `after` holds that it did not hold in `before`,
// split by the stages of `before` so that each move has one source.
std::vector<LayerMove> layer_moves(const Plan& before, const Plan& after, const ProfileTables& tables,
                                   OptimizerKind optimizer, const std::vector<std::string>& lost);

}  // namespace asteroid::planner
