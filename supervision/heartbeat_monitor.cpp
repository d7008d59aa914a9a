#include "supervision/heartbeat_monitor.h"

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <spdlog/spdlog.h>

#include <memory>
#include <set>

#include "actors/atoms.h"
#include "actors/heartbeat_datagram.h"
#include "actors/transport.h"
#include "messages/transport.h"

namespace asteroid::supervision {
namespace {

using actors::back_atom;
using actors::lost_atom;
using actors::peers_atom;
using actors::tick_atom;
using Clock = std::chrono::steady_clock;
using datagram_atom = actors::heartbeat_reply_atom;

// A heartbeat datagram awaiting its reply.
struct Pending {
  std::string device;
  Clock::time_point sent;
};

struct MonitorState {
  HealthTracker tracker{HeartbeatOptions{}};
  caf::actor listener;
  std::map<std::string, caf::actor> nodes;
  std::map<std::string, planner::Device> addresses;
  std::set<std::string> connecting;  // reconnections in flight
  // Reconnected, not yet answering: a frozen node's connection may still
  // stand, so a device is back only when it answers a heartbeat.
  std::set<std::string> probation;
  Clock::time_point last_reconnect{};
  std::chrono::milliseconds reconnect_every{1000};
  uint64_t sequence = 0;  // one per heartbeat sent, to any device
  std::function<void(const std::string&, std::chrono::microseconds)> on_round_trip;
  // The datagram transport (null: actor heartbeats for every device).
  std::unique_ptr<actors::HeartbeatPinger> pinger;
  std::map<std::string, actors::DatagramEndpoint> endpoints;
  std::map<uint64_t, Pending> pending;  // by sequence, which names the device it went to
  uint64_t forged = 0;                  // replies dropped for a wrong or missing MAC
  std::map<std::string, std::vector<std::string>> unreachable;  // last forwarded, by device
  static inline const char* name = "heartbeat-monitor";
};

using Self = heartbeat_monitor_actor::stateful_pointer<MonitorState>;

// The listener is dynamically typed: a typed actor tells it with anon_send.
void report_dead(Self self) {
  for (const auto& device : self->state.tracker.newly_dead(Clock::now())) {
    caf::anon_send(self->state.listener, lost_atom::value, device);
  }
}

void reconnect(Self self, const std::string& device) {
  auto address = self->state.addresses.find(device);
  if (address == self->state.addresses.end() || self->state.connecting.count(device)) return;
  self->state.connecting.insert(device);
  const auto timeout = std::max(self->state.reconnect_every, std::chrono::milliseconds(2000));
  const planner::Device& d = address->second;
  // An event-based actor does not wait for the TLS route's connection made
  // ahead (Endpoint::ready): a first attempt may fail, the next finds it.
  const auto to = actors::caf_endpoint(self->home_system(), d.host, static_cast<uint16_t>(d.port), d.id);
  self->request(actors::connection_manager(self->home_system()), timeout, caf::connect_atom::value, to.host, to.port)
      .then(
          [=](const caf::node_id& id, caf::strong_actor_ptr& ptr, const std::set<std::string>&) {
            self->state.connecting.erase(device);
            actors::remember_node(self->home_system(), id, d.host, static_cast<uint16_t>(d.port));
            auto node = caf::actor_cast<caf::actor>(std::move(ptr));
            if (!node) return;
            self->state.nodes[device] = node;
            self->monitor(node);
            self->state.probation.insert(device);  // back at its first heartbeat reply
          },
          [=](caf::error&) { self->state.connecting.erase(device); });
}

void heard(Self self, const std::string& device, Clock::time_point sent, Clock::time_point at) {
  if (self->state.probation.erase(device)) {
    self->state.tracker.watch(device, at);
    caf::anon_send(self->state.listener, back_atom::value, device);
  }
  self->state.tracker.heard(device, at);
  if (self->state.on_round_trip)
    self->state.on_round_trip(device, std::chrono::duration_cast<std::chrono::microseconds>(at - sent));
}

// Opens the datagram transport: resolves every device's node once and
// starts the pinger, whose thread hands replies to this actor. Without a
// socket the monitor falls back to actor heartbeats.
void open_datagrams(Self self, const MonitorSetup& setup) {
  auto& s = self->state;
  for (const auto* devices : {&setup.endpoints, &setup.addresses}) {
    for (const auto& [id, device] : *devices) {
      if (s.endpoints.count(id) || device.host.empty() || device.port <= 0 || device.port > 65535) continue;
      std::string why;
      if (auto endpoint = actors::resolve_datagram_endpoint(device.host, static_cast<uint16_t>(device.port), &why))
        s.endpoints.emplace(id, std::move(*endpoint));
      else
        spdlog::warn("heartbeat monitor: {}; device {} gets actor heartbeats", why, id);
    }
  }
  caf::actor_addr me = self->address();  // weak: the pinger must not keep the monitor alive
  try {
    s.pinger = std::make_unique<actors::HeartbeatPinger>(
        [me](const messages::Heartbeat& reply, const std::string& mac, Clock::time_point received) {
          if (auto monitor = caf::actor_cast<heartbeat_monitor_actor>(me)) {
            caf::anon_send(monitor, datagram_atom::value, reply.node_id, reply.sequence,
                           static_cast<int64_t>(received.time_since_epoch().count()), reply.unreachable, mac);
          }
        });
  } catch (const std::exception& e) {
    spdlog::warn("heartbeat monitor: {}; heartbeats go over the actors' connections", e.what());
    s.endpoints.clear();
  }
}

// The key of `device`'s heartbeat MACs: its node's control token, which this
// process holds with TLS (actors/heartbeat_datagram.h); empty: no MACs.
std::string mac_key(Self self, const std::string& device) {
  auto node = self->state.nodes.find(device);
  return node == self->state.nodes.end() ? std::string()
                                         : actors::authorization_for(self->home_system(), node->second.node());
}

void send_heartbeat(Self self, const std::string& device) {
  auto& s = self->state;
  const uint64_t sequence = ++s.sequence;
  const auto sent = Clock::now();
  auto endpoint = s.pinger ? s.endpoints.find(device) : s.endpoints.end();
  if (endpoint != s.endpoints.end()) {
    std::string why;
    if (s.pinger->send(endpoint->second, messages::Heartbeat{"monitor", sequence, 0, {}}, &why, mac_key(self, device)))
      s.pending[sequence] = Pending{device, sent};
    else
      spdlog::debug("heartbeat monitor: {}", why);  // silence is judged by the deadline
    return;
  }
  auto node = s.nodes.find(device);
  if (node == s.nodes.end()) return;
  self->request(node->second, s.tracker.options().deadline,
                messages::to_wire(messages::Heartbeat{"monitor", sequence, 0, {}}))
      .then([=](messages::WireMessage&) { heard(self, device, sent, Clock::now()); },
            [](caf::error&) {});  // silence is judged by the deadline
}

heartbeat_monitor_actor::behavior_type monitor(Self self, MonitorSetup setup) {
  self->state.tracker = HealthTracker(setup.options);
  self->state.listener = setup.listener;
  self->state.nodes = setup.nodes;
  self->state.addresses = setup.addresses;
  self->state.reconnect_every = setup.reconnect_every;
  self->state.on_round_trip = setup.on_round_trip;
  if (setup.options.transport == HeartbeatTransport::datagram) open_datagrams(self, setup);
  for (const auto& [device, node] : setup.nodes) {
    self->state.tracker.watch(device, Clock::now());
    self->monitor(node);
  }
  self->set_down_handler([=](caf::down_msg& down) {
    for (const auto& [device, node] : self->state.nodes) {
      if (node.address() != down.source) continue;
      self->state.tracker.gone(device);
      self->state.probation.erase(device);
    }
    report_dead(self);
  });
  self->send(self, tick_atom::value);
  return {
      [=](tick_atom) {
        auto& s = self->state;
        const auto options = s.tracker.options();
        // Datagrams unanswered within the deadline are lost, not late.
        const auto now = Clock::now();
        for (auto it = s.pending.begin(); it != s.pending.end();)
          it = now - it->second.sent > options.deadline ? s.pending.erase(it) : std::next(it);
        for (const auto& device : s.tracker.alive_devices()) send_heartbeat(self, device);
        for (const auto& device : s.probation) send_heartbeat(self, device);
        report_dead(self);
        if (Clock::now() - s.last_reconnect >= s.reconnect_every) {
          s.last_reconnect = Clock::now();
          for (const auto& [device, address] : s.addresses) {
            if (!s.tracker.alive(device) && !s.probation.count(device)) reconnect(self, device);
          }
        }
        self->delayed_send(self, options.interval, tick_atom::value);
      },
      // A datagram reply counts for the device its sequence was sent to
      // (a node's --id need not be its device id); late, repeated or
      // unknown sequences are ignored.
      [=](datagram_atom, const std::string& node_id, uint64_t sequence, int64_t received,
          std::vector<std::string>& unreachable, const std::string& mac) {
        auto it = self->state.pending.find(sequence);
        if (it == self->state.pending.end()) return;
        // With TLS only the node itself can answer (its MAC): nobody can
        // keep a dead device alive or forge its unreachable peers.
        const std::string key = mac_key(self, it->second.device);
        if (!key.empty() && !actors::heartbeat_mac_matches(key, messages::Heartbeat{node_id, sequence, 0, unreachable}, mac)) {
          ++self->state.forged;
          spdlog::warn("heartbeat monitor: dropped a reply for {} without its MAC ({} so far)", it->second.device,
                       self->state.forged);
          return;
        }
        const Pending pending = it->second;
        self->state.pending.erase(it);
        const Clock::time_point at{Clock::duration(received)};
        if (at - pending.sent > self->state.tracker.options().deadline) return;  // as an actor request times out
        heard(self, pending.device, pending.sent, at);
        // The peers it cannot reach, when that changed: the coordinator
        // judges partitions (actors/partitions.h).
        auto& last = self->state.unreachable[pending.device];
        if (unreachable != last) {
          last = unreachable;
          caf::anon_send(self->state.listener, peers_atom::value, pending.device, std::move(unreachable));
        }
      },
  };
}

}  // namespace

heartbeat_monitor_actor spawn_heartbeat_monitor(caf::actor_system& system, const MonitorSetup& setup) {
  return system.spawn(monitor, setup);
}

}  // namespace asteroid::supervision
