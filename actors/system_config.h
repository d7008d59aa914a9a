// The CAF configuration every Asteroid process uses (nodes, the coordinator,
// tests): the network layer, the wire message type, the stage actor type,
// and transport heartbeats so that a frozen peer's connection is dropped.
// Heartbeats must be on in every process (CAF_NOTES.md section 4).
#pragma once

#include <caf/actor_system_config.hpp>

#include <chrono>
#include <memory>

namespace asteroid::actors {

struct NodeContext;

struct SystemOptions {
  std::chrono::milliseconds heartbeat_interval{200};
  // CAF drops a connection on which no complete message arrived for this
  // long. Liveness is the heartbeat monitor's job (datagrams, 700 ms), so
  // this only has to outlast the longest single message on the slowest
  // link: one 37 MB all-reduce chunk at 100 Mbit/s takes 3 s.
  std::chrono::milliseconds connection_timeout{60000};
  int scheduler_threads = 4;
};

class AsteroidConfig : public caf::actor_system_config {
 public:
  // A coordinator's or a tool's configuration (no stage actors hosted).
  explicit AsteroidConfig(const SystemOptions& options = {});
  // A node's configuration: also hosts stage actors ("stage") that draw on
  // the node's memory budget and CPU emulation.
  AsteroidConfig(const SystemOptions& options, std::shared_ptr<NodeContext> node);
};

}  // namespace asteroid::actors
