#include "actors/system_config.h"

#include <caf/blocking_actor.hpp>
#include <caf/io/middleman.hpp>
#include <caf/timespan.hpp>

#include "actors/node_context.h"
#include "actors/planner_actor.h"
#include "actors/stage_actor.h"
#include "messages/transport.h"

namespace asteroid::actors {

AsteroidConfig::AsteroidConfig(const SystemOptions& options) {
  load<caf::io::middleman>();
  messages::add_wire_types(*this);
  set("middleman.heartbeat-interval", caf::timespan{options.heartbeat_interval});
  set("middleman.connection-timeout", caf::timespan{options.connection_timeout});
  // Peers reach each other directly, not through whoever introduced them,
  // so the loss of one node does not cut the others apart (CAF_NOTES 4).
  set("middleman.enable-automatic-connections", true);
  set("scheduler.max-threads", options.scheduler_threads);
  // An idle work-stealing worker polls its queue with 50 us sleeps for
  // about 25 ms (the "moderate" phase) before it waits on its condition
  // variable, which an enqueue signals. Every message that wakes a worker
  // therefore costs milliseconds of CPU; on a device with a small CPU share
  // that was 40 % of its budget (a 0.12-core node trained at 0.61 of its
  // in-process speed; 1.00 without the phase, docs/runtime.md). Workers go
  // to the condition variable after a short spin instead.
  set("work-stealing.aggressive-poll-attempts", 10);
  set("work-stealing.moderate-poll-attempts", 0);
  // Any process can host the planner; a coordinator spawns it where it wants.
  add_actor_type("planner", planner_actor);
}

AsteroidConfig::AsteroidConfig(const SystemOptions& options, std::shared_ptr<NodeContext> node)
    : AsteroidConfig(options) {
  add_actor_type("stage", [node](caf::blocking_actor* self) { stage_actor(self, node); });
}

}  // namespace asteroid::actors
