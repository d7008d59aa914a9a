#include "actors/coordinator.h"

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <functional>
#include <utility>

#include <nlohmann/json.hpp>

#include "actors/ask.h"
#include "actors/atoms.h"
#include "actors/connect.h"
#include "actors/mailbox.h"
#include "actors/model_shipping.h"
#include "actors/partitions.h"
#include "actors/tls.h"
#include "actors/transport.h"
#include "messages/transport.h"
#include "planner/cost_model.h"
#include "planner/json_io.h"

namespace asteroid::actors {
namespace {

using messages::WireMessage;
using Clock = std::chrono::steady_clock;

std::string address_of(const planner::Device& d) { return d.host + ":" + std::to_string(d.port); }

std::string range_text(const planner::Stage& s) {
  return "layers " + std::to_string(s.begin) + "-" + std::to_string(s.end);
}

}  // namespace

struct Coordinator::Impl {
  struct Node {
    const planner::Device* device = nullptr;
    caf::node_id id;
    caf::actor actor;
    messages::NodeInfo info;
  };
  struct Member {
    uint32_t stage = 0, member = 0;
    std::string device;
    caf::actor actor;
    int begin = 0, end = 0;  // its layers
  };
  Impl(Mailbox* host, caf::actor_system& system, JobSpec spec)
      : system(system),
        own_mailbox(host ? nullptr : std::make_unique<ScopedMailbox>(system)),
        self(host ? *host : *own_mailbox),
        spec(std::move(spec)),
        ledger(ledger_rules(this->spec)) {
    self.answer_status([this] { return status(); });
  }
  ~Impl() { self.answer_status({}); }

  static RoundLedger::Rules ledger_rules(const JobSpec& spec) {
    return {spec.rounds_ahead,  spec.end_round,      spec.replicate_every, spec.commit_every,
            spec.max_uncommitted_rounds, spec.replica_link_share};
  }

  caf::actor_system& system;
  std::unique_ptr<ScopedMailbox> own_mailbox;  // when no host lends its own
  Mailbox& self;                               // where the job's messages arrive
  JobSpec spec;
  // With TLS: the MAC key of the heartbeats between this job's nodes, given
  // to them with their peers (actors/heartbeat_datagram.h).
  const std::string peer_heartbeat_key = tls_of(system) ? random_bytes(32) : std::string();
  std::map<std::string, Node> nodes;  // by device id
  std::vector<Member> members;        // stage by stage, member by member
  RoundLedger ledger;                 // rounds, commits, replicas (round_ledger.h)
  std::map<std::pair<uint32_t, uint32_t>, messages::StageState> central;  // by layer range
  std::set<std::string> lost_between;  // reported lost while no round ran
  std::vector<StageFailed> failed_between;  // members of this deployment that reported failing then
  std::set<std::string> returned;      // reported back
  std::set<std::string> reported_lost;  // lost by the monitor's last word on them
  PartitionJudge partitions;            // cut links between devices the monitor still hears
  std::set<caf::actor_addr> dead_actors;  // members whose actor went down or reported failing
  // Stage actors that failed on their own, by the failed actor: what their
  // device supervisor (the node) restarted in their place; a null actor:
  // it gave up (restart_in_place).
  std::map<caf::actor_addr, caf::actor> restarted;
  std::vector<messages::TraceEvent> trace;
  std::map<std::string, uint64_t> peak_memory;
  std::map<uint64_t, std::map<std::string, double>> compute_ms;  // by round, device (Metrics.compute_us)
  // Per device, over the job: what its members reported (Metrics) and the
  // committed rounds' time while it was in use (status(), the service's
  // /metrics: waiting is the rest).
  struct DeviceTally {
    double compute_s = 0, send_s = 0, all_reduce_s = 0, in_rounds_s = 0;
    std::map<wire_codec::Codec, uint64_t> sent_bytes;  // by the codec of what was sent
  };
  std::map<std::string, DeviceTally> tally;
  // The trace events of the latest rounds (status(): the last committed
  // round's step x stage timeline, for a live view).
  std::map<uint64_t, std::vector<messages::TraceEvent>> recent_ops;
  uint64_t deployments = 0;  // deploy and redeploy calls
  std::set<uint32_t> resume_from_kept;  // stages a restart in place starts from their node's copy
  std::map<caf::actor_addr, caf::actor> replacing;  // old member -> its replacement, during a restart in place
  std::function<void(const RoundReport&)> commit_listener;  // see Coordinator::on_commit
  std::vector<RoundReport> committed_reports;               // committed, not yet returned
  uint64_t dropped = 0;  // messages not taken (see drop)
  bool release_due = false;  // a plan was deployed and has not committed a round yet
  std::map<std::string, uint64_t> kept_bytes;  // by device, as its node last reported
  std::set<std::string> probing;                  // devices asked for a short profile, no answer yet
  std::map<std::string, planner::Profile> probes;  // their answers, not yet taken

  // ------------------------------------------------------------- connecting

  const planner::Device& device(const std::string& id) const {
    const int index = spec.cluster.index_of(id);
    if (index < 0) throw JobError("the plan uses device '" + id + "', which the cluster does not list");
    const planner::Device& d = spec.cluster.devices[static_cast<size_t>(index)];
    if (d.host.empty() || d.port <= 0) {
      throw JobError("device '" + id + "' has no host and port in the cluster file, so it cannot run a stage");
    }
    return d;
  }

  // Sends `request` and waits for one envelope in reply, at most `timeout`.
  // Returns the decoded reply or throws JobError with `what` and the reason;
  // DeviceLost when `device` (the target's) is reported lost meanwhile.
  messages::Message ask(const caf::actor& to, const messages::Message& request, std::chrono::milliseconds timeout,
                        const std::string& what, const std::string& device = "") {
    std::string failure;
    auto answer = actors::ask(self, to, request, timeout, failure, abandon_if_lost({device}));
    throw_if_abandoned(what + ": " + failure);
    if (!answer) throw JobError(what + ": " + failure);
    return std::move(*answer);
  }

  // What an ask does with the heartbeat monitor's verdicts while it waits:
  // remembers each (as receive_one does outside a round) and abandons the
  // ask when the device is one of `targets` (a frozen node never answers,
  // and waiting for its deadline would stall the recovery).
  std::string abandoned_for;
  LossHandler abandon_if_lost(std::set<std::string> targets) {
    abandoned_for.clear();
    return [this, targets = std::move(targets)](const std::string& device) {
      returned.erase(device);
      reported_lost.insert(device);
      if (targets.count(device)) {
        abandoned_for = device;
        return true;
      }
      lost_between.insert(device);
      return false;
    };
  }
  void throw_if_abandoned(const std::string& what) {
    if (abandoned_for.empty()) return;
    const std::string device = std::exchange(abandoned_for, std::string());
    throw DeviceLost(device, what);
  }

