#include "supervision/job_supervisor.h"

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <fstream>
#include <set>

#include "actors/optimizer_spec.h"
#include "actors/planner_actor.h"
#include "messages/enum_names.h"
#include "messages/transport.h"
#include "planner/json_io.h"
#include "supervision/checkpoint.h"
#include "supervision/heartbeat_monitor.h"
#include "supervision/stage_states.h"

namespace asteroid::supervision {
namespace {

using actors::DeviceLost;
using actors::JobError;
using actors::RoundStalled;
using actors::StageFailed;
using Clock = std::chrono::steady_clock;

// Milliseconds between successive laps.
class PhaseClock {
 public:
  double lap_ms() {
    const auto now = Clock::now();
    const double ms = std::chrono::duration<double, std::milli>(now - last_).count();
    last_ = now;
    return ms;
  }

 private:
  Clock::time_point last_ = Clock::now();
};

std::string summary_of(const planner::Plan& plan) {
  std::string out;
  for (const auto& stage : plan.stages) {
    if (!out.empty()) out += " | ";
    out += "[" + std::to_string(stage.begin) + "," + std::to_string(stage.end) + ") ";
    for (size_t i = 0; i < stage.devices.size(); ++i) {
      out += (i ? "+" : "") + stage.devices[i].id + ":" + std::to_string(stage.devices[i].samples);
    }
  }
  return out;
}

}  // namespace

planner::Profile uniform_profile(const std::vector<planner::LayerInfo>& layers, const planner::Cluster& cluster) {
  planner::Profile profile;
  profile.model = "uniform";
  profile.layers = layers;
  for (const auto& device : cluster.devices) {
    planner::DeviceProfile d;
    d.batch = {1, 64};
    for (size_t l = 0; l < layers.size(); ++l) {
      d.fwd_ms.push_back({0.01, 0.64});
      d.bwd_ms.push_back({0.02, 1.28});
    }
    profile.devices[device.id] = d;
  }
  return profile;
}

// A checkpoint is of a committed round: the coordinator commits the rounds
// a checkpoint falls due after as soon as they are stepped, whatever the
// pacing of replication.
actors::JobSpec with_commit_points(actors::JobSpec spec, const SupervisionOptions& options) {
  if (options.checkpoint_every > 0) spec.commit_every = options.checkpoint_every;
  return spec;
}

struct JobSupervisor::Impl {
  Impl(caf::actor_system& system, actors::JobSpec spec, SupervisionOptions options)
      : system(system), coordinator(system, with_commit_points(std::move(spec), options)), options(std::move(options)) {
    std::vector<int64_t> parameters;
    for (const auto& layer : this->options.profile.layers) {
      parameters.push_back(static_cast<int64_t>(layer.weight_bytes / sizeof(float)));
    }
    layout.emplace(parameters, planner::optimizer_state_factor(this->options.optimizer));
  }

  ~Impl() {
    if (monitor) caf::anon_send_exit(monitor, caf::exit_reason::user_shutdown);
    if (planner) caf::anon_send_exit(planner, caf::exit_reason::user_shutdown);
  }

  caf::actor_system& system;
  actors::Coordinator coordinator;
  SupervisionOptions options;
  std::optional<StateLayout> layout;
  caf::actor monitor, planner;
  std::set<std::string> lost;     // devices lost and not back
  std::set<std::string> awaited;  // devices not in the plan that were unreachable at the start
  std::vector<FailureRecord> failures;
  std::function<void(const SupervisionEvent&)> listener;
  std::function<void(const actors::RoundReport&)> commit_listener;
  Clock::time_point started = Clock::now();
  int recoveries = 0;
  std::vector<actors::RoundReport> salvaged;  // committed in a step that then failed
  bool checkpoint_owed = false;                // a checkpoint fell due in such a step

  double now_s() const { return std::chrono::duration<double>(Clock::now() - started).count(); }

  void emit(const std::string& kind, const std::string& text, bool with_plan) {
    spdlog::info("{}", text);
    if (listener) listener({kind, text, with_plan ? planner::plan_to_json(coordinator.plan()).dump() : ""});
  }

