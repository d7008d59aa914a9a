// Measuring a running cluster before planning: every device profiles the
// model on its own node (under its own emulation, all devices at once), and
// the link from here (the coordinator) to every device is timed with link
// probes. The result is what the planner needs: a profile.json covering every
// device and a cluster whose pair bandwidths come from the measurements (a
// pair's bandwidth is the slower of its two device links, as on a switch with
// one port per device).
//
// Everything here waits with a deadline (CAF_NOTES.md sections 2 and 4) and
// gives up early when `cancel` is set. Call from one thread; the actor system
// must carry actors::AsteroidConfig (the wire message type).
#pragma once

#include <caf/fwd.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "planner/types.h"

namespace asteroid::apps {

// Measuring failed: a device is unreachable, refused, or did not answer in
// time. The message names the device(s).
struct MeasureError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct MeasureOptions {
  std::string model;
  std::vector<int> batches = {1, 2, 4, 8, 16, 32, 64};  // profiled batch sizes
  int repeats = 5;                                     // per (layer, batch size); median kept
  // Batch sizes measured (planner::spread_points of `batches`); the others
  // are predicted (planner/latency_predictor.h). 0: all measured.
  int points = 0;
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds profile_timeout{600000};   // all devices together
  // Link probes: each device's link is timed with `probe_rounds` payloads of
  // about `probe_ms` of transfer each (sized from a first probe); the best
  // rate is kept.
  int probe_rounds = 3;
  double probe_ms = 60;
  const std::atomic<bool>* cancel = nullptr;  // set: stop waiting, throw MeasureError
  std::function<void(const std::string&)> log;  // progress lines (may be empty)
};

struct LinkMeasurement {
  double mbps = 0;        // payload rate from here to the device
  double rtt_ms = 0;      // round trip of an empty probe
  double payload_bytes = 0;
};

struct ClusterMeasurement {
  planner::Profile profile;                      // every device, by the cluster's ids
  std::vector<int> predicted_batches;            // the batch sizes predicted, not measured
  std::map<std::string, double> profile_seconds; // per device, wall time of its profiling
  std::map<std::string, LinkMeasurement> links;  // per device
  double profile_wall_s = 0, links_wall_s = 0;
};

// Profiles and probes every device of `cluster` (each needs host and port).
// Throws MeasureError naming the devices that failed.
ClusterMeasurement measure_cluster(caf::actor_system& system, const planner::Cluster& cluster,
                                   const MeasureOptions& options);

// `cluster` with the measured links: the default bandwidth is the slowest
// measured pair and every pair gets a `links` entry min(link a, link b).
// Devices without a measurement keep the cluster's own bandwidths.
planner::Cluster with_measured_links(const planner::Cluster& cluster,
                                     const std::map<std::string, LinkMeasurement>& links);

}  // namespace asteroid::apps