  Node& connect(const std::string& id, bool again = false, std::optional<std::chrono::milliseconds> within = {}) {
    auto found = nodes.find(id);
    if (found != nodes.end() && !again) return found->second;
    const auto timeout = within.value_or(spec.connect_timeout);
    const planner::Device& d = device(id);
    Node node;
    node.device = &d;
    std::string failure;
    const auto reached = connect_node(self, d, timeout, failure);
    const std::string where = "device '" + id + "' at " + address_of(d);
    if (!reached) throw JobError(where + " is unreachable: " + failure);
    node.id = reached->id;
    node.actor = reached->actor;
    auto info = ask(node.actor, messages::Hello{}, timeout, where + " did not say who it is", id);
    if (auto* i = std::get_if<messages::NodeInfo>(&info)) {
      node.info = *i;
    } else {
      throw JobError(where + " answered hello with " + messages::kind_name(info));
    }
    if (!ship_model(self, node.actor, node.info, spec.model, spec.deploy_timeout, failure))
      throw JobError(where + " did not take model " + spec.model + ": " + failure);
    self.self()->monitor(node.actor);
    spdlog::debug("connected to {} at {} (node {})", id, address_of(d), node.info.node_id);
    nodes[id] = std::move(node);
    return nodes[id];
  }

  // ------------------------------------------------------------- deploying

  messages::StageAssignment assignment(size_t stage, size_t member, const messages::StageState* state) const {
    const auto& stages = spec.plan.stages;
    auto group_of = [&](size_t s) {
      std::vector<messages::GroupMember> group;
      for (const auto& d : stages[s].devices) group.push_back({d.id, static_cast<uint32_t>(d.samples)});
      return group;
    };
    messages::StageAssignment a;
    a.job_id = spec.job_id;
    a.deployment = deployments;
    a.resume_from_kept = !state && resume_from_kept.count(static_cast<uint32_t>(stage));
    a.model = spec.model;
    a.stage = static_cast<uint32_t>(stage);
    a.stage_count = static_cast<uint32_t>(stages.size());
    a.layer_begin = static_cast<uint32_t>(stages[stage].begin);
    a.layer_end = static_cast<uint32_t>(stages[stage].end);
    a.member = static_cast<uint32_t>(member);
    a.group = group_of(stage);
    if (stage > 0) a.prev_group = group_of(stage - 1);
    if (stage + 1 < stages.size()) a.next_group = group_of(stage + 1);
    a.batch = static_cast<uint32_t>(spec.plan.batch);
    a.microbatches = static_cast<uint32_t>(spec.plan.microbatches);
    a.microbatch_size = static_cast<uint32_t>(spec.plan.microbatch_size);
    a.optimizer = spec.optimizer;
    a.seed = spec.seed;
    a.data_seed = spec.data_seed;
    a.first_round = ledger.next_round();
    if (state) a.initial_state = *state;
    a.trace = spec.trace;
    auto memory = spec.required_memory_bytes.find(stages[stage].devices[member].id);
    if (memory != spec.required_memory_bytes.end()) a.required_memory_bytes = memory->second;
    a.replicate_every = spec.replicate_every;
    a.central_every = spec.central_every;
    a.codec_to_next = stages[stage].to_next;
    if (stage > 0) a.codec_from_prev = stages[stage - 1].to_next;
    a.codec_all_reduce = stages[stage].allreduce;
    a.codec_block = spec.plan.codec_block;
    return a;
  }

  std::vector<caf::actor> handles_of(size_t stage) const {
    std::vector<caf::actor> handles;
    for (const Member& m : members) {
      if (m.stage == stage) handles.push_back(m.actor);
    }
    return handles;
  }

  // Stages whose replica a holder keeps (single-device groups, P > 1).
  std::map<uint32_t, std::string> replica_holders() const {
    std::map<uint32_t, std::string> holders;
    if (spec.replicate_every == 0) return holders;
    for (size_t s = 0; s < spec.plan.stages.size(); ++s) {
      if (auto holder = planner::replica_holder(spec.plan, static_cast<int>(s))) holders[static_cast<uint32_t>(s)] = *holder;
    }
    return holders;
  }

  // Every node of the plan connects to every other one before any stage
  // traffic (see connect_peers in node.cpp).
  void connect_mesh() {
    messages::Peers peers;
    for (const auto& stage : spec.plan.stages) {
      for (const auto& d : stage.devices) {
        const planner::Device& device = this->device(d.id);
        peers.peers.push_back({d.id, device.host, static_cast<uint16_t>(device.port), peer_heartbeat_key});
      }
    }
    if (peers.peers.size() < 2) return;
    // All nodes at once: each connects to its peers in parallel within 5 s.
    std::vector<caf::actor> targets;
    for (const auto& peer : peers.peers) targets.push_back(connect(peer.device_id).actor);
    std::set<std::string> devices;
    for (const auto& peer : peers.peers) devices.insert(peer.device_id);
    const auto answers = ask_all(self, targets, peers, spec.connect_timeout + std::chrono::seconds(5),
                                 abandon_if_lost(devices));
    throw_if_abandoned("device '" + abandoned_for + "' stopped answering heartbeats while the plan's devices connected");
    for (size_t i = 0; i < answers.size(); ++i) {
      if (!answers[i].message) {
        throw JobError("device '" + peers.peers[i].device_id + "' could not connect to the other devices: " +
                       answers[i].failure);
      }
    }
  }

  caf::actor spawn_stage(const std::string& id) {
    Node& node = connect(id);
    // Spawning creates an empty actor (the stage's model is built at its
    // assignment): the connection deadline bounds it, so a node frozen
    // right after the mesh connected costs 5 s here, not the deploy's 60.
    const Spawned spawned = remote_spawn_actor(self, node.id, "stage", spec.connect_timeout);
    if (!spawned.actor) {
      throw JobError("device '" + id + "' at " + address_of(*node.device) +
                     " could not spawn a stage actor: " + spawned.error);
    }
    self.self()->monitor(spawned.actor);
    return spawned.actor;
  }

  // Sends every member its assignment (members[i] gets states[stage] when
  // given and non-empty) and waits for each to accept.
  void assign(const std::vector<messages::StageState>& states) {
    const auto holders = replica_holders();
    for (const Member& m : members) {
      const messages::StageState* state =
          m.stage < states.size() && states[m.stage].present() ? &states[m.stage] : nullptr;
      const auto a = assignment(m.stage, m.member, state);
      std::vector<caf::actor> holder;
      auto h = holders.find(m.stage);
      if (h != holders.end()) holder.push_back(connect(h->second).actor);
      std::string failure;
      const auto prev = m.stage > 0 ? handles_of(m.stage - 1) : std::vector<caf::actor>{};
      const auto accepted = actors::ask(
          self, m.actor,
          caf::make_message(wire_for(system, m.actor, a), prev, handles_of(m.stage), handles_of(m.stage + 1), holder,
                            self.handle()),
          spec.deploy_timeout, failure, abandon_if_lost({m.device}));
      if (!accepted) {
        const std::string what = "device '" + m.device + "' refused stage " + std::to_string(m.stage) + " (" +
                                 range_text(spec.plan.stages[m.stage]) + "): " + failure;
        throw_if_abandoned(what);
        if (failure.find("went down") != std::string::npos) throw DeviceLost(m.device, what);
        throw JobError(what);
      }
    }
  }