  void start(uint64_t first_round, const std::vector<messages::StageState>& states) {
    started = Clock::now();
    planner = actors::spawn_planner(system, coordinator.spec().cluster, options.planner_on,
                                    coordinator.spec().connect_timeout);
    coordinator.deploy(first_round, states);
    MonitorSetup setup;
    setup.options = options.heartbeat;
    setup.reconnect_every = options.reconnect_every;
    setup.listener = coordinator.inbox();
    setup.nodes = coordinator.node_actors();
    // Reconnection is tried for the devices of the plan (once lost) and for
    // the devices the job could not reach at the start (new ones may come);
    // a reachable device the plan leaves idle stays idle.
    for (const auto& device : coordinator.spec().cluster.devices) {
      if (device.host.empty() || device.port <= 0) continue;
      setup.endpoints[device.id] = device;  // heartbeat datagrams go there
      if (!setup.nodes.count(device.id)) {
        try {
          coordinator.reconnect(device.id);
          continue;
        } catch (const JobError&) {
          awaited.insert(device.id);
        }
      }
      setup.addresses[device.id] = device;
    }
    setup.nodes = coordinator.node_actors();
    monitor = spawn_heartbeat_monitor(system, setup);
  }

  // ------------------------------------------------------------- rounds

  std::vector<actors::RoundReport> run_round() {
    std::vector<actors::RoundReport> reports = admit_returned();
    for (;;) {
      if (auto committed = attempt([&] { return coordinator.run_round(); })) {
        reports.insert(reports.end(), committed->begin(), committed->end());
        return reports;
      }
    }
  }

  // Commits the round waiting for its replicas. After a failure the round
  // is lost instead and runs again with the next run_round().
  std::vector<actors::RoundReport> flush() {
    return attempt([&] { return coordinator.flush(); }).value_or(std::vector<actors::RoundReport>{});
  }

  // Runs a coordinator step that commits rounds. A failure on the way is
  // recovered from (the lost rounds will run again), and then there is
  // nothing to return.
  template <typename Step>
  std::optional<std::vector<actors::RoundReport>> attempt(Step step) {
    try {
      auto reports = step();
      after_commits(reports);
      return reports;
    } catch (const DeviceLost& e) {
      recover({e.device}, "device-lost", e.what());
    } catch (const StageFailed& e) {
      recover({}, "stage-failed", e.what(), e.device);
    } catch (const RoundStalled& e) {
      committed_before_failure();
      recover({}, "round-stalled", e.what());
    }
    if (++recoveries > options.max_recoveries) {
      throw JobError("gave up after " + std::to_string(options.max_recoveries) + " recoveries");
    }
    if (salvaged.empty()) return std::nullopt;
    return std::exchange(salvaged, {});
  }

  // Rounds that committed in a step that then failed count like any other
  // (no checkpoint now: a device may be gone; the next commit takes it).
  void committed_before_failure() {
    salvaged = coordinator.take_committed();
    for (const auto& report : salvaged) {
      if (commit_listener) commit_listener(report);
      if (options.checkpoint_every > 0) checkpoint_owed |= (report.round + 1) % options.checkpoint_every == 0;
    }
  }

  void after_commits(const std::vector<actors::RoundReport>& reports) {
    if (reports.empty()) return;
    for (auto& failure : failures) {
      if (failure.recovered_s < 0) failure.recovered_s = now_s();
    }
    if (commit_listener) {
      for (const auto& report : reports) commit_listener(report);
    }
    // A checkpoint is due after every `checkpoint_every` rounds. When rounds
    // commit together (the pipelined commit), it is taken at the last of
    // them: the stages hold only their last committed state.
    if (options.checkpoint_every > 0 && coordinator.last_committed()) {
      bool due = checkpoint_owed;
      for (const auto& report : reports) due |= (report.round + 1) % options.checkpoint_every == 0;
      if (due) {
        write_checkpoint_at(*coordinator.last_committed());
        checkpoint_owed = false;
      }
    }
  }

  void write_checkpoint_at(uint64_t round) {
    Checkpoint checkpoint;
    const auto& spec = coordinator.spec();
    checkpoint.job = {{"round", round},
                      {"model", spec.model},
                      {"seed", spec.seed},
                      {"data_seed", spec.data_seed},
                      {"job_id", spec.job_id},
                      {"optimizer", actors::to_json(spec.optimizer)},
                      {"plan", planner::plan_to_json(coordinator.plan())}};
    checkpoint.states = coordinator.fetch_states();
    write_checkpoint(options.checkpoint_path, checkpoint);
    emit("checkpoint", "checkpoint of round " + std::to_string(round) + " written to " + options.checkpoint_path, false);
  }

  // ------------------------------------------------------------- recovery

