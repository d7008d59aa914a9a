// Human-readable tables of a plan and of its simulation: what
// `asteroid plan --explain` and `asteroid simulate` print. Pure functions
// returning strings, so the runtime can print the same tables.
#pragma once

#include <string>

#include "planner/cost_model.h"
#include "planner/profile_tables.h"
#include "planner/simulator.h"
#include "planner/types.h"

namespace asteroid::planner {

// Stages (layer ranges, devices and samples, Ef/Eb/Ta, the all-reduce's
// codec, memory use in % per device), the transfer steps (bandwidth, codec,
// bytes per sample on the wire, codec time), the dominant step, T_round,
// throughput, feasibility, the evaluation's warnings and, when
// planning_ms >= 0, the planning time.
std::string explain_plan(const Plan& plan, const Evaluation& evaluation, double planning_ms = -1);

// The simulated round next to the cost model's, the bubble fraction, each
// device's busy / all-reduce / idle time, and the step x stage grid.
std::string explain_simulation(const Plan& plan, const Evaluation& evaluation,
                               const Simulation& simulation);

}  // namespace asteroid::planner
