// The CAF configuration every Asteroid process uses (nodes, the coordinator,
// tests): the network layer, the wire message type, the stage actor type,
// and transport heartbeats so that a frozen peer's connection is dropped.
// Heartbeats must be on in every process (CAF_NOTES.md section 4).
#pragma once

#include <caf/actor_system_config.hpp>

#include <chrono>
#include <memory>

#include "planner/types.h"

namespace asteroid::actors {

struct NodeContext;
class TlsTransport;

struct SystemOptions {
  std::chrono::milliseconds heartbeat_interval{200};
  // CAF drops a connection on which no complete message arrived for this
  // long. Liveness is the heartbeat monitor's job (datagrams, 700 ms), so
  // this only has to outlast the longest single message on the slowest
  // link: one 37 MB all-reduce chunk at 100 Mbit/s takes 3 s.
  std::chrono::milliseconds connection_timeout{60000};
  int scheduler_threads = 4;
  // Mutual TLS on every connection (actors/tls.h); nullptr: plain TCP.
  std::shared_ptr<TlsTransport> tls;
};

// A coordinator's options for reaching `cluster`: mutual TLS when the
// cluster has a tls_dir (the "coordinator" certificate there, tls_allow as
// the allow-list), else plain. Throws std::runtime_error naming a missing
// file or a bad allow-list entry.
SystemOptions coordinator_options(const planner::Cluster& cluster);

class AsteroidConfig : public caf::actor_system_config {
 public:
  // A coordinator's or a tool's configuration (no stage actors hosted).
  explicit AsteroidConfig(const SystemOptions& options = {});
  // A node's configuration: also hosts stage actors ("stage") that draw on
  // the node's memory budget and CPU emulation.
  // Only an authorized coordinator may spawn there (NodeContext::authorized).
  AsteroidConfig(const SystemOptions& options, std::shared_ptr<NodeContext> node);

  const std::shared_ptr<TlsTransport>& tls() const { return tls_; }

 private:
  std::shared_ptr<TlsTransport> tls_;
};

}  // namespace asteroid::actors