  void deploy(uint64_t first_round, const std::vector<messages::StageState>& states) {
    const auto& stages = spec.plan.stages;
    if (stages.empty()) throw JobError("the plan has no stages");
    if (!states.empty() && states.size() != stages.size()) {
      throw JobError("got " + std::to_string(states.size()) + " stage states for " + std::to_string(stages.size()) +
                     " stages");
    }
    // Connect to every device first, so an unreachable one fails the job
    // before anything is spawned.
    for (const auto& stage : stages) {
      for (const auto& d : stage.devices) connect(d.id);
    }
    connect_mesh();
    ledger.restart_after(first_round == 0 ? std::nullopt : std::optional<uint64_t>(first_round - 1));
    ++deployments;
    for (size_t s = 0; s < stages.size(); ++s) {
      for (size_t m = 0; m < stages[s].devices.size(); ++m) {
        const std::string& id = stages[s].devices[m].id;
        members.push_back({static_cast<uint32_t>(s), static_cast<uint32_t>(m), id, spawn_stage(id), stages[s].begin,
                           stages[s].end});
      }
    }
    assign(states);
    seed_replicas(states);
    release_due = true;
  }

  // Gives every replica holder of the plan the state its stage starts from
  // (states[stage]), so that a single-device stage lost before the new
  // plan's first replica lands still has a copy: the previous holder may be
  // gone or no longer one. A holder that cannot take it counts as lost.
  void seed_replicas(const std::vector<messages::StageState>& states) {
    for (const auto& [stage, holder] : replica_holders()) {
      if (stage >= states.size() || states[stage].weights.empty()) continue;
      messages::StageState replica = states[stage];
      replica.job_id = spec.job_id;
      std::string failure;
      if (!actors::ask(self, connect(holder).actor, replica, spec.deploy_timeout, failure, abandon_if_lost({holder}))) {
        abandoned_for.clear();
        throw DeviceLost(holder, "device '" + holder + "' could not take the replica of stage " +
                                     std::to_string(stage) + ": " + failure);
      }
    }
  }

  // ------------------------------------------------------------- rounds

  void broadcast(const messages::Message& message, const std::set<std::string>& except = {}) {
    const auto wire = messages::to_wire(message);
    for (const Member& m : members) {
      if (!except.count(m.device)) self.send(m.actor, wire);
    }
  }

  const Member* member_at(uint32_t stage, uint32_t member) const {
    for (const Member& m : members) {
      if (m.stage == stage && m.member == member) return &m;
    }
    return nullptr;
  }

  // The device whose node actor is `address`, or "".
  std::string node_device(const caf::actor_addr& address) const {
    for (const auto& [id, node] : nodes) {
      if (node.actor.address() == address) return id;
    }
    return "";
  }

  std::string device_of(const caf::actor_addr& address) const {
    for (const Member& m : members) {
      if (m.actor.address() == address) return m.device;
    }
    return node_device(address);
  }

  // Counts and logs a message that is not taken (malformed, or not from a
  // member of the running deployment, or claiming another member's place).
  void drop(const std::string& what, const caf::actor_addr& sender, const std::string& why) {
    ++dropped;
    const std::string device = device_of(sender);
    spdlog::warn("coordinator: dropped {} from {}: {} ({} dropped so far)", what,
                 device.empty() ? caf::to_string(sender) : "device '" + device + "'", why, dropped);
  }

  void on_envelope(messages::Message& message, const caf::actor_addr& sender) {
    if (auto* info = std::get_if<messages::NodeInfo>(&message)) {
      // A node's answer to a release (release_superseded).
      const std::string device = node_device(sender);
      if (device.empty()) return drop("a nodeInfo", sender, "not a node of this job");
      kept_bytes[device] = info->kept_bytes;
      return;
    }
    if (auto* result = std::get_if<messages::ProfileResult>(&message)) {
      // A node's answer to a probe (probe_speed).
      const std::string device = node_device(sender);
      if (device.empty() || !probing.erase(device)) return drop("a profileResult", sender, "no probe asked it");
      try {
        probes[device] = planner::profile_from_json(nlohmann::json::parse(result->json), "probe of " + device);
      } catch (const std::exception& e) {
        drop("a profileResult", sender, e.what());
      }
      return;
    }
    if (auto* error = std::get_if<messages::Error>(&message); error && probing.count(node_device(sender))) {
      const std::string device = node_device(sender);
      probing.erase(device);
      spdlog::warn("coordinator: device '{}' could not be probed: {}", device, error->message);
      return;
    }
    const Member* from = member_by_address(sender);
    if (!from) return drop(std::string("a ") + messages::kind_name(message), sender, "not a member of this deployment");
    auto claims = [&](uint32_t stage, uint32_t member) {
      if (stage == from->stage && member == from->member) return true;
      drop(std::string("a ") + messages::kind_name(message), sender,
           "it claims stage " + std::to_string(stage) + " member " + std::to_string(member) + " but is stage " +
               std::to_string(from->stage) + " member " + std::to_string(from->member));
      return false;
    };
    std::visit(
        [&](auto& m) {
          using T = std::decay_t<decltype(m)>;
          if constexpr (std::is_same_v<T, messages::RoundControl>) {
            if (!claims(m.stage, m.member)) return;
            if (m.kind == messages::ControlKind::done) {
              ledger.member_done(m.round, m.stage, m.member, m.loss_sum, m.samples, m.correct);
            } else if (m.kind == messages::ControlKind::replicated && ledger.replica_stored(m.stage, m.round, Clock::now())) {
              advance_commits(false);
            }
          } else if constexpr (std::is_same_v<T, messages::Metrics>) {
            if (!claims(m.stage, m.member)) return;
            if (spec.trace) trace.insert(trace.end(), m.events.begin(), m.events.end());
            if (const Member* member = member_at(m.stage, m.member)) {
              auto& peak = peak_memory[member->device];
              peak = std::max(peak, m.peak_memory_bytes);
              compute_ms[m.round][member->device] += m.compute_us / 1000.0;
              auto& ops = recent_ops[m.round];
              ops.insert(ops.end(), m.events.begin(), m.events.end());
              while (recent_ops.size() > 4) recent_ops.erase(recent_ops.begin());
              DeviceTally& t = tally[member->device];
              t.compute_s += m.compute_us / 1e6;
              for (const auto& e : m.events) {
                const double s = (e.end_us - e.start_us) / 1e6;
                if (e.kind == messages::TraceKind::send) {
                  t.send_s += s;
                  t.sent_bytes[e.codec] += e.bytes;
                } else if (e.kind == messages::TraceKind::all_reduce) {
                  t.all_reduce_s += s;
                }
              }
            }
          } else if constexpr (std::is_same_v<T, messages::StageState>) {
            central[{m.layer_begin, m.layer_end}] = std::move(m);  // the central copy (FTPipeHD)
          } else if constexpr (std::is_same_v<T, messages::Error>) {
            if (m.code == messages::ErrorCode::disconnected) throw DeviceLost(from->device, m.message);
            dead_actors.insert(sender);  // a stage that reports failing leaves; its node restarts it
            throw StageFailed(from->device, from->stage, m.message);
          } else {
            drop(std::string("a ") + messages::kind_name(message), sender, "not a message a stage sends the coordinator");
          }
        },
        message);
  }

