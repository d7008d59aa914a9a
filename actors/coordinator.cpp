#include "actors/coordinator.h"

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <spdlog/spdlog.h>

#include <set>

#include "messages/transport.h"

namespace asteroid::actors {
namespace {

using messages::WireMessage;
using Clock = std::chrono::steady_clock;

std::string address_of(const planner::Device& d) { return d.host + ":" + std::to_string(d.port); }

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
  };

  Impl(caf::actor_system& system, JobSpec spec) : system(system), self(system), spec(std::move(spec)) {}

  caf::actor_system& system;
  caf::scoped_actor self;
  JobSpec spec;
  std::map<std::string, Node> nodes;  // by device id
  std::vector<Member> members;        // stage by stage, member by member
  uint64_t round = 0;
  std::vector<messages::TraceEvent> trace;
  std::map<std::string, uint64_t> peak_memory;

  const planner::Device& device(const std::string& id) const {
    const int index = spec.cluster.index_of(id);
    if (index < 0) throw JobError("the plan uses device '" + id + "', which the cluster does not list");
    const planner::Device& d = spec.cluster.devices[static_cast<size_t>(index)];
    if (d.host.empty() || d.port <= 0) {
      throw JobError("device '" + id + "' has no host and port in the cluster file, so it cannot run a stage");
    }
    return d;
  }

  Node& connect(const std::string& id) {
    auto found = nodes.find(id);
    if (found != nodes.end()) return found->second;
    const planner::Device& d = device(id);
    Node node;
    node.device = &d;
    std::string failure;
    auto& mm = system.middleman();
    self->request(mm.actor_handle(), spec.connect_timeout, caf::connect_atom::value, d.host,
                  static_cast<uint16_t>(d.port))
        .receive(
            [&](const caf::node_id& nid, caf::strong_actor_ptr& ptr, const std::set<std::string>&) {
              node.id = nid;
              node.actor = caf::actor_cast<caf::actor>(std::move(ptr));
              if (!node.actor) failure = "nothing is published there";
            },
            [&](caf::error& e) { failure = system.render(e); });
    if (failure.empty()) {
      self->request(node.actor, spec.connect_timeout, messages::to_wire(messages::Hello{}))
          .receive(
              [&](WireMessage& reply) {
                auto decoded = messages::from_wire(std::move(reply));
                if (!decoded.ok()) {
                  failure = "its answer to hello is malformed: " + decoded.error;
                } else if (auto* info = std::get_if<messages::NodeInfo>(&*decoded.message)) {
                  node.info = *info;
                } else {
                  failure = std::string("it answered hello with ") + messages::kind_name(*decoded.message);
                }
              },
              [&](caf::error& e) { failure = system.render(e); });
    }
    if (!failure.empty()) {
      throw JobError("device '" + id + "' at " + address_of(d) + " is unreachable: " + failure);
    }
    spdlog::debug("connected to {} at {} (node {})", id, address_of(d), node.info.node_id);
    return nodes.emplace(id, std::move(node)).first->second;
  }

  messages::StageAssignment assignment(size_t stage, size_t member, uint64_t first_round,
                                       const std::vector<messages::StageState>& states) const {
    const auto& stages = spec.plan.stages;
    auto group_of = [&](size_t s) {
      std::vector<messages::GroupMember> group;
      for (const auto& d : stages[s].devices) group.push_back({d.id, static_cast<uint32_t>(d.samples)});
      return group;
    };
    messages::StageAssignment a;
    a.job_id = spec.job_id;
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
    a.first_round = first_round;
    if (!states.empty()) a.initial_state = states.at(stage);
    a.trace = spec.trace;
    auto memory = spec.required_memory_bytes.find(stages[stage].devices[member].id);
    if (memory != spec.required_memory_bytes.end()) a.required_memory_bytes = memory->second;
    return a;
  }

  std::vector<caf::actor> handles_of(size_t stage) const {
    std::vector<caf::actor> handles;
    for (const Member& m : members) {
      if (m.stage == stage) handles.push_back(m.actor);
    }
    return handles;
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
    auto& mm = system.middleman();
    for (size_t s = 0; s < stages.size(); ++s) {
      for (size_t m = 0; m < stages[s].devices.size(); ++m) {
        const std::string& id = stages[s].devices[m].id;
        Node& node = nodes.at(id);
        auto spawned = mm.remote_spawn<caf::actor>(node.id, "stage", caf::make_message(), spec.deploy_timeout);
        if (!spawned) {
          throw JobError("device '" + id + "' at " + address_of(*node.device) +
                         " could not spawn a stage actor: " + system.render(spawned.error()));
        }
        self->monitor(*spawned);
        members.push_back({static_cast<uint32_t>(s), static_cast<uint32_t>(m), id, *spawned});
      }
    }
    for (const Member& m : members) {
      const auto a = assignment(m.stage, m.member, first_round, states);
      std::string failure;
      const auto prev = m.stage > 0 ? handles_of(m.stage - 1) : std::vector<caf::actor>{};
      self->request(m.actor, spec.deploy_timeout, messages::to_wire(a), prev, handles_of(m.stage),
                    handles_of(m.stage + 1))
          .receive(
              [&](WireMessage& reply) {
                auto decoded = messages::from_wire(std::move(reply));
                if (!decoded.ok()) {
                  failure = "malformed reply: " + decoded.error;
                } else if (auto* error = std::get_if<messages::Error>(&*decoded.message)) {
                  failure = std::string(to_string(error->code)) + ": " + error->message;
                }
              },
              [&](caf::error& e) { failure = system.render(e); });
      if (!failure.empty()) {
        throw JobError("device '" + m.device + "' refused stage " + std::to_string(m.stage) + " (layers " +
                       std::to_string(a.layer_begin) + "-" + std::to_string(a.layer_end) + "): " + failure);
      }
    }
    round = first_round;
  }

