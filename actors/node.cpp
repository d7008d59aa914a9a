#include "actors/node.h"

#include <ATen/Parallel.h>
#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>
#include <map>
#include <memory>
#include <set>
#include <tuple>
#include <optional>

#include "actors/atoms.h"
#include "actors/heartbeat_datagram.h"
#include "actors/model_shipping.h"
#include "actors/node_context.h"
#include "actors/restart_budget.h"
#include "actors/stage_actor.h"
#include "actors/system_config.h"
#include "actors/transport.h"
#include "compute/model_zoo.h"
#include "compute/profiler.h"
#include "planner/json_io.h"
#include "messages/transport.h"

namespace asteroid::actors {
namespace {

using messages::now_us;

std::string read_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// The CPU quota of this process's cgroup as a fraction of one core (the
// smallest along its path up to the hierarchy's root; cgroup v1 cpu
// controller or v2 cpu.max), or 0 when there is none.
double cgroup_cpu_share() {
  std::ifstream cgroups("/proc/self/cgroup");
  std::string line, v1_path, v2_path;
  bool have_v1 = false, have_v2 = false;
  while (std::getline(cgroups, line)) {
    const auto a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string controllers = "," + line.substr(a + 1, b - a - 1) + ",";
    if (controllers.find(",cpu,") != std::string::npos) v1_path = line.substr(b + 1), have_v1 = true;
    if (controllers == ",," && line.compare(0, a, "0") == 0) v2_path = line.substr(b + 1), have_v2 = true;
  }
  // Mount points: "... root mountpoint ... - fstype source superoptions".
  std::ifstream mounts("/proc/self/mountinfo");
  std::string v1_mount, v1_root, v2_mount, v2_root;
  while (std::getline(mounts, line)) {
    std::istringstream in(line);
    std::vector<std::string> f;
    for (std::string w; in >> w;) f.push_back(w);
    auto dash = std::find(f.begin(), f.end(), "-");
    if (f.size() < 5 || dash == f.end() || f.end() - dash < 4) continue;
    const std::string& type = *(dash + 1);
    const std::string options = "," + *(dash + 3) + ",";
    if (type == "cgroup" && options.find(",cpu,") != std::string::npos) v1_mount = f[4], v1_root = f[3];
    if (type == "cgroup2") v2_mount = f[4], v2_root = f[3];
  }
  auto walk = [](const std::string& mount, const std::string& root, const std::string& path,
                 const std::function<double(const std::string&)>& share_of) {
    if (mount.empty() || path.compare(0, root.size(), root) != 0) return 0.0;
    std::string rel = path.substr(root == "/" ? 0 : root.size());
    double share = 0;
    while (true) {
      const double s = share_of(mount + (rel == "/" ? "" : rel));
      if (s > 0) share = share > 0 ? std::min(share, s) : s;
      if (rel.empty() || rel == "/") break;
      rel = rel.substr(0, rel.rfind('/'));
    }
    return share;
  };
  double share = 0;
  if (have_v1) {
    share = walk(v1_mount, v1_root, v1_path, [](const std::string& dir) {
      const double quota = std::atof(read_line(dir + "/cpu.cfs_quota_us").c_str());
      const double period = std::atof(read_line(dir + "/cpu.cfs_period_us").c_str());
      return quota > 0 && period > 0 ? quota / period : 0.0;
    });
  }
  if (share == 0 && have_v2) {
    share = walk(v2_mount, v2_root, v2_path, [](const std::string& dir) {
      std::istringstream in(read_line(dir + "/cpu.max"));
      std::string quota;
      double period = 0;
      in >> quota >> period;
      return quota != "max" && period > 0 ? std::atof(quota.c_str()) / period : 0.0;
    });
  }
  return share;
}

// Profiles a model here, under this node's emulation: each layer's CPU time
// (what it costs at full speed, unaffected by other processes on a shared
// machine) divided by the node's CPU share, the in-process throttle's or its
// cgroup's quota. A device under a share runs its compute at that fraction
// of a core once it is busy, which is what training keeps it; timing by
// wall clock under a cgroup quota would see short layers run at full speed
// (a quota only bites once a period's budget is spent).
messages::Message profile(NodeContext& node, const messages::ProfileRequest& request) {
  try {
    compute::ProfileOptions options;
    if (!request.batches.empty()) options.batches.assign(request.batches.begin(), request.batches.end());
    if (request.repeats > 0) options.repeats = static_cast<int>(request.repeats);
    options.cpu_time = true;
    planner::Profile profile = compute::profile_model(request.model, node.node_id, options);
    double share = node.throttle.share();
    if (!(share > 0 && share < 1)) share = cgroup_cpu_share();
    if (share > 0 && share < 1) {
      for (auto& [id, device] : profile.devices) {
        for (auto* table : {&device.fwd_ms, &device.bwd_ms}) {
          for (auto& layer : *table) {
            for (double& ms : layer) ms /= share;
          }
        }
        for (auto& [codec, speed] : device.codecs) {
          speed.encode_mb_s *= share;
          speed.decode_mb_s *= share;
        }
        for (auto& [kind, layers] : device.update_ms)
          for (double& ms : layers) ms /= share;
      }
    }
    return messages::ProfileResult{planner::profile_to_json(profile).dump()};
  } catch (const std::exception& e) {
    return messages::Error{messages::ErrorCode::invalid_request, "node " + node.node_id + " cannot profile: " + e.what()};
  }
}

// Opens a direct connection to every peer node now, so that stage actors
// reach each other directly from their first message instead of through the
// coordinator that introduced them (CAF's automatic connections switch
// routes later, while messages are in flight). All at once, each within a
// deadline: a peer that does not answer (frozen, cut off) costs the
// deadline once, not once per peer. A peer that cannot be reached now is
// not an error: traffic to it then takes CAF's own route; the reply lists
// such peers for the coordinator's log. A connect CAF drops before the
// peer's first message (retry_connect, actors/transport.h) is tried again,
// up to three times within the deadline.
messages::Message connect_peers(caf::blocking_actor* self, const NodeContext& node, const messages::Peers& peers) {
  auto& system = self->home_system();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  std::vector<const messages::Peer*> todo;
  for (const auto& peer : peers.peers)
    if (peer.device_id != node.node_id) todo.push_back(&peer);
  std::string failed;
  for (int attempt = 1; !todo.empty(); ++attempt) {
    std::vector<Endpoint> endpoints;
    for (const auto* peer : todo) endpoints.push_back(caf_endpoint(system, peer->host, peer->port, peer->device_id));
    for (const auto& endpoint : endpoints) wait_ready(endpoint, deadline);
    const auto left = std::max(std::chrono::milliseconds(1), std::chrono::duration_cast<std::chrono::milliseconds>(
                                                                 deadline - std::chrono::steady_clock::now()));
    using Handle = decltype(self->request(connection_manager(system), left, caf::connect_atom::value, std::string(),
                                          uint16_t{0}));
    std::vector<Handle> pending;
    for (const auto& to : endpoints)
      pending.push_back(self->request(connection_manager(system), left, caf::connect_atom::value, to.host, to.port));
    std::vector<const messages::Peer*> again;
    for (size_t i = 0; i < pending.size(); ++i) {
      const auto* peer = todo[i];
      pending[i].receive(
          [](const caf::node_id&, caf::strong_actor_ptr&, const std::set<std::string>&) {},
          [&](caf::error& e) {
            if (retry_connect(e) && attempt < 3 && std::chrono::steady_clock::now() < deadline) {
              again.push_back(peer);
              return;
            }
            failed += (failed.empty() ? "" : ", ") + peer->device_id + " at " + peer->host + ":" +
                      std::to_string(peer->port) + " (" +
                      connect_failure(system, peer->host, peer->port, system.render(e)) + ")";
          });
    }
    todo = std::move(again);
  }
  if (!failed.empty()) spdlog::warn("node {}: no direct connection yet to {}", node.node_id, failed);
  return messages::Peers{};
}

// What only an authenticated coordinator may ask of a node (with TLS).
bool is_control(const messages::Message& message) {
  return std::holds_alternative<messages::ProfileRequest>(message) ||
         std::holds_alternative<messages::Peers>(message) ||
         std::holds_alternative<messages::ReplicaRequest>(message) ||
         std::holds_alternative<messages::KeptRequest>(message) ||
         std::holds_alternative<messages::ModelFile>(message) || std::holds_alternative<messages::Release>(message);
}

// The device supervisor's part of the node actor: the stage actors hosted
// here, as their coordinators last assigned them; one that fails on its own
// (it leaves with unhandled_exception) is restarted in place while the
// budget allows, and its coordinator hears which actor took its place (or,
// with none, that the node gave up: the coordinator then loses the device).
// The replacement loads the stage's committed state, which the node keeps,
// when the coordinator assigns it again.
class StageSupervisor {
 public:
  StageSupervisor(caf::blocking_actor* self, std::shared_ptr<NodeContext> node, size_t restarts_a_minute)
      : self_(self), node_(std::move(node)), budget_(restarts_a_minute, std::chrono::minutes(1)) {}

