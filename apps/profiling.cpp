#include "apps/profiling.h"

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>
#include <set>

#include "actors/ask.h"
#include "actors/connect.h"
#include "actors/model_shipping.h"
#include "actors/transport.h"
#include "messages/transport.h"
#include "planner/json_io.h"
#include "planner/latency_predictor.h"

namespace asteroid::apps {
namespace {

using Clock = std::chrono::steady_clock;
using messages::WireMessage;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

std::string address_of(const planner::Device& d) { return d.host + ":" + std::to_string(d.port); }

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

bool cancelled(const MeasureOptions& o) { return o.cancel && o.cancel->load(); }

struct NodeLink {
  const planner::Device* device = nullptr;
  caf::actor actor;
};

// Connects to the node actor published at the device's host and port, within
// the timeout (never CAF's unbounded remote_actor: CAF_NOTES.md section 2),
// and gives it `model` if it is a TorchScript model the node does not have.
caf::actor connect(caf::actor_system& system, actors::Mailbox& self, const planner::Device& d,
                   const std::string& model, std::chrono::milliseconds timeout) {
  std::string failure;
  const auto node = actors::connect_node(self, d, timeout, failure);
  const std::string where = "device '" + d.id + "' at " + address_of(d);
  if (!node) throw MeasureError(where + " is unreachable: " + failure);
  const auto hello = actors::ask(self, node->actor, messages::Hello{}, timeout, failure);
  const auto* info = hello ? std::get_if<messages::NodeInfo>(&*hello) : nullptr;
  if (!info) throw MeasureError(where + " did not say who it is: " + (hello ? "it answered " + std::string(messages::kind_name(*hello)) : failure));
  if (!actors::ship_model(self, node->actor, *info, model, timeout + std::chrono::seconds(20), failure))
    throw MeasureError(where + " did not take model " + model + ": " + failure);
  return node->actor;
}

// Every device profiles at once: the requests go out as plain sends (the
// node answers the sender), and the replies are collected in one loop that
// also watches the deadline, the cancel flag and the nodes' down messages.
void profile_all(caf::actor_system& system, actors::Mailbox& self, const std::vector<NodeLink>& nodes,
                 const MeasureOptions& o, ClusterMeasurement& out) {
  messages::ProfileRequest request;
  request.model = o.model;
  for (int b : planner::spread_points(o.batches, o.points)) request.batches.push_back(static_cast<uint32_t>(b));
  request.repeats = static_cast<uint32_t>(o.repeats);
  std::map<caf::actor_addr, size_t> index;
  for (size_t i = 0; i < nodes.size(); ++i) {
    index[nodes[i].actor.address()] = i;
    self.self()->monitor(nodes[i].actor);
  }
  const auto t0 = Clock::now();
  for (const auto& n : nodes) self.send(n.actor, actors::wire_for(system, n.actor, request));
  const auto deadline = t0 + o.profile_timeout;
  std::map<size_t, planner::Profile> done;
  std::map<size_t, std::string> failed;
  while (done.size() + failed.size() < nodes.size()) {
    if (cancelled(o)) throw MeasureError("interrupted while the devices were profiling");
    if (Clock::now() >= deadline) {
      std::vector<std::string> late;
      for (size_t i = 0; i < nodes.size(); ++i)
        if (!done.count(i) && !failed.count(i)) late.push_back(nodes[i].device->id);
      throw MeasureError("no profile from " + join(late) + " within " +
                         std::to_string(o.profile_timeout.count() / 1000) + " s");
    }
    caf::message_handler handler{
        [&](WireMessage& wire) {
          auto it = index.find(self.sender());
          if (it == index.end()) return;
          const std::string& id = nodes[it->second].device->id;
          auto decoded = messages::from_wire(std::move(wire));
          if (!decoded.ok()) {
            failed[it->second] = id + ": malformed reply: " + decoded.error;
          } else if (auto* error = std::get_if<messages::Error>(&*decoded.message)) {
            failed[it->second] = id + ": " + error->message;
          } else if (auto* result = std::get_if<messages::ProfileResult>(&*decoded.message)) {
            try {
              done[it->second] = planner::profile_from_json(nlohmann::json::parse(result->json), "profile of " + id);
              out.profile_seconds[id] = ms_since(t0) / 1000.0;
              if (o.log) {
                char line[160];
                std::snprintf(line, sizeof line, "  profiled on %s in %.1f s", id.c_str(), ms_since(t0) / 1000.0);
                o.log(line);
              }
            } catch (const std::exception& e) {
              failed[it->second] = id + ": " + e.what();
            }
          } else {
            failed[it->second] = id + ": answered a profile request with " + messages::kind_name(*decoded.message);
          }
        },
        [&](caf::down_msg& down) {
          auto it = index.find(down.source);
          if (it != index.end() && !done.count(it->second))
            failed[it->second] = nodes[it->second].device->id + ": its node went down while profiling";
        }};
    self.receive(handler, std::chrono::milliseconds(100));
  }
  for (const auto& n : nodes) self.self()->demonitor(n.actor);
  if (!failed.empty()) {
    std::vector<std::string> why;
    for (const auto& [i, text] : failed) why.push_back(text);
    throw MeasureError("profiling failed on " + join(why));
  }
  // One profile: the layers as the first device measured them, each
  // device's tables under the cluster's id (a node may call itself otherwise).
  planner::Profile& p = out.profile;
  for (size_t i = 0; i < nodes.size(); ++i) {
    const planner::Profile& got = done.at(i);
    if (got.devices.size() != 1)
      throw MeasureError(nodes[i].device->id + " returned a profile of " + std::to_string(got.devices.size()) +
                         " devices");
    if (i == 0) {
      p.model = got.model;
      p.layers = got.layers;
    } else if (got.layers.size() != p.layers.size()) {
      throw MeasureError(nodes[i].device->id + " profiled " + std::to_string(got.layers.size()) + " layers, " +
                         nodes[0].device->id + " " + std::to_string(p.layers.size()));
    }
    p.devices[nodes[i].device->id] = got.devices.begin()->second;
  }
  const auto measured = planner::spread_points(o.batches, o.points);
  if (measured.size() < o.batches.size()) {
    p = planner::LatencyPredictor(p).completed(p, o.batches);
    for (int b : o.batches)
      if (std::find(measured.begin(), measured.end(), b) == measured.end()) out.predicted_batches.push_back(b);
  }
  out.profile_wall_s = ms_since(t0) / 1000.0;
}

// The payload rate from here to one device: empty probes give the round
// trip, then payloads sized for about probe_ms of transfer; the best rate.
LinkMeasurement probe_link(caf::actor_system& system, actors::Mailbox& self, const NodeLink& node,
                           const MeasureOptions& o) {
  const std::string& id = node.device->id;
  auto timed = [&](size_t bytes) {
    // An empty probe answers within the connect timeout; a payload gets 20 s
    // more (64 MiB at 30 Mbit/s).
    const auto timeout = o.connect_timeout + std::chrono::milliseconds(bytes > 0 ? 20000 : 0);
    messages::LinkProbe probe;
    probe.payload.assign(bytes, '\x5a');
    std::string failure;
    const auto t0 = Clock::now();
    auto reply = actors::ask(self, node.actor, probe, timeout, failure);
    const double ms = ms_since(t0);
    if (!reply) throw MeasureError("link probe to " + id + " failed: " + failure);
    if (!std::holds_alternative<messages::LinkProbe>(*reply))
      throw MeasureError(id + " answered a link probe with " + messages::kind_name(*reply));
    return ms;
  };
  LinkMeasurement m;
  std::vector<double> rtts;
  for (int i = 0; i < 5; ++i) rtts.push_back(timed(0));
  std::sort(rtts.begin(), rtts.end());
  m.rtt_ms = rtts[rtts.size() / 2];
  // A first payload to size the others (and to warm the connection up).
  double bytes = 1 << 20;
  double rate_bytes_per_ms = bytes / std::max(timed(static_cast<size_t>(bytes)) - m.rtt_ms, 0.05);
  bytes = std::clamp(rate_bytes_per_ms * o.probe_ms, 256.0 * 1024, 64.0 * 1024 * 1024);
  double best = 0;
  for (int i = 0; i < std::max(1, o.probe_rounds); ++i) {
    if (cancelled(o)) throw MeasureError("interrupted while measuring the links");
    const double ms = std::max(timed(static_cast<size_t>(bytes)) - m.rtt_ms, 0.01);
    best = std::max(best, bytes * 8 / 1e3 / ms);  // Mbit/s
  }
  m.mbps = best;
  m.payload_bytes = bytes;
  return m;
}

}  // namespace

ClusterMeasurement measure_cluster(caf::actor_system& system, const planner::Cluster& cluster,
                                   const MeasureOptions& o) {
  actors::ScopedMailbox self{system};
  std::vector<NodeLink> nodes;
  std::vector<std::string> unreachable;
  for (const auto& d : cluster.devices) {
    if (d.host.empty() || d.port <= 0) throw MeasureError("device '" + d.id + "' has no host and port");
    try {
      nodes.push_back({&d, connect(system, self, d, o.model, o.connect_timeout)});
    } catch (const MeasureError& e) {
      unreachable.push_back(e.what());
    }
  }
  if (!unreachable.empty()) throw MeasureError(join(unreachable));
  ClusterMeasurement out;
  profile_all(system, self, nodes, o, out);
  // Links one at a time, so that probes never share the hub's CPU.
  const auto t0 = Clock::now();
  for (const auto& n : nodes) {
    out.links[n.device->id] = probe_link(system, self, n, o);
    if (o.log) {
      char line[160];
      std::snprintf(line, sizeof line, "  link to %s: %.0f Mbit/s (round trip %.2f ms)", n.device->id.c_str(),
                    out.links[n.device->id].mbps, out.links[n.device->id].rtt_ms);
      o.log(line);
    }
  }
  out.links_wall_s = ms_since(t0) / 1000.0;
  return out;
}

planner::Cluster with_measured_links(const planner::Cluster& cluster,
                                     const std::map<std::string, LinkMeasurement>& links) {
  planner::Cluster out = cluster;
  out.links.clear();
  const auto& ds = cluster.devices;
  double slowest = 0;
  for (size_t i = 0; i < ds.size(); ++i) {
    for (size_t j = i + 1; j < ds.size(); ++j) {
      auto a = links.find(ds[i].id), b = links.find(ds[j].id);
      const double bw = a != links.end() && b != links.end() ? std::min(a->second.mbps, b->second.mbps)
                                                              : cluster.bandwidth_mbps(ds[i].id, ds[j].id);
      out.links.push_back({ds[i].id, ds[j].id, bw});
      slowest = slowest == 0 ? bw : std::min(slowest, bw);
    }
  }
  if (slowest > 0) out.default_bandwidth_mbps = slowest;
  return out;
}

}  // namespace asteroid::apps