  // A node's word that its device supervisor restarted a stage actor of
  // this deployment that failed on its own (a null replacement: it gave
  // up). Taken only from the node of that member's device.
  void on_restarted(messages::WireMessage& wire, const caf::actor& failed, const caf::actor& replacement,
                    const caf::actor_addr& sender) {
    auto decoded = messages::from_wire(std::move(wire));
    const auto* notice = decoded.ok() ? std::get_if<messages::RoundControl>(&*decoded.message) : nullptr;
    if (!notice || notice->kind != messages::ControlKind::restarted) {
      return drop("a message with two actors", sender, decoded.ok() ? "not a restart notice" : decoded.error);
    }
    const std::string device = node_device(sender);
    const Member* m = failed ? member_by_address(failed.address()) : nullptr;
    if (device.empty() || (m && (m->device != device || m->stage != notice->stage || m->member != notice->member))) {
      return drop("a restart notice", sender, "not from the node of the stage actor it names");
    }
    if (!m) {
      // A member of an earlier deployment: its replacement has nothing to do.
      if (replacement) caf::anon_send_exit(replacement, caf::exit_reason::user_shutdown);
      return;
    }
    restarted[failed.address()] = replacement;
  }

  const Member* member_by_address(const caf::actor_addr& address) const {
    for (const Member& m : members) {
      if (m.actor.address() == address) return &m;
    }
    return nullptr;
  }

  size_t members_on(const std::string& device) const {
    return static_cast<size_t>(std::count_if(members.begin(), members.end(),
                                             [&](const Member& m) { return m.device == device; }));
  }

  bool in_use(const std::string& device) const {
    return std::any_of(members.begin(), members.end(), [&](const Member& m) { return m.device == device; });
  }

  // Handles one non-envelope event: a down notification or a report of the
  // heartbeat monitor. Throws DeviceLost / StageFailed for what concerns
  // the running plan when `throwing`, else remembers it.
  void on_down(const caf::down_msg& down) {
    dead_actors.insert(down.source);
    if (const Member* m = member_by_address(down.source)) {
      // A lost connection means the device is gone; any other reason means
      // the actor itself failed on a node that lives on.
      if (down.reason == caf::exit_reason::remote_link_unreachable) {
        throw DeviceLost(m->device, "device '" + m->device + "' went down: " + system.render(down.reason));
      }
      // unhandled_exception: it failed on its own, and its node restarts it.
      throw StageFailed(m->device, m->stage, "the stage " + std::to_string(m->stage) + " actor on device '" +
                                                 m->device + "' failed: " + system.render(down.reason));
    }
    for (const auto& [id, node] : nodes) {
      if (node.actor.address() == down.source && in_use(id)) {
        throw DeviceLost(id, "device '" + id + "' went down: " + system.render(down.reason));
      }
    }
  }

  // Receives until `finished()` holds, handling whatever arrives; throws
  // DeviceLost / StageFailed / JobError on failures and on the deadline.
  void receive_until(const std::function<bool()>& finished, Clock::time_point deadline, const std::string& what) {
    throw_lost_in_use();
    while (!finished()) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (!receive_one(left, /*in_round=*/true)) throw RoundStalled(what + " made no progress in time");
    }
  }

  std::string status() const {
    nlohmann::json s;
    s["next_round"] = ledger.next_round();
    s["last_committed"] = ledger.committed() ? nlohmann::json(*ledger.committed()) : nlohmann::json(nullptr);
    const auto& last = ledger.last_committed_report();
    s["last_loss"] = last ? nlohmann::json(last->loss) : nlohmann::json(nullptr);
    s["plan"] = planner::plan_to_json(spec.plan);
    nlohmann::json devices = nlohmann::json::object();
    for (const auto& d : spec.cluster.devices)
      devices[d.id] = reported_lost.count(d.id)                ? "lost"
                      : partitions.partitioned().count(d.id) ? "partitioned"
                      : in_use(d.id)                         ? "in use"
                                                             : "idle";
    s["devices"] = devices;
    nlohmann::json times = nlohmann::json::object();
    for (const auto& [id, t] : tally) {
      nlohmann::json sent = nlohmann::json::object();
      for (const auto& [codec, bytes] : t.sent_bytes) sent[wire_codec::codec_name(codec)] = bytes;
      times[id] = {{"compute_s", t.compute_s},     {"send_s", t.send_s}, {"all_reduce_s", t.all_reduce_s},
                   {"in_rounds_s", t.in_rounds_s}, {"sent_bytes", sent}};
    }
    s["device_times"] = times;
    if (ledger.committed()) {
      // [stage, member, kind, micro-batch, start ms, end ms], from the round's first start
      auto it = recent_ops.find(*ledger.committed());
      if (it != recent_ops.end() && !it->second.empty()) {
        int64_t t0 = it->second.front().start_us;
        for (const auto& e : it->second) t0 = std::min(t0, e.start_us);
        nlohmann::json ops = nlohmann::json::array();
        for (const auto& e : it->second) {
          if (e.kind == messages::TraceKind::receive) continue;  // instants
          ops.push_back({e.stage, e.member, messages::to_string(e.kind), e.microbatch, (e.start_us - t0) / 1e3,
                         (e.end_us - t0) / 1e3});
        }
        s["timeline"] = {{"round", it->first}, {"ops", ops}};
      }
    }
    s["dropped_messages"] = dropped;
    return s.dump();
  }

  // Throws DeviceLost for a device in use that was reported lost, or
  // judged partitioned, while it could not be thrown.
  void throw_lost_in_use() {
    for (const auto& listed : lost_between) {
      if (!in_use(listed)) continue;
      const std::string device = listed;  // erasing it frees `listed`
      lost_between.erase(device);
      throw DeviceLost(device, partitions.partitioned().count(device)
                                   ? "device '" + device + "' is cut off from its pipeline peers (a partition)"
                                   : "device '" + device + "' stopped answering heartbeats");
    }
  }

  // Judges the nodes' reports of unreachable peers again: a device named
  // partitioned counts as lost (lost_between until a round throws it), one
  // no longer named as back.
  void judge_partitions() {
    std::set<std::string> alive;
    for (const auto& [id, node] : nodes) {
      if (!reported_lost.count(id) && !dead_actors.count(node.actor.address())) alive.insert(id);
    }
    std::vector<std::string> order;
    for (const Member& m : members) order.push_back(m.device);
    const auto changes = partitions.judge(alive, order, Clock::now());
    for (const auto& device : changes.partitioned) {
      spdlog::warn("coordinator: device '{}' and a pipeline peer cannot reach each other: {} counts as lost "
                   "until the link heals", device, device);
      lost_between.insert(device);
      returned.erase(device);
    }
    for (const auto& device : changes.healed) {
      spdlog::info("coordinator: device '{}' reaches its peers again", device);
      lost_between.erase(device);
      returned.insert(device);
    }
  }

