// Heartbeat bookkeeping, without actors or clocks of its own: which devices
// answered recently, which fell silent for longer than the deadline. The
// heartbeat monitor actor feeds it replies and the time; tests feed it
// literal times.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <vector>

namespace asteroid::supervision {

// How heartbeats travel. `datagram`: UDP to the node's port number, apart
// from the CAF connection, so they never queue behind bulk data
// (actors/heartbeat_datagram.h). `actor`: CAF requests to the node actor,
// over the same TCP connection as activations, all-reduce chunks and
// replicas (kept to compare, and for tests).
enum class HeartbeatTransport { datagram, actor };

struct HeartbeatOptions {
  std::chrono::milliseconds interval{100};  // between two heartbeats to a device
  std::chrono::milliseconds deadline{700};  // silence after which a device is dead
  HeartbeatTransport transport = HeartbeatTransport::datagram;
};

class HealthTracker {
 public:
  using Time = std::chrono::steady_clock::time_point;

  explicit HealthTracker(HeartbeatOptions options) : options_(options) {}

  // Starts watching `device` (again), counting it as heard at `now`.
  void watch(const std::string& device, Time now);
  void forget(const std::string& device);
  // A sign of life from `device` (a heartbeat reply).
  void heard(const std::string& device, Time now);
  // The device is gone for sure (its connection dropped): dead at once.
  void gone(const std::string& device);

  // Devices that died since the last call: gone, or silent for longer than
  // the deadline. Each is reported once.
  std::vector<std::string> newly_dead(Time now);

  bool alive(const std::string& device) const;
  std::vector<std::string> alive_devices() const;
  const HeartbeatOptions& options() const { return options_; }

 private:
  struct Entry {
    Time last_heard;
    bool dead = false, reported = false;
  };
  HeartbeatOptions options_;
  std::map<std::string, Entry> devices_;
};

}  // namespace asteroid::supervision
