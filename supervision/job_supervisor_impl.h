// The job supervisor's state and operations, shared by its two files:
// job_supervisor.cpp (start, rounds, commits, checkpoints, adaptation) and
// pipeline_replay.cpp (the transitions of pipeline replay: the state
// machine of docs/runtime.md). Private to supervision/.
#pragma once

#include <caf/all.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "planner/json_io.h"
#include "supervision/adaptation.h"
#include "supervision/heartbeat_monitor.h"
#include "supervision/job_supervisor.h"
#include "supervision/stage_states.h"

namespace asteroid::supervision {

// Milliseconds between successive laps (the phases of a recovery).
class PhaseClock {
 public:
  double lap_ms() {
    const auto now = std::chrono::steady_clock::now();
    const double ms = std::chrono::duration<double, std::milli>(now - last_).count();
    last_ = now;
    return ms;
  }

 private:
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

// "[0,3) nx-0:40+tx2-1:24 | [3,9) nano-0:64": a plan in one line.
std::string summary_of(const planner::Plan& plan);

// The job's spec with the rounds a checkpoint falls due after as commit points.
actors::JobSpec with_commit_points(actors::JobSpec spec, const SupervisionOptions& options);

struct JobSupervisor::Impl {
  Impl(caf::actor_system& system, actors::JobSpec spec, SupervisionOptions options, actors::Mailbox* mailbox)
      : system(system),
        coordinator(system, with_commit_points(std::move(spec), options), mailbox),
        options(std::move(options)),
        layout(StateLayout::of(this->options.profile.layers, this->options.optimizer)) {}

  ~Impl() {
    if (monitor) caf::anon_send_exit(monitor, caf::exit_reason::user_shutdown);
    if (planner) caf::anon_send_exit(planner, caf::exit_reason::user_shutdown);
  }

  caf::actor_system& system;
  actors::Coordinator coordinator;
  SupervisionOptions options;
  StateLayout layout;
  heartbeat_monitor_actor monitor;
  // Heartbeat round trips by device, as the monitor measures them (on its
  // own thread): for status().
  struct RoundTrips {
    struct Device {
      double last_ms = 0, sum_ms = 0;
      uint64_t count = 0;
    };
    std::mutex mutex;
    std::map<std::string, Device> devices;
  };
  std::shared_ptr<RoundTrips> round_trips = std::make_shared<RoundTrips>();
  caf::actor planner;
  std::set<std::string> lost;     // devices lost and not back
  std::set<std::string> awaited;  // devices not in the plan that were unreachable at the start
  // Devices that joined without a profile, and when their node was asked
  // for a short one (answered through take_probes): they are admitted once
  // the latency predictor completed it; asked again after
  // kJoinProfileTimeout without an answer.
  std::map<std::string, std::chrono::steady_clock::time_point> profiling;
  static constexpr std::chrono::seconds kJoinProfileTimeout{60};
  std::vector<FailureRecord> failures;
  std::function<void(const SupervisionEvent&)> listener;
  std::function<void(const std::string&)> status_listener;
  std::string phase = "deploying", step;  // JobSupervisor::status()
  uint64_t recovering_round = 0;          // while recovering: the round replayed
  std::string recovering_from;            // ... and the failure that started it
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  int recoveries = 0;
  std::vector<actors::RoundReport> salvaged;  // committed in a step that then failed
  bool checkpoint_owed = false;                // a checkpoint fell due in such a step
  // Every stage's state at the last committed round, as collected by a
  // recovery (or an admission) whose redeploy has not succeeded yet: an
  // attempt that fails after collecting them leaves the members gone, and
  // the next attempt starts from these.
  struct RecoveredStates {
    uint64_t round = 0;
    std::vector<messages::StageState> states;
  };
  std::optional<RecoveredStates> recovered_cache;
  // Returning devices that could not be reached when admitted, and when to
  // try again.
  std::map<std::string, std::chrono::steady_clock::time_point> readmit_at;
  static constexpr std::chrono::milliseconds kAdmissionConnectTimeout{1000};
  std::optional<StragglerWatch> watch;  // for the deployment numbered watched_deployment
  uint64_t watched_deployment = 0;
  SpeedModel speed{options.adapt.rules};  // learned scales, expecting the plan in force
  // How long speeds held between drifts (the horizon of a switch); a
  // drift is seen `rounds` + 1 rounds after the change.
  SpeedSpells speed_spells{static_cast<uint64_t>(options.adapt.rules.rounds) + 1};
  bool speed_expecting = false;           // speed expects the deployment numbered watched_deployment
  std::vector<std::string> drifted;       // devices whose speed drifted, not yet acted on
  // What a switch costs beside its transfers, learned from each switch; a
  // device's start is the job's first deployment's time until measured.
  SwitchCosts switch_costs{options.adapt.switch_overhead_ms, options.adapt.switch_overhead_ms};
  std::vector<StragglerWatch::Verdict> stragglers;