  // Handles one message, waiting at most `wait`; false on timeout. Outside
  // a round (in_round false) losses are remembered instead of thrown.
  bool receive_one(std::chrono::milliseconds wait, bool in_round) {
    std::optional<messages::Message> message;
    caf::actor_addr sender;
    std::optional<caf::down_msg> down;
    std::string lost;
    const auto on_restart_notice = [&](WireMessage& wire, caf::actor& failed, caf::actor& replacement) {
      on_restarted(wire, failed, replacement, self.sender());
    };
    bool rejudge = false;
    caf::message_handler handler{
        [&](WireMessage& wire) {
          sender = self.sender();
          auto decoded = messages::from_wire(std::move(wire));
          if (!decoded.ok()) {
            drop("a malformed message", sender, decoded.error);
          } else {
            message = std::move(decoded.message);
          }
        },
        on_restart_notice,
        [&](caf::down_msg& d) { down = std::move(d); },
        [&](lost_atom, const std::string& device) {
          lost = device;
          returned.erase(device);
          reported_lost.insert(device);
        },
        [&](back_atom, const std::string& device) {
          // The monitor reports a device back only after its loss: any
          // older news of the loss is void. A partitioned one answers the
          // monitor but is back only once its cut heals (judge_partitions).
          reported_lost.erase(device);
          if (partitions.partitioned().count(device)) return;
          returned.insert(device);
          lost_between.erase(device);
        },
        [&](peers_atom, const std::string& device, std::vector<std::string>& unreachable) {
          partitions.report(device, std::move(unreachable));
          rejudge = true;
        },
        [](ask_reply_atom, uint64_t, WireMessage&) {},  // the late answer of an abandoned ask
        [](ask_reply_atom, uint64_t, caf::error&) {}};
    const bool got = self.receive(handler, wait);
    if (rejudge || !partitions.partitioned().empty()) judge_partitions();  // a heal settles with time
    if (!in_round) {
      if (!lost.empty()) lost_between.insert(lost);
      if (down) {
        try {
          on_down(*down);
        } catch (const DeviceLost& e) {
          lost_between.insert(e.device);
        } catch (const StageFailed& e) {
          if (down->reason == caf::exit_reason::unhandled_exception) {
            failed_between.push_back(e);  // its node restarts it
          } else {
            lost_between.insert(e.device);  // judged again when the next round starts
          }
        }
      }
      if (message) {
        try {
          on_envelope(*message, sender);
        } catch (const DeviceLost& e) {
          lost_between.insert(e.device);
        } catch (const StageFailed& e) {
          failed_between.push_back(e);  // thrown when the next round starts
        }
      }
      return got;
    }
    if (!lost.empty() && in_use(lost)) throw DeviceLost(lost, "device '" + lost + "' stopped answering heartbeats");
    throw_lost_in_use();
    if (!failed_between.empty()) {
      const StageFailed failed = failed_between.front();
      failed_between.clear();
      throw failed;
    }
    if (down) on_down(*down);
    if (message) on_envelope(*message, sender);
    return got;
  }

  // Commits what the replicas cover and asks for the next replica, as the
  // ledger decides (`now`: whatever the pacing). Every member keeps its
  // state of a replicated round until it commits; the single-device stages
  // also ship it to their holders.
  void advance_commits(bool now) {
    std::set<uint32_t> holders;
    for (const auto& [stage, holder] : replica_holders()) holders.insert(stage);
    const RoundLedger::Actions actions = ledger.advance(holders, now, Clock::now());
    if (actions.commit) {
      // Logged before any member learns of the commit: a member never keeps
      // a committed state of a round the job's log does not have.
      for (auto& report : ledger.take_committed()) {
        for (const Member& m : members) tally[m.device].in_rounds_s += report.ms / 1e3 / members_on(m.device);
        if (commit_listener) commit_listener(report);
        committed_reports.push_back(std::move(report));
      }
      messages::RoundControl commit;
      commit.kind = messages::ControlKind::commit;
      commit.round = *actions.commit;
      broadcast(commit);
      if (release_due) release_superseded();
    }
    if (actions.replicate) {
      messages::RoundControl replicate;
      replicate.kind = messages::ControlKind::replicate;
      replicate.round = *actions.replicate;
      broadcast(replicate);
    }
  }

  // How long a round may run before it counts as stalled.
  std::chrono::milliseconds round_limit() const {
    return ledger.stall_limit(spec.plan.predicted_round_ms, spec.round_timeout);
  }

  // Starts every round the ledger says is due. Only the first stage waits
  // for a start; the others run on what arrives.
  void start_due_rounds() {
    for (uint64_t r : ledger.start_due(Clock::now())) {
      messages::RoundControl start;
      start.kind = messages::ControlKind::start;
      start.round = r;
      const auto wire = messages::to_wire(start);
      for (const Member& m : members) {
        if (m.stage == 0) self.send(m.actor, wire);
      }
    }
  }

  std::vector<RoundReport> run_round() {
    const auto deadline = Clock::now() + round_limit();
    start_due_rounds();
    const uint64_t round = ledger.next_round();
    if (!ledger.in_flight(round)) throw JobError("round " + std::to_string(round) + " is past the job's end");
    try {
      receive_until([&] { return ledger.done_count() == members.size(); }, deadline, "round " + std::to_string(round));
    } catch (const RoundStalled& e) {
      const auto done = ledger.done_members();
      std::set<std::string> laggards;
      for (const Member& m : members)
        if (!done.count({m.stage, m.member})) laggards.insert(m.device);
      std::string names;
      for (const auto& d : laggards) names += (names.empty() ? "" : ", ") + d;
      throw RoundStalled(std::string(e.what()) + " (not done: " + names + ")");
    }
    ledger.finish(Clock::now(), static_cast<double>(spec.plan.batch));
    advance_commits(false);
    // Replication runs beside the rounds; only a lag past the limit waits
    // for it (the members keep every stepped state until it commits).
    receive_until([&] { return !ledger.lagging(); }, deadline,
                  "replication of round " + std::to_string(ledger.nothing_stepped() ? 0 : ledger.oldest_stepped()));
    return std::exchange(committed_reports, {});
  }

  std::vector<RoundReport> flush() {
    if (!ledger.nothing_stepped()) {
      advance_commits(true);
      const auto asked = ledger.replica_asked();
      if (asked && !ledger.nothing_stepped() && *asked < ledger.newest_stepped()) {
        // The replica on its way is older than the newest round: ask again once it is stored.
        receive_until([&] { return !ledger.replica_asked(); }, Clock::now() + spec.round_timeout, "replication");
        advance_commits(true);
      }
      if (!ledger.nothing_stepped()) {
        receive_until([&] { return ledger.nothing_stepped(); }, Clock::now() + spec.round_timeout,
                      "replication of round " + std::to_string(ledger.newest_stepped()));
      }
    }
    return std::exchange(committed_reports, {});
  }

  // ------------------------------------------------------------- states

  messages::StageState state_from(const Member& m, uint64_t at, const std::string& what) {
    auto reply = ask(m.actor, messages::StateRequest{at}, spec.deploy_timeout, what, m.device);
    auto* state = std::get_if<messages::StageState>(&reply);
    if (!state) throw JobError(what + ": answered with " + messages::kind_name(reply));
    return std::move(*state);
  }

