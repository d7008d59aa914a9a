#include "supervision/heartbeat_monitor.h"

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <set>

#include "actors/atoms.h"
#include "messages/transport.h"

namespace asteroid::supervision {
namespace {

using actors::back_atom;
using actors::lost_atom;
using actors::tick_atom;
using Clock = std::chrono::steady_clock;

struct MonitorState {
  HealthTracker tracker{HeartbeatOptions{}};
  caf::actor listener;
  std::map<std::string, caf::actor> nodes;
  std::map<std::string, planner::Device> addresses;
  std::set<std::string> connecting;  // reconnections in flight
  Clock::time_point last_reconnect{};
  std::chrono::milliseconds reconnect_every{1000};
  uint64_t sequence = 0;
  static inline const char* name = "heartbeat-monitor";
};

using Self = caf::stateful_actor<MonitorState>;

void report_dead(Self* self) {
  for (const auto& device : self->state.tracker.newly_dead(Clock::now())) {
    self->send(self->state.listener, lost_atom::value, device);
  }
}

void reconnect(Self* self, const std::string& device) {
  auto address = self->state.addresses.find(device);
  if (address == self->state.addresses.end() || self->state.connecting.count(device)) return;
  self->state.connecting.insert(device);
  const auto timeout = std::max(self->state.reconnect_every, std::chrono::milliseconds(2000));
  self->request(self->home_system().middleman().actor_handle(), timeout, caf::connect_atom::value,
                address->second.host, static_cast<uint16_t>(address->second.port))
      .then(
          [=](const caf::node_id&, caf::strong_actor_ptr& ptr, const std::set<std::string>&) {
            self->state.connecting.erase(device);
            auto node = caf::actor_cast<caf::actor>(std::move(ptr));
            if (!node) return;
            self->state.nodes[device] = node;
            self->monitor(node);
            self->state.tracker.watch(device, Clock::now());
            self->send(self->state.listener, back_atom::value, device);
          },
          [=](caf::error&) { self->state.connecting.erase(device); });
}

caf::behavior monitor(Self* self, MonitorSetup setup) {
  self->state.tracker = HealthTracker(setup.options);
  self->state.listener = setup.listener;
  self->state.nodes = setup.nodes;
  self->state.addresses = setup.addresses;
  self->state.reconnect_every = setup.reconnect_every;
  for (const auto& [device, node] : setup.nodes) {
    self->state.tracker.watch(device, Clock::now());
    self->monitor(node);
  }
  self->set_down_handler([=](caf::down_msg& down) {
    for (const auto& [device, node] : self->state.nodes) {
      if (node.address() == down.source) self->state.tracker.gone(device);
    }
    report_dead(self);
  });
  self->send(self, tick_atom::value);
  return {
      [=](tick_atom) {
        auto& s = self->state;
        const auto options = s.tracker.options();
        ++s.sequence;
        for (const auto& device : s.tracker.alive_devices()) {
          auto node = s.nodes.find(device);
          if (node == s.nodes.end()) continue;
          self->request(node->second, options.deadline,
                        messages::to_wire(messages::Heartbeat{"monitor", s.sequence, 0}))
              .then([=](messages::WireMessage&) { self->state.tracker.heard(device, Clock::now()); },
                    [](caf::error&) {});  // silence is judged by the deadline
        }
        report_dead(self);
        if (Clock::now() - s.last_reconnect >= s.reconnect_every) {
          s.last_reconnect = Clock::now();
          for (const auto& [device, address] : s.addresses) {
            if (!s.tracker.alive(device)) reconnect(self, device);
          }
        }
        self->delayed_send(self, options.interval, tick_atom::value);
      },
  };
}

}  // namespace

caf::actor spawn_heartbeat_monitor(caf::actor_system& system, const MonitorSetup& setup) {
  return system.spawn(monitor, setup);
}

}  // namespace asteroid::supervision
