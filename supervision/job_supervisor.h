// The job supervisor: the top of Asteroid's supervision tree. It drives a
// Coordinator and keeps training going when devices fail:
//
//   job supervisor (this, in the coordinator process)
//     heartbeat monitor (an actor: heartbeats + CAF down notifications)
//     planner (an actor: lightweight or heavy re-plans)
//     device supervisors (each node's actor: keeps the committed state of
//       the stages it hosts and the replicas of its neighbours)
//       stage actors
//
// On a device failure (pipeline replay): stop the round in flight (every
// member rolls back to the last committed round), find every stage's state
// at that round (a surviving group member, the node of a failed stage, the
// replica holder, or the central copy), ask the planner for the lightweight
// re-plan (or the heavy one), re-deploy (a fresh stage actor for every
// member, spawned on its device with CAF remote spawn, loads its stage's
// recovered state: nothing the previous deployment still sends is taken)
// and replay the lost round. A stage
// actor that failed on its own is restarted in place by its node (the
// device supervisor) and re-wired here; a node that gives up restarting
// loses its device. A
// device that comes back, or a new one, is admitted at a round boundary.
// Every `checkpoint_every` committed rounds it writes a checkpoint.
//
// A failure during a recovery (a device lost while states are collected,
// the plan is deployed or a checkpoint is fetched) starts the recovery again
// on the survivors, from the states already recovered; each interrupted
// attempt is recorded. When recovery is impossible (a stage lost with no
// replica left, or no plan fits on the survivors) it throws
// RecoveryImpossible naming the reason, and after too many attempts in a row
// JobError; the last checkpoint stays as it was. Not thread-safe: one thread
// drives it.
#pragma once

#include <caf/fwd.hpp>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "actors/coordinator.h"
#include "planner/types.h"
#include "supervision/adaptation.h"
#include "supervision/health.h"
#include "supervision/straggler_watch.h"

namespace asteroid::supervision {

// No recovery exists: a stage's state is gone with every device that held
// it, or no plan fits on the devices left.
struct RecoveryImpossible : actors::JobError {
  using actors::JobError::JobError;
};

// How a device failure is handled.
enum class Recovery {
  lightweight,  // pipeline replay with the lightweight re-plan (the default)
  heavy,        // pipeline replay with a full search over the survivors
  restart,      // the baseline: stop every stage, plan from scratch over the
                // survivors, restart from the last checkpoint (or the seed)
  stop,         // end the job (JobError) and leave the last checkpoint for
                // `--resume`: for an outside orchestrator, and the paper's
                // stop-and-restart baseline when a new process resumes
};

// "lightweight", "heavy", "restart" or "stop"; std::invalid_argument else.
Recovery recovery_from_name(const std::string& name);

struct SupervisionOptions {
  Recovery recovery = Recovery::lightweight;
  HeartbeatOptions heartbeat;
  std::chrono::milliseconds reconnect_every{1000};  // tries to reach lost or awaited devices
  // The profile the re-planner evaluates plans with (the job's own, or
  // uniform_profile() when the job was planned by hand).
  planner::Profile profile;
  OptimizerKind optimizer = OptimizerKind::momentum;
  std::string wire = "exact";  // the wire policy re-plans may use (planner/search.h)
  std::string planner_on;      // the device whose node runs the planner actor; empty: this process
  int max_recoveries = 16;          // in a row without a committed round; then the job gives up
  // When a live device counts as a straggler (straggler_watch.h).
  StragglerWatch::Rules straggler;
  // Adaptive training (adaptation.h; docs/runtime.md, "Adaptive training"):
  // when a device's measured speed drifts from what the plan assumed, re-plan
  // with the learned speeds and switch when it pays within the horizon.
  struct Adapt {
    bool on = false;  // `asteroid train` turns it on (--adapt on|off)
    SpeedModel::Rules rules;
    uint64_t horizon_rounds = 200;     // a switch must pay for itself within this many rounds
    double min_gain = 0.1;             // and its plan be this much faster (0.1: 10 %) under the learned speeds
    // A switch's cost beside the bytes it moves (flush, abort, redeploy)
    // when it keeps every member in place, until one was measured; then the
    // last measured one. A device it brings in adds its start
    // (SwitchCosts: the job's first deployment's time until measured).
    double switch_overhead_ms = 1000;
    uint64_t speed_line_every = 20;    // committed rounds between device_speed lines (0: none)
    // Committed rounds between short profiles of the devices the plan leaves
    // idle (one batch size, one repeat, on their own nodes, answered beside
    // the rounds): a device that got its speed back is used again (0: never).
    uint64_t probe_idle_every = 25;
  } adapt;
  uint32_t checkpoint_every = 0;    // committed rounds between checkpoints (0: none)
  std::string checkpoint_path;      // where (REQUIRED when checkpoint_every > 0)
};

// One failure and what it cost.
struct FailureRecord {
  std::vector<std::string> devices;  // lost (or whose stage failed)
  std::string kind;                  // device-lost | stage-failed | round-stalled | during-recovery
  uint64_t round = 0;                // the round in flight (replayed)
  double detected_s = 0;             // since the job started
  double recovered_s = -1;           // first commit after it; -1 until then
  double recovery_ms() const { return recovered_s < 0 ? -1 : (recovered_s - detected_s) * 1000.0; }
  std::string replan;                // lightweight | heavy | restart | in-place | stop | final-state,
                                     // or interrupted (a failure during this recovery: see `interrupted_by`)
  std::string interrupted_by;        // what interrupted this attempt
  uint64_t resumed_from = 0;         // the round training went on from
  int layers_moved = 0;
  double bytes_moved = 0;
  double planned_round_ms = 0;       // the new plan's T_round by the cost model
  std::string plan_summary;          // "[0,3) nx0+tx2-1 | [3,9) nano-0"
  // Where the time from detection to redeployment went, in ms: stopping the
  // round in flight, collecting the committed states (restart: reading the
  // checkpoint), re-planning, respawning and loading the stages.
  double abort_ms = 0, states_ms = 0, plan_ms = 0, redeploy_ms = 0;
};

// An event for the metrics file: a failure, a new plan, a rejoin, a
// checkpoint, a device that became a straggler or is one no more.
struct SupervisionEvent {
  std::string kind;      // failure | replan | rejoin | checkpoint | straggler | straggler-end |
                         // device_speed | adapt | adapt-kept
  std::string text;      // one line for people
  std::string plan_json; // the plan in force afterwards (replan, rejoin)
  std::vector<std::string> devices;  // failure: the devices lost or failing, as far as known
  int64_t from_round = -1;           // replan, rejoin: the first round the new plan trains
  // straggler, straggler-end: "at_round" (that decided it; never "round",
  // which marks a round line of the metrics), "measured_ms", "predicted_ms"
  // (compute per round) and "ratio_to_median". adapt, adapt-kept:
  // "at_round", "old_round_ms" and "new_round_ms" (the cost model's, under
  // the learned speeds), "gain_ms" (over the horizon), "migration_ms"
  // (predicted), "bytes_moved", and for adapt "switch_ms" (measured).
  std::map<std::string, double> numbers;
  // device_speed, adapt, adapt-kept: each device's learned scale (its
  // compute time against the base profile's: 2 is twice as slow).
  std::map<std::string, double> scales;
  std::string old_plan_json;  // adapt: the plan switched from
};

class JobSupervisor {
 public:
  // `mailbox`: where the coordinator's messages arrive (Coordinator's
  // constructor), the job driver's under a job actor (job_actor.h).
  JobSupervisor(caf::actor_system& system, actors::JobSpec spec, SupervisionOptions options,
                actors::Mailbox* mailbox = nullptr);
  ~JobSupervisor();
  JobSupervisor(const JobSupervisor&) = delete;
  JobSupervisor& operator=(const JobSupervisor&) = delete;

