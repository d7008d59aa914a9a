// The shaping relay: the fallback link emulation where network namespaces
// are not allowed (not root, or no `ip netns`). One TCP relay per device
// listens on its own port and forwards every connection to the device's node,
// shaping each direction to the device's link bandwidth (one FIFO link per
// direction, shared by all connections of the device) and adding the link
// latency. cluster.json then lists the relay's address for the device.
//
// What this can and cannot emulate: traffic is shaped where it passes a
// relay, i.e. on the link of the device being connected TO (both directions
// of that connection). The connecting side's link is not involved, and the
// relay cannot tell who connects (everything comes from 127.0.0.1), so
// per-pair overrides and cutting one pair are not possible; cutting a device
// from everything is (its relay stops forwarding).
//
// Each relay also forwards UDP datagrams on its port number to the node's
// (the nodes' heartbeats, actors/heartbeat_datagram.h) and the replies back:
// at once, never behind the shaped FIFO (netns-tc gives them a class of
// their own), and not while the device is cut.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace boost::asio {
class io_context;
}

namespace asteroid::testbed {

// A FIFO link of fixed bandwidth and latency, as a virtual clock: bytes
// handed over at `now` arrive when the link has sent everything queued
// before them plus these bytes, plus the latency. Pure; not thread-safe.
class LinkShaper {
 public:
  using Clock = std::chrono::steady_clock;
  // REQUIRES: mbps > 0, latency_ms >= 0.
  LinkShaper(double mbps, double latency_ms);
  Clock::time_point reserve(std::size_t bytes, Clock::time_point now);
  double mbps() const { return mbps_; }

 private:
  double mbps_;
  std::chrono::nanoseconds latency_;
  double ns_per_byte_;
  Clock::time_point next_free_{};
};

struct RelayRoute {
  std::string id;             // device id (for logs)
  std::string listen_host = "127.0.0.1";
  uint16_t listen_port = 0;   // 0: any free port (see ShapingRelay::port)
  std::string target_host = "127.0.0.1";
  uint16_t target_port = 0;
  double bandwidth_mbps = 1000;
  double latency_ms = 0;
  std::string cut_file;       // while this file exists, nothing is forwarded
};

// One device's relay on an io_context (single-threaded use).
class ShapingRelay {
 public:
  // Binds the listening socket (throws std::runtime_error naming the address).
  ShapingRelay(boost::asio::io_context& io, const RelayRoute& route);
  ~ShapingRelay();
  uint16_t port() const;
  void start();  // accept and forward
  void stop();   // close the acceptor and every connection
  void set_cut(bool cut);
  const RelayRoute& route() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// The relay process: reads a JSON config {"routes": [RelayRoute fields...]},
// binds every route, prints "ready" on stdout, and forwards until SIGTERM or
// SIGINT. Polls the routes' cut files every 20 ms. Returns the exit code.
int run_relay_daemon(const std::string& config_path);

}  // namespace asteroid::testbed
