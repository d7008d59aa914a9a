// The baselines the hpp search is measured against (COST_MODEL.md, and the
// best device alone), each the best plan of its restricted shape by the cost
// model: `dp` one stage over every device, samples split as evenly as they
// go, M searched as configured; `single` one stage on one device at its best M
// (always searched), for every device, the fastest (ties: the device first
// in the cluster). `pp` (one
// device per stage) is a restricted hpp search and lives in search.h.
#pragma once

#include "planner/search.h"

namespace asteroid::planner {

// REQUIRES what plan_hpp requires; throws std::invalid_argument otherwise.
PlanResult plan_dp(const ProfileTables& tables, const TrainingConfig& config);
// Infeasible, with the reason, when the model fits on no device alone. The
// plan's idle_devices are all the others.
PlanResult plan_single(const ProfileTables& tables, const TrainingConfig& config);

}  // namespace asteroid::planner