  double now_s() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(); }

  void emit(const std::string& kind, const std::string& text, bool with_plan, std::vector<std::string> devices = {},
            std::map<std::string, double> numbers = {}) {
    spdlog::info("{}", text);
    SupervisionEvent event;
    event.kind = kind;
    event.text = text;
    if (with_plan) {
      event.plan_json = planner::plan_to_json(coordinator.plan()).dump();
      event.from_round = static_cast<int64_t>(coordinator.next_round());
    }
    event.devices = std::move(devices);
    event.numbers = std::move(numbers);
    emit(std::move(event));
  }
  void emit(SupervisionEvent event) {
    if (listener) listener(std::move(event));
  }

  // The job's status (JobSupervisor::status) and telling the status
  // listener: at every change of phase or step, and after commits.
  std::string status() const;
  void publish() const {
    if (status_listener) status_listener(status());
  }
  void enter(std::string new_phase, std::string new_step = "") {
    phase = std::move(new_phase);
    step = std::move(new_step);
    publish();
  }

  void start(uint64_t first_round, const std::vector<messages::StageState>& states);

  // ------------------------------------------------------------- rounds

  std::vector<actors::RoundReport> run_round();

  // Commits the round waiting for its replicas. After a failure the round
  // is lost instead and runs again with the next run_round().
  std::vector<actors::RoundReport> flush();

  // Runs a coordinator step that commits rounds. A failure on the way is
  // recovered from (the lost rounds will run again), and then there is
  // nothing to return.
  std::optional<std::vector<actors::RoundReport>> attempt(const std::function<std::vector<actors::RoundReport>()>& step);

  // Rounds that committed in a step that then failed count like any other
  // (no checkpoint now: a device may be gone; the next commit takes it).
  void committed_before_failure();

  void after_commits(const std::vector<actors::RoundReport>& reports);

  // Feeds the committed rounds' compute times to the straggler watch (a new
  // one, with the plan's predictions, after every deployment) and emits
  // its verdicts.
  void watch_speed(const std::vector<actors::RoundReport>& reports);
  // Adaptive training's view of the idle devices: asks them for a short
  // profile every probe_idle_every rounds and feeds the answers to the
  // speed model (a device whose speed changed counts as drifted).
  void probe_idle_devices(uint64_t round);
  // The short profiles answered since the last call: a joining device's
  // becomes its profile (take_join_profile), an idle device's a speed
  // observation (when adaptation is on).
  void take_probes();
  // A device reached without a profile: its node measures one batch size
  // beside the rounds; it is admitted when that comes back.
  void ask_join_profile(const std::string& device);
  // `measured` (one device, a few batch sizes) completed by the latency
  // predictor fitted on the job's profile becomes the device's profile; it
  // is admitted at the next round boundary.
  void take_join_profile(const std::string& device, const planner::DeviceProfile& measured);
  // The part of the job's cluster the job's profile covers: what plans may
  // use (a device that joined without a profile is not in it until its
  // profile comes).
  planner::Cluster plannable_cluster() const {
    return planner::profiled_part(coordinator.spec().cluster, options.profile);
  }
  // Per device, the compute time per round `profile` predicts for it
  // under `plan` (empty when the profile cannot evaluate the plan).
  std::map<std::string, double> predicted_compute_ms(const planner::Plan& plan, const planner::Profile& profile) const;
  // Adaptive training, at a round boundary: when a device drifted, re-plans
  // with the learned speeds and switches when it pays (SupervisionOptions::
  // Adapt); the event says which. Returns the rounds committed on the way.
  std::vector<actors::RoundReport> adapt();

  void write_checkpoint_at(uint64_t round);

  // ------------------------------------------------------------- pipeline replay (pipeline_replay.cpp)

