// A node: the process that runs on one device. It publishes a node actor
// (answers hello with its NodeInfo, profiles models on request) and hosts
// the stage actors coordinators remote-spawn on it. The node actor is the
// device's supervisor: it watches those stage actors and restarts in place
// one that fails on its own, telling the job's coordinator which actor
// took its place (or that it gave up: NodeOptions::stage_restarts); with TLS only an
// authenticated coordinator may spawn there or send it control messages
// (profile, peers, replica and kept-state requests, models, releases), and
// it stops only on its own signal, never on a message. It answers heartbeat
// datagrams on UDP at its port number (actors/heartbeat_datagram.h), with the
// pipeline peers it cannot reach (actors/peer_watch.h). It keeps
// running between jobs and shuts down cleanly on SIGTERM or SIGINT.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "actors/tls.h"

namespace asteroid::actors {

struct NodeOptions {
  std::string id = "node";
  std::string host = "127.0.0.1";  // address to listen on (beyond the loopback: TLS or --insecure)
  // Mutual TLS (actors/tls.h): DIR/ca.pem, DIR/<id>.pem, DIR/<id>.key;
  // empty: plain TCP. `allow`: who may connect (nullopt: everyone the
  // authority certified).
  std::string tls_dir;
  std::optional<std::vector<AllowEntry>> allow;
  uint16_t port = 0;             // TCP (CAF) and UDP (heartbeats); 0: any free port (printed)
  double memory_mb = 0;          // budget; 0: unlimited
  double cpu_share = 0;          // in-process throttle; 0: none
  int threads = 1;               // at::set_num_threads
  std::string crash_at;          // "EVENT:ROUND" (fault injection: SIGKILL), empty: never
  std::string freeze_at;         // "EVENT:ROUND" (fault injection: SIGSTOP), empty: never
  std::string hang_at;           // "EVENT:ROUND" (fault injection: the thread blocks for good), empty: never
  std::string fail_at;           // "EVENT:ROUND" (fault injection: the stage throws, once), empty: never
  std::string anonymous_at;      // "gradient:ROUND" (fault injection: one gradient sent without a sender)
  // The device supervisor (the node actor) restarts a stage actor that
  // failed on its own at most this many times a minute; then it gives up
  // and the coordinator loses the device (actors/restart_budget.h).
  size_t stage_restarts = 3;
  // Heartbeats to the pipeline peers (actors/peer_watch.h): one every
  // interval; a peer silent for the deadline is reported unreachable.
  int peer_interval_ms = 200;
  int peer_deadline_ms = 3000;
};

// Runs the node until SIGTERM/SIGINT. Prints "asteroid node <id> listening
// on <host>:<port>" once it accepts connections. Returns the exit code.
// REQUIRES: called from main() before any other thread exists (it blocks
// the termination signals process-wide and waits for them).
int run_node(const NodeOptions& options);

}  // namespace asteroid::actors