  std::vector<messages::StageState> fetch_states(bool every_member) {
    std::vector<messages::StageState> states;
    for (const Member& m : members) {
      if (m.member != 0 && !every_member) continue;
      try {
        states.push_back(state_from(m, ledger.committed().value_or(0),
                                    "could not fetch the weights of stage " + std::to_string(m.stage) +
                                        " from device '" + m.device + "'"));
      } catch (const JobError& e) {
        throw DeviceLost(m.device, e.what());
      }
    }
    return states;
  }

  std::set<std::string> reported_lost_devices(const std::set<std::string>& known, std::chrono::milliseconds wait) {
    const auto deadline = Clock::now() + wait;
    auto news = [&] {
      std::set<std::string> out(reported_lost.begin(), reported_lost.end());
      out.insert(lost_between.begin(), lost_between.end());
      out.insert(partitions.partitioned().begin(), partitions.partitioned().end());
      return out;
    };
    for (;;) {
      while (receive_one(std::chrono::milliseconds(0), /*in_round=*/false)) {
      }
      const auto now = news();
      const bool fresh = std::any_of(now.begin(), now.end(), [&](const std::string& d) { return !known.count(d); });
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (fresh || left.count() <= 0) return now;
      receive_one(left, /*in_round=*/false);
    }
  }

  void abort(const std::set<std::string>& lost) {
    ledger.restart_after(ledger.committed());  // no news of the aborted rounds counts
    compute_ms.clear();
    // Learn of every loss already reported, so no confirmation is awaited
    // from a device known to be gone.
    while (receive_one(std::chrono::milliseconds(0), /*in_round=*/false)) {
    }
    for (const auto& listed : lost_between) {
      if (!lost.count(listed) && in_use(listed)) {
        const std::string device = listed;  // erasing it frees `listed`
        lost_between.erase(device);
        throw DeviceLost(device, "device '" + device + "' is gone too");
      }
    }
    messages::RoundControl abort;
    abort.kind = messages::ControlKind::abort;
    abort.round = ledger.next_round();
    // A state request after the abort is answered after the abort was
    // processed, and after everything the member sent before: once every
    // live member answered, nothing stale of the aborted rounds is in flight.
    for (const Member& m : members) {
      if (lost.count(m.device) || dead_actors.count(m.actor.address())) continue;
      self.send(m.actor, messages::to_wire(abort));
    }
    for (const Member& m : members) {
      if (lost.count(m.device) || dead_actors.count(m.actor.address())) continue;
      try {
        ask(m.actor, messages::StateRequest{ledger.committed().value_or(0)}, spec.connect_timeout,
            "device '" + m.device + "' did not confirm the abort", m.device);
      } catch (const JobError& e) {
        throw DeviceLost(m.device, e.what());
      }
    }
    // Drain what arrived before the confirmations (stale dones, metrics),
    // keeping news of lost and returned devices.
    while (receive_one(std::chrono::milliseconds(0), /*in_round=*/false)) {
    }
  }

  std::vector<std::optional<messages::StageState>> recover_states(const std::set<std::string>& lost) {
    std::vector<std::optional<messages::StageState>> states(spec.plan.stages.size());
    if (!ledger.committed()) return states;  // nothing committed: every stage starts from the seed
    for (size_t s = 0; s < spec.plan.stages.size(); ++s) states[s] = recover_stage(s, lost, {});
    return states;
  }

  // Stage s's state at the last committed round: from a live member not on
  // `failed` (whose actors failed: not asked), else from the node of a
  // member (it keeps its stages' committed states), else from the replica
  // holder, else from another node of the job that keeps that layer range
  // at that round, else from the central copy. nullopt when all of them
  // are gone.
  std::optional<messages::StageState> recover_stage(size_t s, const std::set<std::string>& lost,
                                                    const std::set<std::string>& failed) {
    const uint64_t at = *ledger.committed();
    const planner::Stage& stage = spec.plan.stages[s];
    std::optional<messages::StageState> state;
    for (const Member& m : members) {
      if (m.stage != s || lost.count(m.device) || failed.count(m.device) || dead_actors.count(m.actor.address()))
        continue;
      try {
        state = state_from(m, at, "stage " + std::to_string(s) + " on device '" + m.device + "'");
        if (state->round != at) {
          spdlog::warn("stage {} on device '{}' holds round {} as committed, not round {}", s, m.device, state->round,
                       at);
          state.reset();
        }
      } catch (const JobError& e) {
        spdlog::warn("{}", e.what());
      }
      if (state) return state;
    }
    const messages::ReplicaRequest request{spec.job_id, static_cast<uint32_t>(stage.begin),
                                           static_cast<uint32_t>(stage.end), at};
    auto kept_by = [&](const std::string& device, std::chrono::milliseconds timeout, const std::string& what) {
      try {
        auto reply = ask(connect(device).actor, request, timeout, what, device);
        if (auto* kept = std::get_if<messages::StageState>(&reply)) {
          state = std::move(*kept);
        } else if (auto* error = std::get_if<messages::Error>(&reply)) {
          spdlog::warn("{}: {}", what, error->message);
        }
      } catch (const JobError& e) {
        spdlog::warn("{}", e.what());
      }
    };
    // The node of a member whose actor failed keeps its committed state.
    for (const Member& m : members) {
      if (state) return state;
      if (m.stage != s || lost.count(m.device)) continue;
      kept_by(m.device, spec.connect_timeout,
              "committed state of stage " + std::to_string(s) + " kept by device '" + m.device + "'");
    }
    const auto holders = replica_holders();
    auto holder = holders.find(static_cast<uint32_t>(s));
    if (!state && holder != holders.end() && !lost.count(holder->second)) {
      kept_by(holder->second, spec.deploy_timeout,
              "replica of stage " + std::to_string(s) + " on device '" + holder->second + "'");
    }
    // Any other node of the job may keep it too: the member of an earlier
    // plan whose layers a plan switch just moved away (until the new plan's
    // first commit releases what it no longer needs).
    for (const auto& [device, node] : nodes) {
      if (state) return state;
      if (lost.count(device) || reported_lost.count(device) || dead_actors.count(node.actor.address()) ||
          in_use(device) || (holder != holders.end() && holder->second == device))
        continue;
      kept_by(device, spec.connect_timeout,
              "committed state of stage " + std::to_string(s) + " kept by device '" + device + "' (an earlier plan's)");
    }
    if (!state) {
      auto copy = central.find({static_cast<uint32_t>(stage.begin), static_cast<uint32_t>(stage.end)});
      if (copy != central.end() && copy->second.round == at) state = copy->second;
    }
    return state;
  }

