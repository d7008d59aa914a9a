#include "actors/connect.h"

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <algorithm>
#include <set>

#include "actors/transport.h"

namespace asteroid::actors {

std::optional<NodeHandle> connect_node(caf::actor_system& system, const planner::Device& device, std::chrono::milliseconds timeout,
                                       std::string& failure) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const auto port = static_cast<uint16_t>(device.port);
  caf::scoped_actor self{system};  // the middleman answers a request; it is bounded by the deadline
  for (int attempt = 1;; ++attempt) {
    NodeHandle node;
    failure.clear();
    caf::error error;
    const Endpoint to = caf_endpoint(system, device.host, port, device.id);
    wait_ready(to, deadline);
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    self->request(connection_manager(system), std::max(left, std::chrono::milliseconds(1)), caf::connect_atom::value,
                  to.host, to.port)
        .receive(
            [&](const caf::node_id& id, caf::strong_actor_ptr& ptr, const std::set<std::string>&) {
              node.id = id;
              node.actor = caf::actor_cast<caf::actor>(std::move(ptr));
              if (!node.actor) failure = "nothing is published there";
            },
            [&](caf::error& e) {
              error = e;
              failure = connect_failure(system, device.host, port, system.render(e));
            });
    if (failure.empty()) {
      remember_node(system, node.id, device.host, port);
      return node;
    }
    if (!retry_connect(error) || attempt >= 3 || std::chrono::steady_clock::now() >= deadline) return std::nullopt;
  }
}

}  // namespace asteroid::actors
