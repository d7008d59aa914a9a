// The planner as a CAF actor, so the coordinator and the supervisor ask for
// plans and re-plans by message and the planner can live on any node.
// Request: WireMessage{planRequest} (cluster, profile, strategy, batch, M;
// for a re-plan also the running plan and the devices lost or added).
// Reply: WireMessage{planResult} (the plan as plan.json text, or the reason
// no plan fits, plus the --explain table). Planning is pure computation on
// an actor of its own thread (blocking actor), never on the scheduler.
#pragma once

#include <caf/fwd.hpp>

#include "messages/envelope.h"

namespace asteroid::actors {

void planner_actor(caf::blocking_actor* self);

// The planning itself, without the actor (what the actor runs per request).
messages::PlanResult plan_for(const messages::PlanRequest& request);

}  // namespace asteroid::actors