  // After an abort: the stage actors on `failed` devices that failed (each
  // restarted by its node) are replaced by what their nodes restarted,
  // which load their stages' committed states; every other member stays as
  // it is (rolled back by the abort).
  std::vector<messages::StageState> restart_in_place(const std::set<std::string>& failed,
                                                     const std::set<std::string>& lost) {
    std::vector<messages::StageState> states(spec.plan.stages.size());
    std::set<uint32_t> from_node;  // stages restarted from their node's own copy
    try {
      for (const Member& m : members) {
        if (!failed.count(m.device) || !dead_actors.count(m.actor.address())) continue;
        replacing[m.actor.address()] = replacement_of(m);
        if (states[m.stage].present() || from_node.count(m.stage) || !ledger.committed()) continue;
        if (!has_live_member(m.stage, failed, lost) && keeps_committed(m.device, m.stage)) {
          from_node.insert(m.stage);  // nothing travels: the node loads what it keeps
          continue;
        }
        auto state = recover_stage(m.stage, lost, failed);
        if (!state) {
          throw JobError("stage " + std::to_string(m.stage) + " (" + range_text(spec.plan.stages[m.stage]) +
                         "): no member, node, replica or central copy holds its committed state");
        }
        states[m.stage] = std::move(*state);
      }
      resume_from_kept = from_node;
      redeploy(spec.plan, states, lost, /*respawn=*/false);
    } catch (...) {
      // No replacement is left behind: the next attempt deploys afresh.
      for (const auto& [failed_actor, replacement] : replacing)
        caf::anon_send_exit(replacement, caf::exit_reason::user_shutdown);
      resume_from_kept.clear();
      replacing.clear();
      throw;
    }
    resume_from_kept.clear();
    replacing.clear();
    return states;
  }

  // What the node of `m`'s device restarted in place of `m`'s failed actor,
  // waited for within the connection deadline. A node that gave up, or
  // said nothing in time, loses its device (the job supervisor re-plans
  // without it).
  caf::actor replacement_of(const Member& m) {
    const auto deadline = Clock::now() + spec.connect_timeout;
    const std::string what = "the stage " + std::to_string(m.stage) + " actor on device '" + m.device + "'";
    for (;;) {
      auto found = restarted.find(m.actor.address());
      if (found != restarted.end()) {
        caf::actor replacement = found->second;
        restarted.erase(found);
        if (!replacement) {
          throw DeviceLost(m.device, what + " kept failing: its node gave up restarting it (actors/restart_budget.h)");
        }
        self.self()->monitor(replacement);
        return replacement;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) throw DeviceLost(m.device, what + " failed and its node did not restart it in time");
      receive_one(left, /*in_round=*/false);
    }
  }

  bool has_live_member(uint32_t stage, const std::set<std::string>& failed, const std::set<std::string>& lost) const {
    return std::any_of(members.begin(), members.end(), [&](const Member& m) {
      return m.stage == stage && !failed.count(m.device) && !lost.count(m.device) &&
             !dead_actors.count(m.actor.address());
    });
  }

  // Whether `device`'s node keeps the committed state of `stage` at the last
  // committed round (it does unless it restarted or released it).
  bool keeps_committed(const std::string& device, uint32_t stage) {
    const planner::Stage& s = spec.plan.stages[stage];
    try {
      auto reply = ask(connect(device).actor, messages::KeptRequest{spec.job_id}, spec.connect_timeout,
                       "what device '" + device + "' keeps", device);
      if (auto* list = std::get_if<messages::KeptList>(&reply)) {
        const messages::KeptEntry wanted{static_cast<uint32_t>(s.begin), static_cast<uint32_t>(s.end),
                                         *ledger.committed(), true};
        return std::find(list->entries.begin(), list->entries.end(), wanted) != list->entries.end();
      }
    } catch (const JobError& e) {
      spdlog::warn("{}", e.what());
    }
    return false;
  }

  // Leaves no actor behind when it fails: the members of both plans are
  // stopped (the supervisor keeps the states it recovered and tries again).
  void redeploy(const planner::Plan& plan, const std::vector<messages::StageState>& states,
                const std::set<std::string>& lost, bool respawn) {
    std::vector<Member> old = std::move(members);
    members.clear();
    try {
      redeploy_from(old, plan, states, lost, respawn);
    } catch (...) {
      stop(old);
      stop(members);
      throw;
    }
  }

  void redeploy_from(std::vector<Member>& old, const planner::Plan& plan, const std::vector<messages::StageState>& states,
                     const std::set<std::string>& lost, bool respawn) {
    spec.plan = plan;
    connect_mesh();
    for (size_t s = 0; s < plan.stages.size(); ++s) {
      const planner::Stage& stage = plan.stages[s];
      const bool has_state = s < states.size() && states[s].present();
      for (size_t m = 0; m < stage.devices.size(); ++m) {
        const std::string& id = stage.devices[m].id;
        if (lost.count(id)) throw JobError("the new plan uses device '" + id + "', which is lost");
        Member now{static_cast<uint32_t>(s), static_cast<uint32_t>(m), id, caf::actor(), stage.begin, stage.end};
        for (Member& o : old) {
          // A restart in place: the actor its node restarted takes the slot.
          auto replacement = o.actor ? replacing.find(o.actor.address()) : replacing.end();
          if (replacement == replacing.end() || o.device != id || o.stage != s || o.member != m) continue;
          now.actor = replacement->second;
          o.actor = caf::actor();
          break;
        }
        const bool reuse = !respawn;
        if (!now.actor && !has_state && reuse) {
          // Same device, same layers: the member keeps its committed weights.
          for (Member& o : old) {
            if (o.actor && !dead_actors.count(o.actor.address()) && o.device == id && o.begin == stage.begin &&
                o.end == stage.end) {
              now.actor = std::move(o.actor);
              o.actor = caf::actor();
              break;
            }
          }
          if (!now.actor && ledger.committed()) {
            throw JobError("stage " + std::to_string(s) + " (" + range_text(stage) +
                           ") has no state to start from: no member keeps it and none was recovered");
          }
        }
        if (!now.actor && reuse && has_state) {
          // Another old member on this device: it takes the new layers and
          // their state (cheaper than a new actor: its data stay loaded).
          for (Member& o : old) {
            if (o.actor && !dead_actors.count(o.actor.address()) && o.device == id) {
              now.actor = std::move(o.actor);
              o.actor = caf::actor();
              break;
            }
          }
        }
        if (!now.actor) now.actor = spawn_stage(id);
        members.push_back(std::move(now));
      }
    }
    stop(old);
    // What nodes restarted for members this deployment does not take (a
    // re-plan after the failure) has nothing to do.
    for (const auto& [failed_actor, replacement] : restarted)
      if (replacement) caf::anon_send_exit(replacement, caf::exit_reason::user_shutdown);
    restarted.clear();
    failed_between.clear();  // the members that reported them were replaced or kept rolled back
    ledger.restart_after(ledger.committed());
    compute_ms.clear();  // a replayed round's reports of the old plan must not add up with the new
    ++deployments;
    assign(states);
    seed_replicas(states);
    release_due = true;
  }

  // ------------------------------------------------------------- releasing

  // The layer ranges `device` keeps of this job under the running plan:
  // those it hosts and those it holds the replicas of.
  std::vector<messages::LayerRange> ranges_kept_by(const std::string& device) const {
    std::set<messages::LayerRange> ranges;
    for (const Member& m : members) {
      if (m.device == device) ranges.insert({static_cast<uint32_t>(m.begin), static_cast<uint32_t>(m.end)});
    }
    for (const auto& [stage, holder] : replica_holders()) {
      const planner::Stage& s = spec.plan.stages[stage];
      if (holder == device) ranges.insert({static_cast<uint32_t>(s.begin), static_cast<uint32_t>(s.end)});
    }
    return {ranges.begin(), ranges.end()};
  }

