// Heartbeats over UDP, beside the CAF connections rather than inside them.
// CAF carries every actor between two processes over one TCP connection, so a
// heartbeat sent as an actor message waits behind whatever bulk data
// (activations, all-reduce chunks, replicas) was queued before it: in CAF's
// buffer, in the TCP send buffer and in the link's queue. A node busy
// sending then looks dead. A datagram waits for none of the first two, and
// both ends mark it DSCP EF (IP TOS 0xb8), which WiFi WMM and the testbed's
// tc classes (docs/testbed.md) send ahead of bulk traffic.
//
// Every node answers heartbeats on UDP at the port number of its CAF (TCP)
// port (HeartbeatResponder, a thread of its own); the heartbeat monitor sends
// them (HeartbeatPinger, supervision/heartbeat_monitor.h). A datagram is one
// Cap'n Proto envelope holding a Heartbeat, decoded as hostile input: a
// malformed datagram is dropped (debug log), never answered.
//
// With TLS, heartbeats and their answers carry a MAC (HMAC-SHA256): the
// monitor's keyed by the node's control token (actors/tls.h), which only the
// node and its coordinator know; the pipeline peers' (actors/peer_watch.h)
// by the job's heartbeat key, which the coordinator gives the job's nodes
// with their peers. Nobody else on the network can answer for a dead node
// or forge a live one's unreachable peers. Without TLS, none carries one.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "messages/envelope.h"

namespace asteroid::actors {

// DSCP EF (expedited forwarding, 46) in the IP TOS byte.
constexpr int kHeartbeatTos = 0xb8;
// The largest heartbeat datagram either side reads; longer ones are dropped.
constexpr size_t kMaxHeartbeatBytes = 1024;

// Decodes a datagram that must hold a Heartbeat; nullopt with the reason in
// `why` (if given) for anything else. `mac`: the envelope's authorization.
std::optional<messages::Heartbeat> read_heartbeat(const void* data, size_t size, std::string* why = nullptr,
                                                  std::string* mac = nullptr);

// The MAC of a heartbeat under `key`: over its node id, sequence and
// unreachable peers (what the monitor acts on).
std::string heartbeat_mac(const std::string& key, const messages::Heartbeat& heartbeat);
// Whether `mac` is heartbeat_mac(key, heartbeat), compared in constant time.
bool heartbeat_mac_matches(const std::string& key, const messages::Heartbeat& heartbeat, const std::string& mac);

// A node's answer to one datagram: the encoded Heartbeat of `node_id` with
// the same sequence and the peers it cannot reach (at most
// kMaxUnreachableListed), or nullopt (reason in `why`) when the datagram is
// not a well-formed heartbeat. A heartbeat with a MAC must carry one made
// with one of `keys`, and gets an answer with a MAC under that key. The
// responder's whole logic, testable without sockets.
constexpr size_t kMaxUnreachableListed = 16;
std::optional<std::vector<char>> answer_heartbeat(const void* data, size_t size, const std::string& node_id,
                                                  std::string* why = nullptr,
                                                  std::vector<std::string> unreachable = {},
                                                  const std::vector<std::string>& keys = {});

// A resolved UDP address.
struct DatagramEndpoint {
  sockaddr_storage address{};
  socklen_t length = 0;
  std::string text;  // "host:port", for logs
};

// Resolves host:port for UDP (an address or a name; the first result).
// nullopt with the reason in `why` when it cannot.
std::optional<DatagramEndpoint> resolve_datagram_endpoint(const std::string& host, uint16_t port,
                                                          std::string* why = nullptr);

// The node's side: a UDP socket on host:port and a thread that answers every
// well-formed heartbeat on it, so a node answers while its actors compute or
// its CAF connections are full. Stops when destroyed.
class HeartbeatResponder {
 public:
  // Binds, marks the socket EF and starts the thread. Throws
  // std::runtime_error naming the address when it cannot bind.
  // `unreachable_peers` (optional) fills every reply's unreachable list.
  // `keys`: the MAC keys it answers to (the node's control token, its jobs'
  // heartbeat keys), asked at every datagram.
  HeartbeatResponder(const std::string& host, uint16_t port, std::string node_id,
                     std::function<std::vector<std::string>()> unreachable_peers = {},
                     std::function<std::vector<std::string>()> keys = {});
  ~HeartbeatResponder();
  HeartbeatResponder(const HeartbeatResponder&) = delete;
  HeartbeatResponder& operator=(const HeartbeatResponder&) = delete;

  uint16_t port() const { return port_; }
  uint64_t answered() const { return answered_; }
  uint64_t dropped() const { return dropped_; }

 private:
  void run();
  std::string node_id_;
  std::function<std::vector<std::string>()> unreachable_peers_;
  std::function<std::vector<std::string>()> keys_;
  int socket_ = -1, wake_ = -1;  // wake_: an eventfd that stops the thread
  uint16_t port_ = 0;
  std::atomic<uint64_t> answered_{0}, dropped_{0};
  std::thread thread_;
};

// The monitor's side: UDP sockets (IPv4, and IPv6 where the machine has it)
// marked EF, and a thread that hands every well-formed reply to `on_reply`,
// on that thread, with the time it arrived. Stops when destroyed.
class HeartbeatPinger {
 public:
  using Clock = std::chrono::steady_clock;
  // `mac`: the reply's (empty when it has none).
  using OnReply =
      std::function<void(const messages::Heartbeat& reply, const std::string& mac, Clock::time_point received)>;

  // Throws std::runtime_error when no IPv4 socket can be opened.
  explicit HeartbeatPinger(OnReply on_reply);
  ~HeartbeatPinger();
  HeartbeatPinger(const HeartbeatPinger&) = delete;
  HeartbeatPinger& operator=(const HeartbeatPinger&) = delete;

  // Sends one heartbeat without blocking, with its MAC under `key` if
  // given; false (reason in `why`) when the socket refuses it. Call from one
  // thread at a time.
  bool send(const DatagramEndpoint& to, const messages::Heartbeat& heartbeat, std::string* why = nullptr,
            const std::string& key = {});

 private:
  void run();
  OnReply on_reply_;
  int v4_ = -1, v6_ = -1, wake_ = -1;
  std::thread thread_;
};

}  // namespace asteroid::actors
