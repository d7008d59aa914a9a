// Where a process's CAF connections go through, in one place: the
// connection manager every connect and remote spawn asks, publishing and
// unpublishing a node, and the rule for listening beyond the loopback.
//
// Connections are plain TCP: the runtime does not encrypt or authenticate
// yet (docs/security.md: CAF 0.17.6's OpenSSL module was tried and found
// unreliable here). So a node and the service listen on 127.0.0.1 unless
// told otherwise, and listening beyond the loopback needs --insecure.
#pragma once

#include <caf/fwd.hpp>
#include <caf/io/middleman_actor.hpp>

#include <chrono>
#include <cstdint>
#include <string>

namespace asteroid::actors {

// 127.0.0.0/8, ::1 or localhost.
bool is_loopback(const std::string& host);

// Refuses to listen on a non-loopback `host` unless `insecure` (then
// warns): what a node and the service do at start. Throws
// std::invalid_argument naming `what` and the address.
void check_plain_listening(const std::string& what, const std::string& host, bool insecure);

// The actor that connects to other processes and spawns on them.
caf::io::middleman_actor connection_manager(caf::actor_system& system);

// Publishes `handle` on host:port (port 0: any): the port, or CAF's error.
struct Published {
  uint16_t port = 0;
  std::string error;
};
Published publish_actor(caf::actor_system& system, const caf::actor& handle, uint16_t port, const std::string& host);
void unpublish_actor(caf::actor_system& system, const caf::actor& handle, uint16_t port);

// Spawns an actor type registered on a connected node: the actor, or
// CAF's error.
struct Spawned {
  caf::actor actor;
  std::string error;
};
Spawned remote_spawn_actor(caf::actor_system& system, const caf::node_id& node, const std::string& type,
                           std::chrono::milliseconds timeout);

}  // namespace asteroid::actors
