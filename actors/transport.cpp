#include "actors/transport.h"

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
  self->request(connection_manager(system), timeout, caf::spawn_atom::value, node, type, caf::make_message(),
                std::set<std::string>{})
      .receive([&](caf::strong_actor_ptr& ptr) { out.actor = caf::actor_cast<caf::actor>(std::move(ptr)); },
               [&](caf::error& e) { out.error = system.render(e); });
  if (!out.actor && out.error.empty()) out.error = "the node spawned nothing";
  return out;
}

}  // namespace asteroid::actors
