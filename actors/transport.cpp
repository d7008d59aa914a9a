#include "actors/transport.h"

#include "actors/system_config.h"
#include "actors/tls.h"

#include <caf/actor_system.hpp>
#include <caf/io/middleman.hpp>
#include <caf/scoped_actor.hpp>
#include <spdlog/spdlog.h>

#include <set>
#include <stdexcept>

namespace asteroid::actors {

bool is_loopback(const std::string& host) {
  return host.rfind("127.", 0) == 0 || host == "::1" || host == "localhost";
}

void check_plain_listening(const std::string& what, const std::string& host, bool insecure) {
  if (is_loopback(host)) return;
  if (!insecure) {
    throw std::invalid_argument(what + " would listen on " + host +
                                " without encryption or authentication: anyone who reaches it could use it "
                                "(docs/security.md); listen on 127.0.0.1, or say --insecure on a network you trust");
  }
  spdlog::warn("{} listens on {} without encryption or authentication (--insecure): anyone who reaches it can use it",
               what, host);
}

caf::io::middleman_actor connection_manager(caf::actor_system& system) { return system.middleman().actor_handle(); }

TlsTransport* tls_of(caf::actor_system& system) {
  const auto* config = dynamic_cast<const AsteroidConfig*>(&system.config());
  return config ? config->tls().get() : nullptr;
}

Endpoint caf_endpoint(caf::actor_system& system, const std::string& host, uint16_t port, const std::string& device_id) {
  TlsTransport* tls = tls_of(system);
  if (!tls) return {host, port, {}};
  auto route = tls->route(host, port, device_id);
  return {"127.0.0.1", route.port, route.ready};
}

void wait_ready(const Endpoint& endpoint, std::chrono::steady_clock::time_point deadline) {
  if (endpoint.ready.valid()) endpoint.ready.wait_until(deadline);
}

bool retry_connect(const caf::error& error) { return error == caf::sec::connection_timeout; }

void remember_node(caf::actor_system& system, const caf::node_id& node, const std::string& host, uint16_t port) {
  if (TlsTransport* tls = tls_of(system)) tls->remember_node(caf::to_string(node), host, port);
}

std::string authorization_for(caf::actor_system& system, const caf::node_id& node) {
  TlsTransport* tls = tls_of(system);
  return tls ? tls->authorization_for(caf::to_string(node)) : std::string();
}

messages::WireMessage wire_for(caf::actor_system& system, const caf::actor& to, const messages::Message& message) {
  return messages::to_wire(message, to ? authorization_for(system, to.node()) : std::string());
}

std::string connect_failure(caf::actor_system& system, const std::string& host, uint16_t port,
                            const std::string& caf_error) {
  TlsTransport* tls = tls_of(system);
  const std::string refusal = tls ? tls->last_failure(host, port) : std::string();
  return refusal.empty() ? caf_error : "TLS: " + refusal + " (" + caf_error + ")";
}

Published publish_actor(caf::actor_system& system, const caf::actor& handle, uint16_t port, const std::string& host) {
  Published out;
  auto published = system.middleman().publish(handle, port, host.c_str(), true);
  if (published) {
    out.port = *published;
  } else {
    out.error = system.render(published.error());
  }
  return out;
}

void unpublish_actor(caf::actor_system& system, const caf::actor& handle, uint16_t port) {
  system.middleman().unpublish(handle, port);
}

Spawned remote_spawn_actor(caf::actor_system& system, const caf::node_id& node, const std::string& type,
                           std::chrono::milliseconds timeout) {
  Spawned out;
  caf::scoped_actor self(system);
  self->request(connection_manager(system), timeout, caf::spawn_atom::value, node, type,
                caf::make_message(authorization_for(system, node)), std::set<std::string>{})
      .receive([&](caf::strong_actor_ptr& ptr) { out.actor = caf::actor_cast<caf::actor>(std::move(ptr)); },
               [&](caf::error& e) { out.error = system.render(e); });
  if (!out.actor && out.error.empty()) out.error = "the node spawned nothing";
  return out;
}

}  // namespace asteroid::actors
