#include "actors/connect.h"

#include <caf/actor_system.hpp>

#include <algorithm>

#include "actors/transport.h"

namespace asteroid::actors {

std::optional<NodeHandle> connect_node(Mailbox& self, const planner::Device& device, std::chrono::milliseconds timeout,
                                       std::string& failure) {
  auto& system = self.system();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const auto port = static_cast<uint16_t>(device.port);
  for (int attempt = 1;; ++attempt) {
    const Endpoint to = caf_endpoint(system, device.host, port, device.id);
    wait_ready(self, to, deadline);
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    auto connected = connect_to(self, to, std::max(left, std::chrono::milliseconds(1)));
    if (connected && connected->actor) {
      failure.clear();
      remember_node(system, connected->id, device.host, port);
      return *connected;
    }
    failure = connected ? "nothing is published there"
                        : connect_failure(system, device.host, port, system.render(connected.error()));
    if (connected || !retry_connect(connected.error()) || attempt >= 3 ||
        std::chrono::steady_clock::now() >= deadline)
      return std::nullopt;
  }
}

}  // namespace asteroid::actors
