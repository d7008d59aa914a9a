// The heartbeat monitor: a CAF actor that watches every device's node with
// periodic heartbeats and a deadline, together with CAF's own down
// notifications, and tells a listener (lost_atom, id) when a device dies and
// (back_atom, id) when a lost device answers again. A frozen node (SIGSTOP:
// its socket stays open) misses heartbeats like a killed one; a node whose
// CPU is saturated still answers (its node actor has a thread of its own) and
// is not declared dead. No request waits without a deadline.
#pragma once

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

#include <map>
#include <string>

#include "planner/types.h"
#include "supervision/health.h"

namespace asteroid::supervision {

struct MonitorSetup {
  HeartbeatOptions options;
  caf::actor listener;                      // REQUIRED: where lost/back go
  std::map<std::string, caf::actor> nodes;  // device id -> node actor, watched from the start
  // Every device that may come (back): where to reconnect to it.
  std::map<std::string, planner::Device> addresses;
  std::chrono::milliseconds reconnect_every{1000};
};

// Spawns the monitor. Stop it with anon_send_exit when the job ends.
caf::actor spawn_heartbeat_monitor(caf::actor_system& system, const MonitorSetup& setup);

}  // namespace asteroid::supervision
