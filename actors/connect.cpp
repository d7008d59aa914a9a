#include "actors/connect.h"

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <set>

#include "actors/transport.h"

namespace asteroid::actors {

std::optional<NodeHandle> connect_node(caf::actor_system& system, caf::scoped_actor& self, const std::string& host,
                                       uint16_t port, std::chrono::milliseconds timeout, std::string& failure) {
  NodeHandle node;
  failure.clear();
  self->request(connection_manager(system), timeout, caf::connect_atom::value, host, port)
      .receive(
          [&](const caf::node_id& id, caf::strong_actor_ptr& ptr, const std::set<std::string>&) {
            node.id = id;
            node.actor = caf::actor_cast<caf::actor>(std::move(ptr));
            if (!node.actor) failure = "nothing is published there";
          },
          [&](caf::error& e) { failure = system.render(e); });
  if (!failure.empty()) return std::nullopt;
  return node;
}

}  // namespace asteroid::actors
