// Pipeline replay: the transitions of the job supervisor's state machine
// (docs/runtime.md, "Pipeline replay as one state machine"). A failure in a
// coordinator step (attempt) aborts the rounds in flight and recovers
// (recover: every stage's state at the last committed round, a re-plan,
// a redeploy, the replay), or restarts from the last checkpoint (restart),
// or stops; a device that comes back joins at a round boundary
// (admit_returned).
#include <algorithm>
#include <fstream>

#include "actors/planner_actor.h"
#include "planner/cost_model.h"
#include "supervision/checkpoint.h"
#include "supervision/job_supervisor_impl.h"

namespace asteroid::supervision {
namespace {

using actors::DeviceLost;
using actors::JobError;
using actors::RoundStalled;
using actors::StageFailed;

}  // namespace

std::optional<std::vector<actors::RoundReport>> JobSupervisor::Impl::attempt(
    const std::function<std::vector<actors::RoundReport>()>& step) {
  std::vector<actors::RoundReport> reports;
  try {
    reports = step();
    after_commits(reports);  // a checkpoint's state fetch may fail: the rounds stay committed
    return reports;
  } catch (const DeviceLost& e) {
    salvaged.insert(salvaged.end(), reports.begin(), reports.end());
    recover({e.device}, "device-lost", e.what());
  } catch (const StageFailed& e) {
    salvaged.insert(salvaged.end(), reports.begin(), reports.end());
    recover({}, "stage-failed", e.what(), e.device);
  } catch (const RoundStalled& e) {
    committed_before_failure();
    recover({}, "round-stalled", e.what());
  } catch (const RecoveryImpossible&) {
    throw;
  } catch (const JobError& e) {
    // A redeploy that failed without naming a device (a plan switch whose
    // new device did not connect to its peers in time) leaves no stage
    // running: recover as after a failure, on the devices the heartbeat
    // monitor still hears, as an admission that fails does.
    if (coordinator.deployed()) throw;
    salvaged.insert(salvaged.end(), reports.begin(), reports.end());
    recover({}, "device-lost", e.what());
  }
  if (++recoveries > options.max_recoveries) {
    throw JobError("gave up after " + std::to_string(options.max_recoveries) +
                   " recoveries in a row without a committed round");
  }
  if (salvaged.empty()) return std::nullopt;
  return std::exchange(salvaged, {});
}

void JobSupervisor::Impl::committed_before_failure() {
  salvaged = coordinator.take_committed();
  for (const auto& report : salvaged) {
    if (options.checkpoint_every > 0) checkpoint_owed |= (report.round + 1) % options.checkpoint_every == 0;
  }
  watch_speed(salvaged);
}

// ------------------------------------------------------------- recovery
planner::Plan JobSupervisor::Impl::ask_planner(const std::vector<std::string>& lost_now, const std::vector<std::string>& added,
                          std::string* explanation) {
  std::string reason;
  bool no_plan = false;
  auto plan = try_ask_planner(lost_now, added, explanation, &reason, &no_plan);
  if (!plan && no_plan) throw RecoveryImpossible(reason);
  if (!plan) throw JobError(reason);
  return *plan;
}

std::optional<planner::Plan> JobSupervisor::Impl::try_ask_planner(const std::vector<std::string>& lost_now,
                                             const std::vector<std::string>& added, std::string* explanation,
                                             std::string* reason, bool* no_plan, const planner::Profile* profile,
                                             std::optional<bool> heavy) {
  messages::PlanRequest request;
  request.cluster_json = planner::cluster_to_json(plannable_cluster()).dump();
  // With adaptation on, every re-plan plans with the speeds the job learned.
  request.profile_json =
      planner::profile_to_json(profile                ? *profile
                               : options.adapt.on     ? SpeedModel::scaled(options.profile, speed.assumed())
                                                      : options.profile)
          .dump();
  request.strategy = "hpp";
  request.batch = static_cast<uint32_t>(coordinator.plan().batch);
  request.microbatches = static_cast<uint32_t>(coordinator.plan().microbatches);
  request.optimizer = options.optimizer;
  request.running_plan_json = planner::plan_to_json(coordinator.plan()).dump();
  request.lost_devices = lost_now;
  request.added_devices = added;
  request.heavy = heavy.value_or(options.recovery != Recovery::lightweight);
  request.wire = options.wire;
  request.codec_block = coordinator.plan().codec_block;
  std::optional<messages::PlanResult> result;
  std::string failure;
  try {
    result = actors::request_plan(coordinator.mailbox(), planner, request, std::chrono::seconds(60));
  } catch (const std::runtime_error& e) {
    failure = e.what();
  }
  if (!result || result->plan_json.empty()) {
    if (reason) *reason = !result ? "the planner did not answer: " + failure : "no plan fits on the remaining devices: " + result->reason;
    if (no_plan) *no_plan = result.has_value();
    return std::nullopt;
  }
  if (explanation) *explanation = result->explanation;
  return planner::plan_from_json(nlohmann::json::parse(result->plan_json), "re-plan");
}

std::vector<std::string> JobSupervisor::Impl::idle_devices(const planner::Plan& plan) const {
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

std::vector<bool> JobSupervisor::Impl::stages_needing_state(const planner::Plan& old, const planner::Plan& plan) const {
  std::vector<bool> needed(plan.stages.size(), true);
  if (!coordinator.deployed()) return needed;  // a failed redeploy left no member to keep
  const bool replicating = coordinator.spec().replicate_every > 0;
  for (size_t s = 0; s < plan.stages.size(); ++s) {
    const planner::Stage& stage = plan.stages[s];
    for (size_t o = 0; o < old.stages.size(); ++o) {
      const planner::Stage& before = old.stages[o];
      if (before.begin != stage.begin || before.end != stage.end) continue;
      bool all_kept = true;
      for (const auto& d : stage.devices) {
        all_kept = all_kept && std::any_of(before.devices.begin(), before.devices.end(),
                                           [&](const planner::StageDevice& b) { return b.id == d.id; });
      }
      // A new replica holder gets the stage's state with its assignment.
      const bool same_holder = !replicating || planner::replica_holder(plan, static_cast<int>(s)) ==
                                                   planner::replica_holder(old, static_cast<int>(o));
      needed[s] = !(all_kept && same_holder);
    }
  }
  return needed;
}

std::vector<messages::StageState> JobSupervisor::Impl::states_to_load(const planner::Plan& old,
                                                                      const planner::Plan& plan) {
  std::vector<messages::StageState> states(plan.stages.size());
  const std::vector<bool> needed = stages_needing_state(old, plan);
  if (std::find(needed.begin(), needed.end(), true) == needed.end()) return states;
  auto assembled = states_for(plan, committed_states());
  for (size_t s = 0; s < states.size(); ++s) {
    if (needed[s]) states[s] = std::move(assembled[s]);
  }
  return states;
}

std::vector<messages::StageState> JobSupervisor::Impl::states_for(const planner::Plan& plan,
                                                                  const std::vector<messages::StageState>& recovered) {
  std::vector<messages::StageState> states(plan.stages.size());
  if (recovered.empty()) return states;  // nothing committed yet: from the seed
  for (size_t s = 0; s < plan.stages.size(); ++s) {
    states[s] = layout.assemble(plan.stages[s].begin, plan.stages[s].end, recovered);
  }
  return states;
}

void JobSupervisor::Impl::recover(std::set<std::string> lost_now, const std::string& kind, const std::string& why,
                                  const std::string& failed_device) {
  std::string cause = why, failed = failed_device;
  const size_t max_attempts = coordinator.spec().cluster.devices.size() + 2;
  for (size_t attempt = 1;; ++attempt) {
    FailureRecord record;
    record.kind = attempt == 1 ? kind : "during-recovery";
    record.round = coordinator.next_round();
    record.detected_s = now_s();
    record.devices.assign(lost_now.begin(), lost_now.end());
    if (!failed.empty()) record.devices.push_back(failed);
    recovering_round = record.round;
    recovering_from = cause;
    enter("recovering", "aborting");
    emit("failure", (attempt == 1 ? "failure in round " : "failure while recovering round ") +
                        std::to_string(record.round) + ": " + cause,
         false, record.devices);
    PhaseClock phase;
    std::string interruption;
    try {
      recover_once(lost_now, failed, record, phase);
      recovered_cache.reset();
      enter("training");
      return;
    } catch (const RecoveryImpossible&) {
      throw;
    } catch (const DeviceLost& e) {
      lost_now = {e.device};
      failed.clear();
      interruption = e.what();
    } catch (const StageFailed& e) {
      lost_now.clear();
      failed = e.device;
      interruption = e.what();
    } catch (const JobError& e) {
      // A step failed without naming a lost device (a node that could not
      // reach a peer, a spawn that failed): the heartbeat monitor tells
      // which device is gone, if any, within its deadline.
      lost_now.clear();
      for (const auto& d : coordinator.reported_lost(lost, 2 * options.heartbeat.deadline)) {
        if (!lost.count(d)) lost_now.insert(d);
      }
      failed.clear();
      interruption = e.what();
    }
    record.replan = "interrupted";
    record.interrupted_by = interruption;
    failures.push_back(record);
    spdlog::warn("recovery of round {} interrupted: {}", record.round, interruption);
    if (attempt >= max_attempts) {
      throw JobError("recovery of round " + std::to_string(record.round) + " failed " + std::to_string(attempt) +
                     " times in a row; the last failure: " + interruption);
    }
    cause = interruption;
  }
}

std::vector<messages::StageState> JobSupervisor::Impl::committed_states() {
  if (!coordinator.last_committed()) return {};
  const uint64_t at = *coordinator.last_committed();
  if (recovered_cache && recovered_cache->round == at) return recovered_cache->states;
  const planner::Plan& plan = coordinator.plan();
  auto states = coordinator.recover_states(lost);
  std::vector<messages::StageState> recovered;
  for (size_t s = 0; s < states.size(); ++s) {
    if (!states[s]) {
      throw RecoveryImpossible("stage " + std::to_string(s) + " (layers " + std::to_string(plan.stages[s].begin) +
                               "-" + std::to_string(plan.stages[s].end) +
                               ") is lost: no surviving member, replica or central copy holds its state of round " +
                               std::to_string(at));
    }
    recovered.push_back(std::move(*states[s]));
  }
  recovered_cache = RecoveredStates{at, recovered};
  return recovered;
}

void JobSupervisor::Impl::count_moved(const planner::Plan& plan, const std::vector<messages::StageState>& states,
                                      FailureRecord& record) {
  for (size_t s = 0; s < states.size(); ++s) {
    if (!states[s].present()) continue;
    record.layers_moved += plan.stages[s].end - plan.stages[s].begin;
    record.bytes_moved += static_cast<double>(states[s].weights.bytes + states[s].optimizer_state.bytes) *
                          static_cast<double>(plan.stages[s].devices.size());
  }
}

void JobSupervisor::Impl::recover_once(std::set<std::string> lost_now, const std::string& failed,
                                       FailureRecord& record, PhaseClock& phase) {
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
  if (options.recovery == Recovery::restart) return restart(record, phase);
  if (options.recovery == Recovery::stop) {
    record.replan = "stop";
    failures.push_back(record);
    throw RecoveryImpossible("stopped after the failure in round " + std::to_string(record.round) +
                             " (--replan stop)" +
                             (options.checkpoint_path.empty() ? std::string()
                                                              : "; continue with --resume " + options.checkpoint_path));
  }
  const planner::Plan old = coordinator.plan();
  std::vector<std::string> lost_in_plan;
  for (const auto& stage : old.stages) {
    for (const auto& d : stage.devices) {
      if (lost.count(d.id)) lost_in_plan.push_back(d.id);
    }
  }
  if (lost_in_plan.empty() && !failed.empty()) {
    // Only stage actors failed, on a node that lives on: restart them where
    // they were, from their committed states; the other members stay (the
    // abort rolled them back) with their loaded models and data.
    record.replan = "in-place";
    enter("recovering", "restarting in place");
    const auto loaded = coordinator.restart_in_place({failed}, lost);
    record.redeploy_ms = phase.lap_ms();  // the restarted stages' states are fetched on the way
    count_moved(old, loaded, record);
    record.resumed_from = coordinator.next_round();
    record.plan_summary = summary_of(old);
    record.planned_round_ms = old.predicted_round_ms;
    failures.push_back(record);
    emit("replan",
         "restarted the stage actors on " + failed + " in place: " + record.plan_summary + "; replaying round " +
             std::to_string(coordinator.next_round()),
         true);
    return;
  }
  enter("recovering", "re-planning");
  planner::Plan plan = old;
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
  enter("recovering", "collecting states");
  const auto states = states_to_load(old, plan);
  record.states_ms = phase.lap_ms();
  count_moved(plan, states, record);
  enter("recovering", "redeploying");
  coordinator.redeploy(plan, states, lost, /*respawn=*/false);
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

std::vector<messages::StageState> JobSupervisor::Impl::final_states() {
  enter("finishing");
  try {
    return coordinator.fetch_states();
  } catch (const DeviceLost& e) {
    FailureRecord record;
    record.kind = "device-lost";
    record.round = coordinator.next_round();
    record.detected_s = now_s();
    record.devices = {e.device};
    record.replan = "final-state";
    emit("failure", "failure after the last round: " + std::string(e.what()) +
                        "; the final weights come from the survivors, replicas or central copies",
         false);
    lost.insert(e.device);
    for (const auto& d : coordinator.reported_lost(lost, std::chrono::milliseconds(0))) lost.insert(d);
    PhaseClock phase;
    auto states = committed_states();
    record.states_ms = phase.lap_ms();
    record.recovered_s = now_s();
    failures.push_back(record);
    return states;
  }
}

void JobSupervisor::Impl::restart(FailureRecord record, PhaseClock& phase) {
  std::vector<std::string> lost_in_plan;
  for (const auto& stage : coordinator.plan().stages) {
    for (const auto& d : stage.devices) {
      if (lost.count(d.id)) lost_in_plan.push_back(d.id);
    }
  }
  enter("recovering", "re-planning");
  const planner::Plan plan = ask_planner(lost_in_plan, {}, nullptr);
  record.plan_ms = phase.lap_ms();
  enter("recovering", "reading the checkpoint");
  std::vector<messages::StageState> states(plan.stages.size());
  std::optional<uint64_t> from;
  if (!options.checkpoint_path.empty() && std::ifstream(options.checkpoint_path).good()) {
    const Checkpoint checkpoint = read_checkpoint(options.checkpoint_path);
    from = checkpoint.job.at("round").get<uint64_t>();
    for (size_t s = 0; s < plan.stages.size(); ++s) {
      states[s] = layout.assemble(plan.stages[s].begin, plan.stages[s].end, checkpoint.states);
    }
  } else {
    // No checkpoint yet: every stage starts from the seed, as new.
    states.clear();
  }
  coordinator.rewind_to(from);
  record.states_ms = phase.lap_ms();
  enter("recovering", "redeploying");
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

std::vector<actors::RoundReport> JobSupervisor::Impl::admit_returned() {
  std::vector<actors::RoundReport> reports;
  std::set<std::string> returned = coordinator.take_returned();
  const auto now = std::chrono::steady_clock::now();
  for (auto it = readmit_at.begin(); it != readmit_at.end();) {
    if (it->second > now) {
      ++it;
      continue;
    }
    returned.insert(it->first);
    it = readmit_at.erase(it);
  }
  // Reached first, each within a short time: one that does not answer now
  // (frozen again, still starting) is tried again later, without stopping
  // the rounds for long or taking the others' admission with it.
  std::vector<std::string> added;
  for (const auto& device : returned) {
    if (!lost.count(device) && !awaited.count(device)) continue;
    try {
      coordinator.reconnect(device, kAdmissionConnectTimeout);
      if (!options.profile.devices.count(device)) {
        ask_join_profile(device);  // admitted once profiled
        continue;
      }
      added.push_back(device);
    } catch (const JobError& e) {
      spdlog::info("not admitting {} yet: {}; trying again in {} ms", device, e.what(), options.reconnect_every.count());
      readmit_at[device] = now + options.reconnect_every;
    }
  }
  if (added.empty()) return reports;
  enter("admitting");
  try {
    reports = coordinator.flush();  // a clean boundary: nothing uncommitted
    after_commits(reports);
    std::string explanation;
    const planner::Plan plan = ask_planner({}, added, &explanation);
    move_to(plan);
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
  } catch (const StageFailed& e) {
    recover({}, "stage-failed", e.what(), e.device);
  } catch (const JobError& e) {
    spdlog::warn("could not admit returning devices: {}", e.what());
    for (const auto& device : added) readmit_at[device] = std::chrono::steady_clock::now() + options.reconnect_every;
    // A redeploy that failed left no stage running: recover from the
    // states collected for the admission.
    if (!coordinator.deployed()) recover({}, "device-lost", e.what());
  }
  enter("training");
  return reports;
}

std::vector<actors::RoundReport> JobSupervisor::Impl::switch_plan(const planner::Plan& plan) {
  auto switched = attempt([&] {
    auto reports = move_to(plan);
    emit("replan", "switched to the given plan at round " + std::to_string(coordinator.next_round()) + ": " +
                       summary_of(plan),
         true);
    return reports;
  });
  return switched.value_or(std::vector<actors::RoundReport>{});
}

std::vector<actors::RoundReport> JobSupervisor::Impl::move_to(const planner::Plan& plan) {
  auto reports = coordinator.flush();  // a clean boundary: nothing stepped is uncommitted
  const planner::Plan old = coordinator.plan();
  // The members that stay must hold nothing of a round started ahead: they
  // roll back to the last committed round, as in a recovery.
  coordinator.abort(lost);
  coordinator.redeploy(plan, states_to_load(old, plan), {}, /*respawn=*/false);
  recovered_cache.reset();
  return reports;
}

}  // namespace asteroid::supervision