  planner::Plan ask_planner(const std::vector<std::string>& lost_now, const std::vector<std::string>& added,
                            std::string* explanation) {
    std::string reason;
    auto plan = try_ask_planner(lost_now, added, explanation, &reason);
    if (!plan) throw JobError(reason);
    return *plan;
  }

  // The planner's re-plan, or nothing (with the reason) when no plan fits
  // or the planner did not answer.
  std::optional<planner::Plan> try_ask_planner(const std::vector<std::string>& lost_now,
                                               const std::vector<std::string>& added, std::string* explanation,
                                               std::string* reason = nullptr) {
    messages::PlanRequest request;
    request.cluster_json = planner::cluster_to_json(coordinator.spec().cluster).dump();
    request.profile_json = planner::profile_to_json(options.profile).dump();
    request.strategy = "hpp";
    request.batch = static_cast<uint32_t>(coordinator.plan().batch);
    request.microbatches = static_cast<uint32_t>(coordinator.plan().microbatches);
    request.optimizer = options.optimizer;
    request.running_plan_json = planner::plan_to_json(coordinator.plan()).dump();
    request.lost_devices = lost_now;
    request.added_devices = added;
    request.heavy = options.recovery != Recovery::lightweight;
    request.wire = options.wire;
    request.codec_block = coordinator.plan().codec_block;
    std::optional<messages::PlanResult> result;
    std::string failure;
    try {
      result = actors::request_plan(system, planner, request, std::chrono::seconds(60));
    } catch (const std::runtime_error& e) {
      failure = e.what();
    }
    if (!result || result->plan_json.empty()) {
      if (reason) *reason = !result ? failure : "no plan fits on the remaining devices: " + result->reason;
      return std::nullopt;
    }
    if (explanation) *explanation = result->explanation;
    return planner::plan_from_json(nlohmann::json::parse(result->plan_json), "re-plan");
  }

  // Devices of the cluster that `plan` does not use and that are neither
  // lost nor awaited (unreachable since the start).
  std::vector<std::string> idle_devices(const planner::Plan& plan) const {
    std::vector<std::string> idle;
    for (const auto& device : coordinator.spec().cluster.devices) {
      if (device.host.empty() || device.port <= 0 || lost.count(device.id) || awaited.count(device.id)) continue;
      bool used = false;
      for (const auto& stage : plan.stages) {
        for (const auto& d : stage.devices) used = used || d.id == device.id;
      }
      if (!used) idle.push_back(device.id);
    }
    return idle;
  }

  // The state each stage of `plan` starts from: empty where every member
  // keeps its device and layers (it keeps its own weights), else assembled
  // from the recovered states of the old stages.
  std::vector<messages::StageState> states_for(const planner::Plan& plan, const planner::Plan& old,
                                               const std::vector<messages::StageState>& recovered,
                                               const std::set<std::string>& failed_devices) {
    std::vector<messages::StageState> states(plan.stages.size());
    if (recovered.empty()) return states;  // nothing committed yet: from the seed
    for (size_t s = 0; s < plan.stages.size(); ++s) {
      const auto& stage = plan.stages[s];
      bool kept = false;
      for (const auto& o : old.stages) {
        if (o.begin != stage.begin || o.end != stage.end) continue;
        kept = true;
        for (const auto& d : stage.devices) {
          const bool was_member = std::any_of(o.devices.begin(), o.devices.end(),
                                              [&](const planner::StageDevice& od) { return od.id == d.id; });
          if (!was_member || failed_devices.count(d.id) || lost.count(d.id)) kept = false;
        }
      }
      if (!kept) states[s] = layout->assemble(stage.begin, stage.end, recovered);
    }
    return states;
  }

