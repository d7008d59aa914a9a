// The planner as a CAF actor, so the coordinator and the supervisor ask for
// plans and re-plans by message and the planner can live on any node.
// Request: WireMessage{planRequest} (cluster, profile, strategy, batch, M;
// for a re-plan also the running plan and the devices lost or added).
// Reply: WireMessage{planResult} (the plan as plan.json text, or the reason
// no plan fits, plus the --explain table). Planning is pure computation on
// an actor of its own thread (blocking actor), never on the scheduler.
//
// A request with `rank` is a job's first plan: the search's candidates
// ranked (planner/rank.h); the result's plan_json is then the whole
// plan.json (the plan, its evaluation and the ranking) and single_plan_json
// the best device alone. Without it: the strategy's plan, or a re-plan.
#pragma once

#include <caf/fwd.hpp>

#include <chrono>
#include <string>

#include "actors/mailbox.h"
#include "messages/envelope.h"
#include "planner/types.h"

namespace asteroid::actors {

void planner_actor(caf::blocking_actor* self);

// The planning itself, without the actor (what the actor runs per request).
messages::PlanResult plan_for(const messages::PlanRequest& request);

// The planner actor on the node of `device` (remote spawn on the node at
// its cluster host and port), or in this process when `device` is empty;
// the connection and the spawn are awaited in `asker`. Throws
// std::runtime_error naming the device when it cannot.
caf::actor spawn_planner(Mailbox& asker, const planner::Cluster& cluster, const std::string& device,
                         std::chrono::milliseconds timeout);

// A planner's answer to `request` within `timeout`, awaited in `asker`
// (a job's driver's mailbox: its body waits without holding a thread);
// throws std::runtime_error saying what went wrong (no answer in time, an
// error reply, a reply of another kind). A result without a plan is an
// answer.
messages::PlanResult request_plan(Mailbox& asker, const caf::actor& planner,
                                  const messages::PlanRequest& request, std::chrono::milliseconds timeout);

}  // namespace asteroid::actors