  void watch(caf::actor& stage, caf::actor& coordinator, uint32_t stage_index, uint32_t member) {
    auto& slot = watched_[stage.address()];
    if (!slot.stage) self_->monitor(stage);
    slot = {stage, coordinator, stage_index, member};
  }

  void on_down(const caf::down_msg& down) {
    auto found = watched_.find(down.source);
    if (found == watched_.end()) return;
    const Slot slot = std::move(found->second);
    watched_.erase(found);
    if (down.reason != caf::exit_reason::unhandled_exception || node_->stopping) return;  // stopped, not failed
    messages::RoundControl notice;
    notice.kind = messages::ControlKind::restarted;
    notice.stage = slot.stage_index;
    notice.member = slot.member;
    caf::actor replacement;
    if (budget_.take(std::chrono::steady_clock::now())) {
      replacement = self_->home_system().spawn(stage_actor, node_);
      spdlog::warn("node {}: the stage {} member {} actor failed; restarted it in place", node_->node_id,
                   slot.stage_index, slot.member);
    } else {
      spdlog::error("node {}: the stage {} member {} actor failed again, after {}: gave up (the job leaves this "
                    "device out)",
                    node_->node_id, slot.stage_index, slot.member, budget_.exhausted());
    }
    self_->send(slot.coordinator, messages::to_wire(notice), slot.stage, replacement);
  }