  void recover(std::set<std::string> lost_now, const std::string& kind, const std::string& why,
               const std::string& failed_device = "") {
    FailureRecord record;
    record.kind = kind;
    record.round = coordinator.next_round();
    record.detected_s = now_s();
    record.devices.assign(lost_now.begin(), lost_now.end());
    if (!failed_device.empty()) record.devices.push_back(failed_device);
    emit("failure", "failure in round " + std::to_string(record.round) + ": " + why, false);
    PhaseClock phase;
    // Abort the rounds in flight; a device that does not confirm is lost too.
    for (size_t attempt = 0;; ++attempt) {
      lost.insert(lost_now.begin(), lost_now.end());
      try {
        coordinator.abort(lost);
        break;
      } catch (const DeviceLost& e) {
        if (attempt > coordinator.spec().cluster.devices.size()) throw;
        lost_now.insert(e.device);
        record.devices.push_back(e.device);
      }
    }
    record.abort_ms = phase.lap_ms();
    if (options.recovery == Recovery::restart) return restart(std::move(record), phase);
    if (options.recovery == Recovery::stop) {
      record.replan = "stop";
      failures.push_back(record);
      throw JobError("stopped after the failure in round " + std::to_string(record.round) + " (--replan stop): " + why +
                     (options.checkpoint_path.empty() ? std::string()
                                                      : "; continue with --resume " + options.checkpoint_path));
    }
    const planner::Plan old = coordinator.plan();
    std::vector<messages::StageState> recovered;
    if (coordinator.last_committed()) {
      auto states = coordinator.recover_states(lost);
      for (size_t s = 0; s < states.size(); ++s) {
        if (!states[s]) {
          throw JobError("stage " + std::to_string(s) + " (layers " + std::to_string(old.stages[s].begin) + "-" +
                         std::to_string(old.stages[s].end) +
                         ") is lost: no surviving member, replica or central copy holds its state of round " +
                         std::to_string(*coordinator.last_committed()));
        }
        recovered.push_back(std::move(*states[s]));
      }
    }
    record.states_ms = phase.lap_ms();
    planner::Plan plan = old;
    std::vector<std::string> lost_in_plan;
    for (const auto& stage : old.stages) {
      for (const auto& d : stage.devices) {
        if (lost.count(d.id)) lost_in_plan.push_back(d.id);
      }
    }
    std::string explanation;
    if (!lost_in_plan.empty()) {
      // Devices the plan left idle (reachable, not lost) may step in for the
      // lost ones. The heavy re-plan searches over them; the lightweight one
      // takes them only when the survivors alone cannot carry the model: a
      // device that joins costs a deployment (its stage actor, the model,
      // the training data) before the replay can start, and the search left
      // it idle for a reason.
      const bool light = options.recovery == Recovery::lightweight;
      const auto idle = idle_devices(old);
      std::optional<planner::Plan> survivors_only;
      if (light && !idle.empty()) survivors_only = try_ask_planner(lost_in_plan, {}, &explanation);
      plan = survivors_only ? *survivors_only : ask_planner(lost_in_plan, idle, &explanation);
      record.replan = light ? "lightweight" : "heavy";
    } else {
      record.replan = "in-place";
    }
    record.plan_ms = phase.lap_ms();
    std::set<std::string> failed;
    if (!failed_device.empty()) failed.insert(failed_device);
    const auto states = states_for(plan, old, recovered, failed);
    for (size_t s = 0; s < states.size(); ++s) {
      if (states[s].weights.empty()) continue;
      record.layers_moved += plan.stages[s].end - plan.stages[s].begin;
      record.bytes_moved += static_cast<double>(states[s].weights.bytes + states[s].optimizer_state.bytes) *
                            static_cast<double>(plan.stages[s].devices.size());
    }
    coordinator.redeploy(plan, states, lost);
    record.redeploy_ms = phase.lap_ms();
    record.resumed_from = coordinator.next_round();
    record.plan_summary = summary_of(plan);
    record.planned_round_ms = plan.predicted_round_ms;
    failures.push_back(record);
    emit("replan",
         record.replan + " re-plan after losing " + std::to_string(record.devices.size()) +
             " device(s): " + record.plan_summary + "; replaying round " + std::to_string(coordinator.next_round()),
         true);
    if (!explanation.empty()) spdlog::debug("{}", explanation);
  }

