// Where a process's CAF connections go through, in one place: the
// connection manager every connect and remote spawn asks, where CAF
// connects to reach a device, the authorization a coordinator shows a node,
// publishing and unpublishing a node, and the rule for listening beyond the
// loopback.
//
// Connections are plain TCP unless the process's actor system runs mutual
// TLS (SystemOptions::tls, actors/tls.h): then CAF reaches every device
// through a TLS route and shows each node the control token its gateway
// gave. Without TLS a node and the service listen on 127.0.0.1 unless told
// otherwise, and listening beyond the loopback needs --insecure.
#pragma once

#include <caf/fwd.hpp>
#include <caf/expected.hpp>
#include <caf/io/middleman_actor.hpp>
#include <caf/node_id.hpp>

#include "actors/mailbox.h"
#include "messages/transport.h"

#include <chrono>
#include <cstdint>
#include <future>
#include <string>

namespace asteroid::actors {

class TlsTransport;

// 127.0.0.0/8, ::1 or localhost.
bool is_loopback(const std::string& host);

// Refuses to listen on a non-loopback `host` unless `insecure` (then
// warns): what a node and the service do at start. Throws
// std::invalid_argument naming `what` and the address.
void check_plain_listening(const std::string& what, const std::string& host, bool insecure);

// The actor that connects to other processes and spawns on them.
caf::io::middleman_actor connection_manager(caf::actor_system& system);

// The TLS transport of `system` (SystemOptions::tls), or nullptr.
TlsTransport* tls_of(caf::actor_system& system);

// Where CAF connects to reach device `device_id` at host:port: there, or
// with TLS the loopback route to it (actors/tls.h), whose connection made
// ahead is `ready` (CAF's connect should wait for it: wait_ready).
struct Endpoint {
  std::string host;
  uint16_t port = 0;
  std::shared_future<void> ready;  // invalid without TLS
};
Endpoint caf_endpoint(caf::actor_system& system, const std::string& host, uint16_t port, const std::string& device_id);
// Waits until the endpoint's route is ready or the deadline passes: on the
// calling thread, or in `self`'s mailbox (a wait in a fiber host holds no
// thread; the route is looked at every 2 ms).
void wait_ready(const Endpoint& endpoint, std::chrono::steady_clock::time_point deadline);
void wait_ready(Mailbox& self, const Endpoint& endpoint, std::chrono::steady_clock::time_point deadline);
// Whether a failed connect is worth another try: CAF 0.17.6 drops a
// connection it opened when the peer's first message is later than its
// next heartbeat tick (connection_timeout at once), which a slow peer can be.
bool retry_connect(const caf::error& error);
// After a connection to host:port reached CAF node `node`: with TLS,
// remembers the control token its gateway gave this process.
void remember_node(caf::actor_system& system, const caf::node_id& node, const std::string& host, uint16_t port);
// What envelopes and spawns to actors on `node` carry as authorization:
// its control token (TLS, this process a coordinator), else empty.
std::string authorization_for(caf::actor_system& system, const caf::node_id& node);
// `message` as sent to `to`: with authorization_for(to's node).
messages::WireMessage wire_for(caf::actor_system& system, const caf::actor& to, const messages::Message& message);
// Why a connect to host:port failed: CAF's error, and with TLS the refusal
// behind it.
std::string connect_failure(caf::actor_system& system, const std::string& host, uint16_t port,
                            const std::string& caf_error);

// Publishes `handle` on host:port (port 0: any): the port, or CAF's error.
struct Published {
  uint16_t port = 0;
  std::string error;
};
Published publish_actor(caf::actor_system& system, const caf::actor& handle, uint16_t port, const std::string& host);
void unpublish_actor(caf::actor_system& system, const caf::actor& handle, uint16_t port);

// The connection manager's answers, waited for in `self`'s mailbox: each
// request is made by a short-lived helper actor that hands the answer over,
// so a wait in a fiber host (actors/fiber_host.h) holds no thread. The
// request's deadline bounds the wait.
//
// Connects to the CAF node at host:port: its id and the actor published
// there, or CAF's error.
struct NodeHandle {
  caf::node_id id;
  caf::actor actor;
};
caf::expected<NodeHandle> connect_to(Mailbox& self, const Endpoint& to, std::chrono::milliseconds timeout);
// Spawns an actor type registered on a connected node, showing it
// authorization_for(node): the actor, or CAF's error.
struct Spawned {
  caf::actor actor;
  std::string error;
};
Spawned remote_spawn_actor(Mailbox& self, const caf::node_id& node, const std::string& type,
                           std::chrono::milliseconds timeout);

}  // namespace asteroid::actors
