// Distributed training of a plan on running nodes, as `asteroid train
// --cluster c.json --plan p.json` does, and the entry point of Asteroid as a
// library (docs/custom-models.md, "As a library"): deploy under the job supervisor,
// run the rounds with a progress line (recovering from device failures on
// the way), write the same metrics and summary files as single-device
// training (plus the trace, the failures and the plans), evaluate test
// accuracy at the end. It can also continue from a checkpoint.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "actors/coordinator.h"
#include "compute/single_trainer.h"
#include "planner/types.h"
#include "supervision/job_actor.h"
#include "supervision/job_supervisor.h"

namespace asteroid::apps {

struct DistributedOptions {
  compute::TrainOptions train;  // model, epochs/rounds, batch, seed, optimizer, outputs
  planner::Cluster cluster;
  planner::Plan plan;
  // For re-planning; absent: the model's real layer sizes with uniform times.
  std::optional<planner::Profile> profile;
  std::string trace_path;       // Perfetto trace (empty: none)
  bool print_grid = false;      // print the step x stage grid of the last round
  double connect_timeout_s = 5;
  // Supervision.
  supervision::Recovery recovery = supervision::Recovery::lightweight;  // --replan
  uint32_t replicate_every = 1;
  double replica_link_share = 0.05;  // JobSpec::replica_link_share
  uint32_t central_every = 0;
  uint32_t checkpoint_every = 0;
  std::string checkpoint_path;    // where checkpoints go (REQUIRED with checkpoint_every)
  std::string resume_checkpoint;  // continue the job saved there (plan, round, weights)
  supervision::HeartbeatOptions heartbeat;
  supervision::StragglerWatch::Rules straggler;  // --straggler-factor, --straggler-rounds
  supervision::SupervisionOptions::Adapt adapt;   // --adapt and its rules (off unless turned on)
  std::string job_id = "job";
  std::string wire = "exact";  // the wire policy re-plans may use (the plan carries its codecs)
  // The device whose node runs the planner actor (every plan of the job,
  // the first one included, comes from it by message); empty: this process.
  std::string planner_on;
  // Plans to switch to at round boundaries (JobSupervisor::switch_plan), by
  // the first round each trains: to repeat the plan sequence of another run.
  std::map<uint64_t, planner::Plan> plan_switches;
  // Called before a round starts for the first time (fault schedules), on
  // the job's driver thread (job_actor.h), as are all the callbacks here.
  std::function<void(uint64_t round, supervision::JobSupervisor&)> before_round;
  // Called for every round as it commits, in order, after its metrics line.
  std::function<void(const actors::RoundReport&)> on_commit;
  // Called for every supervision event, after its metrics line (a
  // failure's comes as its recovery starts).
  std::function<void(const supervision::SupervisionEvent&, supervision::JobSupervisor&)> on_event;
  // Called with the job actor before the job deploys: it answers status
  // requests (JobSupervisor::status) at any time and ends the job at a
  // round boundary on a stop request (JobStopped).
  std::function<void(const supervision::job_actor&)> on_job_started;
  // Asked at every round boundary (on the driver thread): true ends the job
  // as a stop request to its job actor does, with a checkpoint of the last
  // committed round first (when checkpoint_path is set). For signals.
  std::function<bool()> should_stop;
  // Where the job's newest status (JobSupervisor::status) is kept as a
  // file, replaced atomically at every change of phase and at most every
  // 200 ms otherwise, for whoever watches the job from outside its process
  // (`asteroid serve`); empty: none.
  std::string status_path;
  // Extra summary fields (strings), e.g. the emulation mechanisms.
  std::map<std::string, std::string> summary_strings;
  std::map<std::string, double> summary_numbers;
};

// Reads `--plan-switches`: {"switches": [{"round": R, "plan": {...}}, ...]},
// each plan as plan.json has it. Throws std::invalid_argument naming the
// file and the entry.
std::map<uint64_t, planner::Plan> load_plan_switches(const std::string& path);

struct DistributedResult : compute::TrainResult {
  std::vector<actors::RoundReport> committed;       // in order
  std::vector<supervision::FailureRecord> failures;
  std::vector<supervision::StragglerWatch::Verdict> stragglers;  // JobSupervisor::stragglers()
  std::map<std::string, double> device_scales;  // JobSupervisor::device_scales(): the learned speeds
  std::vector<messages::TraceEvent> trace;
  std::map<std::string, uint64_t> peak_memory_bytes;
  planner::Plan final_plan;
  uint64_t first_round = 0;  // > 0 when resumed
  uint64_t dropped_messages = 0;  // Coordinator::dropped_messages()
  // By device: what its node keeps for jobs after this one released its
  // states (Coordinator::release_job); 0 unless other jobs run there.
  std::map<std::string, uint64_t> node_kept_bytes;
};

// Throws std::invalid_argument for options that do not fit together (the
// plan's batch differs from --batch, ...) and actors::JobError when the job
// cannot run (unreachable device, refused stage, unrecoverable failure).
DistributedResult run_distributed_training(const DistributedOptions& options);

}  // namespace asteroid::apps
