// The heartbeat monitor: a CAF actor that watches every device's node with
// periodic heartbeats and a deadline, together with CAF's own down
// notifications, and tells a listener (lost_atom, id) when a device dies and
// (back_atom, id) when a lost device answers again: when its node accepts a
// connection again and then answers a heartbeat (a frozen node's old
// connection may still stand; it is back only once thawed). Heartbeats are datagrams
// by default (HeartbeatOptions::transport; actors/heartbeat_datagram.h), so
// a node busy sending bulk data over its CAF connection still answers in
// time. A frozen node (SIGSTOP: its sockets stay open) misses heartbeats like
// a killed one; a node whose CPU is saturated still answers (heartbeats have
// a thread of their own) and is not declared dead. No request waits without
// a deadline.
#pragma once

#include <caf/actor.hpp>
#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "actors/atoms.h"
#include "planner/types.h"
#include "supervision/health.h"

namespace asteroid::supervision {

struct MonitorSetup {
  HeartbeatOptions options;
  caf::actor listener;                      // REQUIRED: where lost/back go
  std::map<std::string, caf::actor> nodes;  // device id -> node actor, watched from the start
  // Every device that may come (back): where to reconnect to it.
  std::map<std::string, planner::Device> addresses;
  // Where each device's node listens (host, port): heartbeat datagrams go to
  // UDP `port` there. A watched device found neither here nor in
  // `addresses` gets actor heartbeats.
  std::map<std::string, planner::Device> endpoints;
  std::chrono::milliseconds reconnect_every{1000};
  // Optional: every heartbeat answered within the deadline, with its round
  // trip (tests, diagnostics). Called on the monitor's thread.
  std::function<void(const std::string& device, std::chrono::microseconds round_trip)> on_round_trip;
};

// The monitor's interface: its own tick, and the replies its datagram
// pinger hands it (everything else it hears is CAF's: down notifications,
// answers to its requests).
using heartbeat_monitor_actor =
    caf::typed_actor<caf::reacts_to<actors::tick_atom>,
                     caf::reacts_to<actors::heartbeat_reply_atom, std::string, uint64_t, int64_t,
                                    std::vector<std::string>, std::string>>;

// Spawns the monitor. Stop it with anon_send_exit when the job ends.
heartbeat_monitor_actor spawn_heartbeat_monitor(caf::actor_system& system, const MonitorSetup& setup);

}  // namespace asteroid::supervision
