#include "actors/system_config.h"

#include <caf/blocking_actor.hpp>
#include <caf/io/middleman.hpp>
#include <caf/timespan.hpp>

#include "actors/node_context.h"
#include "actors/planner_actor.h"
#include "actors/stage_actor.h"
#include "actors/tls.h"
#include "messages/transport.h"

namespace asteroid::actors {

SystemOptions coordinator_options(const planner::Cluster& cluster) {
  SystemOptions options;
  if (cluster.tls_dir.empty()) return options;
  TlsIdentity identity{cluster.tls_dir, kCoordinatorId, std::nullopt};
  if (!cluster.tls_allow.empty()) {
    std::string joined;
    for (const auto& entry : cluster.tls_allow) joined += (joined.empty() ? "" : ",") + entry;
    try {
      identity.allow = parse_allow_list(joined);
    } catch (const std::invalid_argument& e) {
      throw std::runtime_error(std::string("the cluster's tls.allow: ") + e.what());
    }
  }
  options.tls = std::make_shared<TlsTransport>(identity);
  return options;
}

AsteroidConfig::AsteroidConfig(const SystemOptions& options) : AsteroidConfig(options, nullptr) {}

AsteroidConfig::AsteroidConfig(const SystemOptions& options, std::shared_ptr<NodeContext> node) : tls_(options.tls) {
  load<caf::io::middleman>();
  messages::add_wire_types(*this);
  set("middleman.heartbeat-interval", caf::timespan{options.heartbeat_interval});
  set("middleman.connection-timeout", caf::timespan{options.connection_timeout});
  // Peers reach each other directly, not through whoever introduced them,
  // so the loss of one node does not cut the others apart (CAF_NOTES 4).
  // With TLS every connection must go through a route (actors/tls.h): CAF
  // would connect to the loopback addresses peers publish on.
  set("middleman.enable-automatic-connections", tls_ == nullptr);
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
  if (!node) return;
  // What a coordinator may spawn on a node (transport.h's remote_spawn_actor
  // shows the authorization); anyone else's spawn ends at once, counted.
  add_actor_type("planner", [node](caf::blocking_actor* self, std::string authorization) {
    if (node->authorized(authorization, "spawn a planner")) planner_actor(self);
  });
  add_actor_type("stage", [node](caf::blocking_actor* self, std::string authorization) {
    if (node->authorized(authorization, "spawn a stage")) stage_actor(self, node);
  });
}

}  // namespace asteroid::actors