  void broadcast(const messages::Message& message) {
    const auto wire = messages::to_wire(message);
    for (const Member& m : members) self->send(m.actor, wire);
  }

  const Member* member_of(const caf::actor_addr& address) const {
    for (const Member& m : members) {
      if (m.actor.address() == address) return &m;
    }
    return nullptr;
  }

  RoundReport run_round() {
    const auto started = Clock::now();
    const auto deadline = started + spec.round_timeout;
    messages::RoundControl start;
    start.kind = messages::ControlKind::start;
    start.round = round;
    broadcast(start);

    RoundReport report;
    report.round = round;
    double loss_sum = 0;
    std::set<std::pair<uint32_t, uint32_t>> done;
    std::string failure;
    while (done.size() < members.size() && failure.empty()) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      self->receive(
          [&](WireMessage& wire) {
            auto decoded = messages::from_wire(std::move(wire));
            if (!decoded.ok()) {
              failure = "received a malformed message: " + decoded.error;
              return;
            }
            std::visit(
                [&](auto& m) {
                  using T = std::decay_t<decltype(m)>;
                  if constexpr (std::is_same_v<T, messages::RoundControl>) {
                    if (m.kind != messages::ControlKind::done || m.round != round) return;
                    if (!done.insert({m.stage, m.member}).second) return;
                    loss_sum += m.loss_sum;
                    report.samples += m.samples;
                    report.correct += m.correct;
                  } else if constexpr (std::is_same_v<T, messages::Metrics>) {
                    if (spec.trace) trace.insert(trace.end(), m.events.begin(), m.events.end());
                    for (const Member& member : members) {
                      if (member.stage == m.stage && member.member == m.member) {
                        auto& peak = peak_memory[member.device];
                        peak = std::max(peak, m.peak_memory_bytes);
                      }
                    }
                  } else if constexpr (std::is_same_v<T, messages::Error>) {
                    failure = m.message;
                  }
                },
                *decoded.message);
          },
          [&](caf::down_msg& down) {
            const Member* m = member_of(down.source);
            if (m) {
              failure = "device '" + m->device + "' (stage " + std::to_string(m->stage) +
                        ") went down: " + system.render(down.reason);
            }
          },
          caf::after(std::max(left, std::chrono::milliseconds(0))) >> [&] {
            failure = "round " + std::to_string(round) + " did not finish within " +
                      std::to_string(spec.round_timeout.count()) + " ms (" + std::to_string(done.size()) + " of " +
                      std::to_string(members.size()) + " members done)";
          });
    }
    if (!failure.empty()) throw JobError(failure);
    messages::RoundControl commit;
    commit.kind = messages::ControlKind::commit;
    commit.round = round;
    broadcast(commit);
    report.loss = loss_sum / static_cast<double>(spec.plan.batch);
    report.ms = std::chrono::duration<double, std::milli>(Clock::now() - started).count();
    ++round;
    return report;
  }

  std::vector<messages::StageState> fetch_states(bool every_member) {
    std::vector<messages::StageState> states;
    for (const Member& m : members) {
      if (m.member != 0 && !every_member) continue;
      std::string failure;
      self->request(m.actor, spec.deploy_timeout, messages::to_wire(messages::StateRequest{round}))
          .receive(
              [&](WireMessage& reply) {
                auto decoded = messages::from_wire(std::move(reply));
                if (!decoded.ok()) {
                  failure = "malformed state: " + decoded.error;
                } else if (auto* state = std::get_if<messages::StageState>(&*decoded.message)) {
                  states.push_back(std::move(*state));
                } else {
                  failure = std::string("answered with ") + messages::kind_name(*decoded.message);
                }
              },
              [&](caf::error& e) { failure = system.render(e); });
      if (!failure.empty()) {
        throw JobError("could not fetch the weights of stage " + std::to_string(m.stage) + " from device '" +
                       m.device + "': " + failure);
      }
    }
    return states;
  }

  void stop_stages() {
    for (const Member& m : members) self->send_exit(m.actor, caf::exit_reason::user_shutdown);
    members.clear();
  }
};

Coordinator::Coordinator(caf::actor_system& system, JobSpec spec)
    : impl_(std::make_unique<Impl>(system, std::move(spec))) {}

Coordinator::~Coordinator() { impl_->stop_stages(); }

void Coordinator::deploy(uint64_t first_round, const std::vector<messages::StageState>& states) {
  impl_->deploy(first_round, states);
}

RoundReport Coordinator::run_round() { return impl_->run_round(); }

std::vector<messages::StageState> Coordinator::fetch_states() { return impl_->fetch_states(false); }

std::vector<messages::StageState> Coordinator::fetch_member_states() { return impl_->fetch_states(true); }

const std::vector<messages::TraceEvent>& Coordinator::trace() const { return impl_->trace; }

const std::map<std::string, uint64_t>& Coordinator::peak_memory_bytes() const { return impl_->peak_memory; }

uint64_t Coordinator::next_round() const { return impl_->round; }

const JobSpec& Coordinator::spec() const { return impl_->spec; }

}  // namespace asteroid::actors