  planner::Plan ask_planner(const std::vector<std::string>& lost_now, const std::vector<std::string>& added,
                            std::string* explanation);

  // The planner's re-plan, or nothing (with the reason) when no plan fits
  // (`no_plan` set) or the planner did not answer. ask_planner throws
  // RecoveryImpossible for the first and JobError for the second.
  // `profile`: the speeds to plan with (default the job's, scaled by the
  // learned speeds when adaptation is on); `heavy`: a full search (default:
  // as the recovery policy says).
  std::optional<planner::Plan> try_ask_planner(const std::vector<std::string>& lost_now,
                                               const std::vector<std::string>& added, std::string* explanation,
                                               std::string* reason = nullptr, bool* no_plan = nullptr,
                                               const planner::Profile* profile = nullptr,
                                               std::optional<bool> heavy = std::nullopt);
  // Flushes, aborts what was started ahead and moves to `plan` from the
  // last committed round: the members of stages it leaves unchanged stay,
  // the others load their layers' states (state surgery). No event (an
  // admission's plan may use devices still counted lost). Returns the
  // rounds the flush committed.
  std::vector<actors::RoundReport> move_to(const planner::Plan& plan);

  // Devices of the cluster that `plan` does not use and that are neither
  // lost nor awaited (unreachable since the start).
  std::vector<std::string> idle_devices(const planner::Plan& plan) const;

  // Which stages of `plan` need a state to start from when the job moves
  // from `old` to it after an abort: all, unless the old members are still
  // deployed; none for a stage with the layers of an old stage, members
  // that were all in it, and the same replica holder (its members stay in
  // place, rolled back to the last committed round).
  std::vector<bool> stages_needing_state(const planner::Plan& old, const planner::Plan& plan) const;
  // What the stages of `plan` load when the job moves to it from `old` at
  // the last committed round: for the stages that need one, their state
  // cut from every stage's committed state (committed_states(), collected
  // only then); an empty state for the others, whose members stay.
  std::vector<messages::StageState> states_to_load(const planner::Plan& old, const planner::Plan& plan);

  // The state each stage of `plan` starts from, cut and glued by layer from
  // the recovered states of the old stages (none before the first commit:
  // every stage from the seed). A member that loads a state is a fresh
  // stage actor unless its device already ran one; data carries its
  // deployment, so nothing an actor of the previous deployment still sends
  // (a round in flight, a frozen node thawed) is taken by a member kept.
  std::vector<messages::StageState> states_for(const planner::Plan& plan,
                                               const std::vector<messages::StageState>& recovered);

  // Recovers from a failure, and from failures during the recovery (each
  // attempt one FailureRecord), at most kMaxAttemptsPerFailure attempts.
  void recover(std::set<std::string> lost_now, const std::string& kind, const std::string& why,
               const std::string& failed_device = "");
  // One attempt: abort, collect the states, re-plan, redeploy; or, when
  // only stage actors on `failed` failed (no device is lost), restart them
  // in place. Fills `record`.
  void recover_once(std::set<std::string> lost_now, const std::string& failed, FailureRecord& record,
                    PhaseClock& phase);
  // Adds what `states` (by stage of `plan`; empty: stays in place) move to
  // the record's layers_moved and bytes_moved.
  static void count_moved(const planner::Plan& plan, const std::vector<messages::StageState>& states,
                          FailureRecord& record);
  // Every stage's state at the last committed round (none before the first
  // commit): the cached ones, else collected from the survivors. Throws
  // RecoveryImpossible naming a stage whose state is gone.
  std::vector<messages::StageState> committed_states();

  std::vector<messages::StageState> final_states();

  // The baseline Asteroid is compared with: drop everything in flight, plan
  // from scratch over the survivors and start every stage anew from the last
  // checkpoint (the rounds after it are lost and run again), or from the
  // seed when there is none yet.
  void restart(FailureRecord record, PhaseClock& phase);

  // Devices that came back, or new ones (unreachable when the job started),
  // join at this round boundary; one that does not answer within
  // kAdmissionConnectTimeout is tried again reconnect_every later. Returns
  // the rounds committed on the way.
  std::vector<actors::RoundReport> admit_returned();

  std::vector<actors::RoundReport> switch_plan(const planner::Plan& plan);
};

}  // namespace asteroid::supervision