  // The baseline Asteroid is compared with: drop everything in flight, plan
  // from scratch over the survivors and start every stage anew from the last
  // checkpoint (the rounds after it are lost and run again), or from the
  // seed when there is none yet.
  void restart(FailureRecord record, PhaseClock& phase) {
    std::vector<std::string> lost_in_plan;
    for (const auto& stage : coordinator.plan().stages) {
      for (const auto& d : stage.devices) {
        if (lost.count(d.id)) lost_in_plan.push_back(d.id);
      }
    }
    const planner::Plan plan = ask_planner(lost_in_plan, {}, nullptr);
    record.plan_ms = phase.lap_ms();
    std::vector<messages::StageState> states(plan.stages.size());
    std::optional<uint64_t> from;
    if (!options.checkpoint_path.empty() && std::ifstream(options.checkpoint_path).good()) {
      const Checkpoint checkpoint = read_checkpoint(options.checkpoint_path);
      from = checkpoint.job.at("round").get<uint64_t>();
      for (size_t s = 0; s < plan.stages.size(); ++s) {
        states[s] = layout->assemble(plan.stages[s].begin, plan.stages[s].end, checkpoint.states);
      }
    } else {
      // No checkpoint yet: every stage starts from the seed, as new.
      states.clear();
    }
    coordinator.rewind_to(from);
    record.states_ms = phase.lap_ms();
    coordinator.redeploy(plan, states, lost, /*respawn=*/true);
    record.redeploy_ms = phase.lap_ms();
    record.replan = "restart";
    record.resumed_from = coordinator.next_round();
    record.plan_summary = summary_of(plan);
    record.planned_round_ms = plan.predicted_round_ms;
    failures.push_back(record);
    emit("replan",
         "stop-and-restart after losing " + std::to_string(record.devices.size()) + " device(s): " +
             record.plan_summary + "; starting again from round " + std::to_string(record.resumed_from),
         true);
  }

  // Devices that came back, or new ones (unreachable when the job started),
  // join at this round boundary. Returns the rounds committed on the way.
  std::vector<actors::RoundReport> admit_returned() {
    std::vector<actors::RoundReport> reports;
    std::vector<std::string> added;
    for (const auto& device : coordinator.take_returned()) {
      if (lost.count(device) || awaited.count(device)) added.push_back(device);
    }
    if (added.empty()) return reports;
    try {
      reports = coordinator.flush();  // a clean boundary: nothing uncommitted
      after_commits(reports);
      for (const auto& device : added) coordinator.reconnect(device);
      std::string explanation;
      const planner::Plan old = coordinator.plan();
      const planner::Plan plan = ask_planner({}, added, &explanation);
      std::vector<messages::StageState> recovered;
      if (coordinator.last_committed()) recovered = coordinator.fetch_states();
      coordinator.redeploy(plan, states_for(plan, old, recovered, {}), {});
      for (const auto& device : added) {
        lost.erase(device);
        awaited.erase(device);
      }
      std::string names;
      for (const auto& d : added) names += (names.empty() ? "" : ", ") + d;
      emit("rejoin", "admitted " + names + " at round " + std::to_string(coordinator.next_round()) + ": " +
                         summary_of(plan),
           true);
    } catch (const DeviceLost& e) {
      recover({e.device}, "device-lost", e.what());
    } catch (const JobError& e) {
      spdlog::warn("could not admit returning devices: {}", e.what());
    }
    return reports;
  }
};

Recovery recovery_from_name(const std::string& name) {
  static constexpr Named<Recovery> kRecoveryNames[] = {{Recovery::lightweight, "lightweight"},
                                                       {Recovery::heavy, "heavy"},
                                                       {Recovery::restart, "restart"},
                                                       {Recovery::stop, "stop"}};
  return parse_named(kRecoveryNames, name, "--replan mode");
}

JobSupervisor::JobSupervisor(caf::actor_system& system, actors::JobSpec spec, SupervisionOptions options)
    : impl_(std::make_unique<Impl>(system, std::move(spec), std::move(options))) {}

JobSupervisor::~JobSupervisor() = default;

void JobSupervisor::start(uint64_t first_round, const std::vector<messages::StageState>& states) {
  impl_->start(first_round, states);
}

std::vector<actors::RoundReport> JobSupervisor::run_round() { return impl_->run_round(); }
std::vector<actors::RoundReport> JobSupervisor::flush() { return impl_->flush(); }

uint64_t JobSupervisor::committed_rounds() const {
  const auto last = impl_->coordinator.last_committed();
  return last ? *last + 1 : 0;
}

uint64_t JobSupervisor::next_round() const { return impl_->coordinator.next_round(); }

void JobSupervisor::on_event(std::function<void(const SupervisionEvent&)> listener) {
  impl_->listener = std::move(listener);
}

void JobSupervisor::on_commit(std::function<void(const actors::RoundReport&)> listener) {
  impl_->commit_listener = std::move(listener);
}

const std::vector<FailureRecord>& JobSupervisor::failures() const { return impl_->failures; }
actors::Coordinator& JobSupervisor::coordinator() { return impl_->coordinator; }
const planner::Plan& JobSupervisor::plan() const { return impl_->coordinator.plan(); }

}  // namespace asteroid::supervision