  // At the first commit of a (re)deployed plan, every node of the job drops
  // what only an earlier plan needed (a recovery from then on starts from
  // this plan's states). Asynchronous: the answers update kept_bytes as
  // they arrive.
  void release_superseded() {
    release_due = false;
    for (const auto& [id, node] : nodes)
      self.send(node.actor, wire_for(system, node.actor, messages::Release{spec.job_id, ranges_kept_by(id)}));
  }

  // All nodes at once, answers within the connect timeout; nodes known to
  // be down are not asked.
  std::map<std::string, uint64_t> release_job() {
    kept_bytes.clear();
    size_t asked = 0;
    for (const auto& [id, node] : nodes) {
      if (dead_actors.count(node.actor.address()) || reported_lost.count(id)) continue;
      self.send(node.actor, wire_for(system, node.actor, messages::Release{spec.job_id, {}}));
      ++asked;
    }
    const auto deadline = Clock::now() + spec.connect_timeout;
    while (kept_bytes.size() < asked && Clock::now() < deadline) {
      try {
        receive_one(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()),
                    /*in_round=*/false);
      } catch (const JobError& e) {
        spdlog::warn("coordinator: after the job: {}", e.what());  // a stage's late error: the job is done
      }
    }
    if (kept_bytes.size() < asked) {
      spdlog::warn("coordinator: {} of {} node(s) did not confirm releasing job {}'s states", asked - kept_bytes.size(),
                   asked, spec.job_id);
    }
    return kept_bytes;
  }

  void stop(std::vector<Member>& list) {
    for (Member& m : list) {
      if (m.actor) {
        self.self()->demonitor(m.actor);
        self.self()->send_exit(m.actor, caf::exit_reason::user_shutdown);
      }
    }
    list.clear();
  }

  void stop_stages() { stop(members); }
};

Coordinator::Coordinator(caf::actor_system& system, JobSpec spec, Mailbox* mailbox) {
  if (spec.rounds_ahead > 1) {
    throw JobError("rounds_ahead " + std::to_string(spec.rounds_ahead) + " is not supported: 0 or 1");
  }
  impl_ = std::make_unique<Impl>(mailbox, system, std::move(spec));
}

Coordinator::~Coordinator() { impl_->stop_stages(); }

void Coordinator::deploy(uint64_t first_round, const std::vector<messages::StageState>& states) {
  impl_->deploy(first_round, states);
}

std::vector<RoundReport> Coordinator::run_round() { return impl_->run_round(); }
std::vector<RoundReport> Coordinator::flush() { return impl_->flush(); }
std::vector<RoundReport> Coordinator::take_committed() { return std::exchange(impl_->committed_reports, {}); }

void Coordinator::on_commit(std::function<void(const RoundReport&)> listener) {
  impl_->commit_listener = std::move(listener);
}
uint64_t Coordinator::next_round() const { return impl_->ledger.next_round(); }
std::optional<uint64_t> Coordinator::last_committed() const { return impl_->ledger.committed(); }

std::vector<messages::StageState> Coordinator::fetch_states() { return impl_->fetch_states(false); }
std::vector<messages::StageState> Coordinator::fetch_member_states() { return impl_->fetch_states(true); }

void Coordinator::abort(const std::set<std::string>& lost_devices) { impl_->abort(lost_devices); }

std::vector<std::optional<messages::StageState>> Coordinator::recover_states(
    const std::set<std::string>& lost_devices) {
  return impl_->recover_states(lost_devices);
}

std::vector<messages::StageState> Coordinator::restart_in_place(const std::set<std::string>& failed_devices,
                                                                const std::set<std::string>& lost_devices) {
  return impl_->restart_in_place(failed_devices, lost_devices);
}

void Coordinator::rewind_to(std::optional<uint64_t> round) { impl_->ledger.restart_after(round); }

void Coordinator::redeploy(const planner::Plan& plan, const std::vector<messages::StageState>& states,
                           const std::set<std::string>& lost_devices, bool respawn) {
  impl_->redeploy(plan, states, lost_devices, respawn);
}

const planner::Plan& Coordinator::plan() const { return impl_->spec.plan; }

std::map<std::string, caf::actor> Coordinator::node_actors() const {
  std::map<std::string, caf::actor> out;
  for (const auto& [id, node] : impl_->nodes) out[id] = node.actor;
  return out;
}

void Coordinator::reconnect(const std::string& device, std::optional<std::chrono::milliseconds> within) {
  impl_->connect(device, /*again=*/true, within);
}

bool Coordinator::probe_speed(const std::string& device, const messages::ProfileRequest& request) {
  auto node = impl_->nodes.find(device);
  if (node == impl_->nodes.end() || impl_->reported_lost.count(device) || !impl_->probing.insert(device).second)
    return false;
  impl_->self.send(node->second.actor, wire_for(impl_->system, node->second.actor, request));
  return true;
}

std::map<std::string, planner::Profile> Coordinator::take_probes() {
  while (impl_->receive_one(std::chrono::milliseconds(0), /*in_round=*/false)) {
  }
  return std::exchange(impl_->probes, {});
}

std::set<std::string> Coordinator::reported_lost(const std::set<std::string>& known, std::chrono::milliseconds wait) {
  return impl_->reported_lost_devices(known, wait);
}

bool Coordinator::deployed() const { return !impl_->members.empty(); }

std::set<std::string> Coordinator::take_returned() {
  while (impl_->receive_one(std::chrono::milliseconds(0), /*in_round=*/false)) {
  }
  std::set<std::string> out;
  out.swap(impl_->returned);
  return out;
}

caf::actor Coordinator::inbox() const { return impl_->self.handle(); }
Mailbox& Coordinator::mailbox() const { return impl_->self; }
std::string Coordinator::status() const { return impl_->status(); }

const std::vector<messages::TraceEvent>& Coordinator::trace() const { return impl_->trace; }
const std::map<std::string, uint64_t>& Coordinator::peak_memory_bytes() const { return impl_->peak_memory; }
const JobSpec& Coordinator::spec() const { return impl_->spec; }
uint64_t Coordinator::dropped_messages() const { return impl_->dropped; }
std::map<std::string, uint64_t> Coordinator::release_job() { return impl_->release_job(); }

uint64_t Coordinator::deployments() const { return impl_->deployments; }

std::map<std::string, double> Coordinator::take_compute_ms(uint64_t round) {
  auto& all = impl_->compute_ms;
  auto it = all.find(round);
  std::map<std::string, double> taken = it == all.end() ? std::map<std::string, double>{} : std::move(it->second);
  all.erase(all.begin(), all.upper_bound(round));
  return taken;
}
const std::map<std::string, uint64_t>& Coordinator::kept_bytes() const { return impl_->kept_bytes; }

}  // namespace asteroid::actors