 private:
  struct Slot {
    caf::actor stage, coordinator;
    uint32_t stage_index = 0, member = 0;
  };
  caf::blocking_actor* self_;
  std::shared_ptr<NodeContext> node_;
  RestartBudget budget_;
  std::map<caf::actor_addr, Slot> watched_;
};

// The published actor of a node: answers hello, heartbeats, link probes and
// profile requests, keeps replicas, and supervises the stage actors hosted
// here (StageSupervisor). Blocking, hence on a thread of its
// own, so profiling (long compute) never starves the node's I/O. Heartbeats
// reach it only from a monitor on the actor transport; the default ones are
// datagrams, answered by the node's HeartbeatResponder (run_node).
void node_actor(caf::blocking_actor* self, std::shared_ptr<NodeContext> node, size_t stage_restarts) {
  StageSupervisor supervisor(self, node, stage_restarts);
  auto answer = [&](messages::Message&& message, const std::string& authorization) -> messages::Message {
    if (is_control(message) && !node->authorized(authorization, std::string("take a ") + messages::kind_name(message))) {
      return messages::Error{messages::ErrorCode::invalid_request,
                             "node " + node->node_id + " takes " + messages::kind_name(message) +
                                 " messages only from an authenticated coordinator"};
    }
    return std::visit(
        [&](auto& m) -> messages::Message {
          using T = std::decay_t<decltype(m)>;
          if constexpr (std::is_same_v<T, messages::Hello>) {
            return node->info();
          } else if constexpr (std::is_same_v<T, messages::Heartbeat>) {
            return messages::Heartbeat{node->node_id, m.sequence, now_us(), {}};
          } else if constexpr (std::is_same_v<T, messages::ProfileRequest>) {
            return profile(*node, m);
          } else if constexpr (std::is_same_v<T, messages::LinkProbe>) {
            return messages::LinkProbe{};
          } else if constexpr (std::is_same_v<T, messages::StageState>) {
            messages::RoundControl ack;
            ack.kind = messages::ControlKind::replicated;
            ack.round = m.round;
            node->store_replica(std::move(m));
            return ack;
          } else if constexpr (std::is_same_v<T, messages::Peers>) {
            node->crash_point("peers", node->peers_asked++);
            if (node->peer_watch) node->peer_watch->set_peers(m.peers);
            return connect_peers(self, *node, m);
          } else if constexpr (std::is_same_v<T, messages::ReplicaRequest>) {
            if (auto kept = node->kept(m.job_id, m.layer_begin, m.layer_end, m.round)) return *kept;
            return messages::Error{messages::ErrorCode::invalid_request,
                                   "node " + node->node_id + " holds no state of layers " +
                                       std::to_string(m.layer_begin) + "-" + std::to_string(m.layer_end) +
                                       " at round " + std::to_string(m.round)};
          } else if constexpr (std::is_same_v<T, messages::KeptRequest>) {
            return messages::KeptList{node->kept_list(m.job_id)};
          } else if constexpr (std::is_same_v<T, messages::ModelFile>) {
            try {
              take_model_file(m);
              spdlog::info("node {}: received model {} ({} bytes)", node->node_id, m.name, m.bytes.size());
              return node->info();
            } catch (const std::exception& e) {
              return messages::Error{messages::ErrorCode::invalid_request,
                                     "node " + node->node_id + " cannot take model " + m.name + ": " + e.what()};
            }
          } else if constexpr (std::is_same_v<T, messages::Release>) {
            const size_t dropped = node->release(m);
            if (dropped > 0) spdlog::info("node {}: released {} kept state(s) of job {}", node->node_id, dropped, m.job_id);
            return node->info();
          } else {
            return messages::Error{messages::ErrorCode::invalid_request,
                                   std::string("a node does not accept ") + messages::kind_name(message) + " messages"};
          }
        },
        message);
  };
  bool running = true;
  self->receive_while([&] { return running; })(
      [&](messages::WireMessage& wire) {
        const bool is_request = self->current_mailbox_element()->mid.is_request();
        auto sender = caf::actor_cast<caf::actor>(self->current_sender());
        auto decoded = messages::from_wire(std::move(wire));
        messages::Message reply =
            decoded.ok() ? answer(std::move(*decoded.message), decoded.authorization)
                         : messages::Error{messages::ErrorCode::invalid_message, decoded.error};
        if (is_request) {
          self->make_response_promise<messages::WireMessage>().deliver(messages::to_wire(reply));
        } else if (sender) {
          self->send(sender, messages::to_wire(reply));  // e.g. a replica's acknowledgement
        }
      },
      [&](supervise_atom, caf::actor& stage, caf::actor& coordinator, uint32_t stage_index, uint32_t member) {
        // Only the stage actors of this process put themselves under watch.
        if (stage && stage.node() == self->node()) supervisor.watch(stage, coordinator, stage_index, member);
      },
      [&](caf::down_msg& down) { supervisor.on_down(down); },
      [&](caf::exit_msg& exit) {
        // Only run_node stops the node, on its signal; an exit message from
        // anywhere else is a control message nobody may send.
        if (!node->stopping) {
          node->refuse("stop (" + self->home_system().render(exit.reason) + ")");
          return;
        }
        self->fail_state(exit.reason);
        running = false;
      });
}

}  // namespace

int run_node(const NodeOptions& options) {
  // Termination signals are taken by sigwait below, in this thread only.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  at::set_num_threads(options.threads);
  auto node = std::make_shared<NodeContext>(options.id, static_cast<uint64_t>(options.memory_mb * 1048576.0),
                                            options.cpu_share);

  node->torch_threads = options.threads;
  using Action = NodeContext::FaultAction;
  for (const auto& [fault_at, action] : {std::pair{options.crash_at, Action::kill}, std::pair{options.freeze_at, Action::freeze},
                                          std::pair{options.hang_at, Action::hang},
                                          std::pair{options.fail_at, Action::fail},
                                          std::pair{options.anonymous_at, Action::anonymous}}) {
    if (fault_at.empty()) continue;
    const auto colon = fault_at.find(':');
    node->crash_event = fault_at.substr(0, colon);
    node->crash_round = colon == std::string::npos ? 0 : std::stoll(fault_at.substr(colon + 1));
    node->fault_action = action;
  }
  try {
    node->peer_watch = std::make_shared<PeerWatch>(options.id, std::chrono::milliseconds(options.peer_interval_ms),
                                                   std::chrono::milliseconds(options.peer_deadline_ms));
  } catch (const std::exception& e) {
    spdlog::error("asteroid node {}: {}", options.id, e.what());
    return 1;
  }
  SystemOptions system_options;
  if (!options.tls_dir.empty()) {
    try {
      system_options.tls = std::make_shared<TlsTransport>(TlsIdentity{options.tls_dir, options.id, options.allow});
    } catch (const std::exception& e) {
      spdlog::error("asteroid node {}: {}", options.id, e.what());
      return 1;
    }
    node->control_token = system_options.tls->control_token();
    node->tls = system_options.tls;
  }
  TlsTransport* tls = system_options.tls.get();
  AsteroidConfig config(system_options, node);
  caf::actor_system system(config);
  auto actor = system.spawn(node_actor, node, options.stage_restarts);
  node->supervisor = actor.address();
  auto stop = [&] {
    node->stopping = true;
    caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
  };
  // With TLS, CAF listens on the loopback and the public port is the TLS
  // gateway's (actors/tls.h).
  uint16_t caf_port = 0;
  if (tls) {
    const Published published = publish_actor(system, actor, 0, "127.0.0.1");
    if (!published.error.empty()) {
      spdlog::error("asteroid node {}: cannot listen on the loopback: {}", options.id, published.error);
      stop();
      return 1;
    }
    caf_port = published.port;
  }
  // The public port (CAF's or the gateway's) and UDP (heartbeats,
  // heartbeat_datagram.h) on the same port number, the UDP side up before
  // the node says it listens, so a monitor never misses the first
  // heartbeat. With port 0 the TCP port is any free one, and its number may
  // be taken on UDP (by another process's heartbeat socket): then another
  // port is tried.
  std::weak_ptr<PeerWatch> watch = node->peer_watch;
  auto unreachable = [watch] {
    auto w = watch.lock();
    return w ? w->unreachable() : std::vector<std::string>{};
  };
  // With TLS: the coordinator's heartbeats come with the control token's
  // MAC, the pipeline peers' with their job's key (heartbeat_datagram.h).
  auto heartbeat_keys = [watch, token = node->control_token] {
    std::vector<std::string> keys;
    if (token.empty()) return keys;
    keys.push_back(token);
    if (auto w = watch.lock())
      for (auto& key : w->keys()) keys.push_back(std::move(key));
    return keys;
  };
  std::unique_ptr<HeartbeatResponder> heartbeats;
  uint16_t port = 0;
  for (int attempt = 1; !heartbeats; ++attempt) {
    std::string error;
    if (tls) {
      try {
        port = tls->serve(options.host, options.port, caf_port);
      } catch (const std::exception& e) {
        error = e.what();
      }
    } else {
      const Published published = publish_actor(system, actor, options.port, options.host);
      port = published.port;
      error = published.error;
    }
    if (!error.empty()) {
      spdlog::error("asteroid node {}: cannot listen on {}:{}: {}", options.id, options.host, options.port, error);
      stop();
      return 1;
    }
    try {
      heartbeats = std::make_unique<HeartbeatResponder>(options.host, port, options.id, unreachable, heartbeat_keys);
    } catch (const std::exception& e) {
      if (options.port == 0 && attempt < 8) {
        spdlog::info("asteroid node {}: {}; trying another port", options.id, e.what());
        if (tls) {
          tls->stop_serving(port);
        } else {
          unpublish_actor(system, actor, port);
        }
        continue;
      }
      spdlog::error("asteroid node {}: {}", options.id, e.what());
      stop();
      return 1;
    }
  }
  std::printf("asteroid node %s listening on %s:%u%s\n", options.id.c_str(), options.host.c_str(), port,
              tls ? " (mutual TLS)" : "");
  std::fflush(stdout);

  int signal = 0;
  sigwait(&signals, &signal);
  spdlog::info("node {}: signal {}, shutting down", options.id, signal);
  stop();
  node->stop_stages();
  return 0;
}

}  // namespace asteroid::actors