  // Deploys (see Coordinator::deploy) and starts the heartbeat monitor.
  void start(uint64_t first_round = 0, const std::vector<messages::StageState>& states = {});
  // Runs the next round, recovering from failures on the way. Returns the
  // rounds committed meanwhile (none when the round was lost and will be
  // replayed by the next call). Throws JobError when recovery is impossible.
  // Drive it as: while (committed_rounds() < N) next_round() < N ? run_round() : flush();
  std::vector<actors::RoundReport> run_round();
  // At this round boundary, commits what is stepped and moves the job to
  // `plan` (every stage's state cut and glued by layer onto it, fresh stage
  // actors): the same mathematics on another plan, as a re-plan does it.
  // Returns the rounds committed on the way.
  std::vector<actors::RoundReport> switch_plan(const planner::Plan& plan);
  // Commits the round still waiting for its replicas (after a failure the
  // round is lost instead and runs again with the next run_round()).
  std::vector<actors::RoundReport> flush();
  // Writes a checkpoint of the last committed round now (after flush(), at
  // a round boundary), whatever checkpoint_every says: for a job that stops
  // on request. No-op without a checkpoint path or a committed round.
  void checkpoint_now();
  // The last committed state of every stage, in stage order, for the end of
  // the job: from the stages' members, or, for a member lost since the last
  // commit, from its node, its replica holder or the central copy (the
  // failure is recorded). Throws RecoveryImpossible naming a stage whose
  // state is gone everywhere.
  std::vector<messages::StageState> final_states();
  // Rounds committed so far (the last committed round + 1) and the next
  // round to start.
  uint64_t committed_rounds() const;
  uint64_t next_round() const;

  void on_event(std::function<void(const SupervisionEvent&)> listener);
  // The job's status as JSON: Coordinator::status() plus "phase"
  // (deploying | training | checkpointing | recovering | admitting |
  // finishing), "step" while recovering (aborting | collecting states |
  // re-planning | redeploying | restarting in place | reading the
  // checkpoint), "recovery" while recovering ({"round": the round replayed,
  // "cause": the failure}) and "failures" (how many recoveries ended).
  std::string status() const;
  // Called with status() at every change of phase or step and after every
  // commit, on the thread that drives the supervisor (job_actor.h publishes
  // it to the job actor, which answers status requests at any time).
  void on_status(std::function<void(const std::string&)> listener);
  // Called for every committed round, in order, as it commits: before the
  // stages are told (Coordinator::on_commit) and before a checkpoint of it
  // is written, so a log written here lags neither the nodes' committed
  // states nor a checkpoint.
  void on_commit(std::function<void(const actors::RoundReport&)> listener);
  const std::vector<FailureRecord>& failures() const;
  // Every straggler verdict so far (became one, or is one no more).
  const std::vector<StragglerWatch::Verdict>& stragglers() const;
  // Each device's learned scale now (adaptation.h), also with adapt off.
  std::map<std::string, double> device_scales() const;
  actors::Coordinator& coordinator();
  const planner::Plan& plan() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A profile for re-planning a job planned by hand: the model's real layer
// sizes (from `layers`) and the same time per sample and layer on every
// device, so that plans are compared by balance, memory and transfers.
planner::Profile uniform_profile(const std::vector<planner::LayerInfo>& layers, const planner::Cluster& cluster);
// Its `model` field: how a placeholder profile is told from a measured one.
inline constexpr const char* kUniformProfile = "uniform";

}  // namespace asteroid::supervision
