// A node's watch over its pipeline peers. Every `interval` it sends each
// peer a heartbeat datagram (to the peer's HeartbeatResponder, as the
// monitor does) and notes the replies; unreachable() lists the peers it has
// not heard from for longer than `deadline`. The node puts that list in its
// own heartbeat replies, so the monitor learns of a partition between two
// devices that both still answer it (supervision/partitions.h judges it).
// The peers are those of the last Peers message, i.e. the devices of the
// node's plan; a node that a re-plan left out gets no new Peers and keeps
// watching its old ones, so it is reported back only once the link healed.
// A node that did not run for half a deadline (frozen, starved) gives its
// peers a fresh deadline: their silence meanwhile was its own. With TLS the
// Peers message carries the job's heartbeat key: heartbeats go with its MAC
// and an answer without the right one is not heard (heartbeat_datagram.h).
// Thread-safe; stops when destroyed.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "actors/heartbeat_datagram.h"
#include "messages/envelope.h"

namespace asteroid::actors {

class PeerWatch {
 public:
  using Clock = std::chrono::steady_clock;

  // Throws std::runtime_error when no UDP socket can be opened.
  PeerWatch(std::string node_id, std::chrono::milliseconds interval, std::chrono::milliseconds deadline);
  ~PeerWatch();
  PeerWatch(const PeerWatch&) = delete;
  PeerWatch& operator=(const PeerWatch&) = delete;

  // Watches these peers from now on (the node's own id is skipped); a peer
  // watched before keeps its last reply time, a new one starts heard now.
  void set_peers(const std::vector<messages::Peer>& peers);
  // Peers silent for longer than the deadline, by device id, sorted.
  std::vector<std::string> unreachable() const;
  // The heartbeat keys of the peers watched now (what this node's
  // responder must also answer to).
  std::vector<std::string> keys() const;

 private:
  struct Peer {
    DatagramEndpoint endpoint;
    Clock::time_point last_heard;
    std::string key;  // MAC key (empty: none)
  };
  void run();
  void on_reply(const messages::Heartbeat& reply, const std::string& mac, Clock::time_point at);

  const std::string node_id_;
  const std::chrono::milliseconds interval_, deadline_;
  mutable std::mutex mutex_;
  std::condition_variable stop_signal_;
  bool stopping_ = false;
  std::map<std::string, Peer> peers_;  // by device id
  std::map<uint64_t, std::pair<std::string, Clock::time_point>> pending_;  // sequence -> peer, sent
  uint64_t sequence_ = 0;
  Clock::time_point last_tick_ = Clock::now();  // the sending thread's last round
  std::unique_ptr<HeartbeatPinger> pinger_;
  std::thread thread_;
};

}  // namespace asteroid::actors
