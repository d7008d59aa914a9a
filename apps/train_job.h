// The training job on nodes, as `asteroid train` runs it (docs/default-job.md):
//
//   1. bring an emulated cluster up (--env, a preset), or use a running one
//      (--cluster FILE: no up, no down);
//   2. profile the model on every device, on its own node under its own
//      emulation, all at once, and time every device's link;
//   3. plan (hpp, dp, pp, or the best device alone) and print the plan table;
//      an hpp plan on several devices is then probed: it and the best
//      device alone train a few rounds each from the same initial weights,
//      and the faster one is trained (--probe-rounds 0 trusts the model);
//   4. deploy and train under the job supervisor, with a progress line and
//      an optional fault schedule;
//   5. evaluate test accuracy;
//   6. measure the best single device alone on the same cluster (about 30
//      rounds of the same model and batch; --no-baseline skips it), then
//      print the measured and predicted throughput and the speedup over it;
//   7. bring the cluster down and leave a run folder: cluster.json,
//      profile.json, plan.json, metrics.jsonl, summary.json, trace.json,
//      faults.jsonl, checkpoint.bin, PNG plots.
//
// Nothing is left running when the job fails at any step: the cluster it
// brought up is torn down (also on SIGINT/SIGTERM, at the next round
// boundary). REQUIRES: called from the process's main thread before any
// other thread exists (the emulated nodes die with the thread that started
// them, and the coordinator joins the cluster's network namespace).
#pragma once

#include <string>
#include <vector>

#include "apps/distributed_training.h"

namespace asteroid::apps {

struct TrainJobOptions {
  // Model, epochs/rounds, batch, seed, optimizer, progress, data dir, and the
  // supervision knobs. train.metrics_path / summary_path, trace_path and
  // checkpoint_path, when set, put those files elsewhere (a copy still goes
  // into the run folder); empty: in the run folder.
  DistributedOptions distributed;
  std::string strategy = "hpp";  // hpp | dp | pp | single
  // A TorchScript model's data (distributed.train.model a .pt file): tensor
  // files (compute/tensor_dataset.h); empty: Fashion-MNIST.
  std::string data_file, test_data_file;
  std::string env;               // preset A-D (empty and no cluster_file: "C")
  double bandwidth_mbps = 0;     // preset link bandwidth (0: 1000)
  double cpu_budget = 0;         // cores of the whole preset (0: the testbed's default)
  std::string cpu_mode = "auto"; // testbed CPU emulation: auto | cgroup | throttle | none
  std::string net_mode = "auto"; // testbed link emulation: auto | netns | relay | none
  std::string cluster_file;      // a running cluster (no up/down)
  std::string tls_dir;           // with cluster_file: its certificates (overrides its tls.dir)
  bool tls = true;               // the preset (env) runs mutual TLS (--no-tls: plain)
  // With cluster_file: devices that do not answer at the start are left
  // out of this job (profiled, planned and trained on the others) instead
  // of failing it; not with a given plan. `asteroid serve` sets it.
  bool skip_unreachable = false;
  std::string plan_file;         // train this plan (no profiling, no planning)
  std::string profile_file;      // with plan_file: for predictions and re-planning
  std::string resume;            // a checkpoint (or a run folder) to continue
  std::string out;               // the run folder itself; empty: runs_root/<time>-<name>
  std::string runs_root = "runs";
  std::string faults_file;       // fault schedule (fault_schedule.h)
  // Plans to switch to at round boundaries (docs/default-job.md): JSON
  // {"switches": [{"round": R, "plan": {plan.json}}, ...]}.
  std::string plan_switches_file;
  int microbatches = 0;          // M; 0: searched over the divisors of the batch
  // Codecs the planner may put on links (planner/search.h WirePolicy): the
  // widest policy the accuracy benchmark found free (docs/planner.md).
  std::string wire = "int8";
  // How the plan is chosen among the search's candidates (planner/rank.h):
  // "simulated" (the runtime's 1F1B rule) or "model" (COST_MODEL.md alone).
  std::string rank = "simulated";
  // A plan on several devices must beat the best device alone by this
  // fraction, simulated (planner/rank.h) and in the probe, to be trained.
  double min_gain = 0.05;
  uint32_t codec_block = 64;     // values per int8/int4 scale
  std::vector<int> profile_batches = {1, 2, 4, 8, 16, 32, 64};
  int profile_repeats = 5;
  int profile_points = 0;  // batch sizes measured, the others predicted (0: all measured)
  double profile_timeout_s = 600;
  bool plots = true;
  // The measured baseline: the best single device (by the profile) trains
  // alone for this many rounds after the job (0: no baseline).
  int64_t baseline_rounds = 30;
  // The probe (step 3): when hpp plans several devices, it and the best
  // single device each train this many rounds (the first 5 are warm-up)
  // from the job's initial weights, and the job trains whichever measured
  // faster by --min-gain. 0: train the planner's choice unmeasured. Skipped with a given
  // plan, a checkpoint to resume or a fault schedule.
  int64_t probe_rounds = 20;
};

// What the probe measured (step 3). `switched`: the best device alone
// measured faster than the planner's plan and was trained instead.
struct ProbeResult {
  int64_t rounds = 0;  // 0: no probe
  double plan_samples_per_s = 0;
  double single_samples_per_s = 0;
  bool switched = false;
};

struct TrainJobResult {
  std::string run_dir;
  DistributedResult training;
  double predicted_samples_per_s = 0;    // 0: no prediction (no profile)
  double best_single_samples_per_s = 0;  // by the profile; 0: no profile
  std::string best_single_device;
  // The baseline measured on the cluster (0: not measured) and the job's
  // steady throughput over it (both after the first rounds' warm-up).
  double best_single_measured_samples_per_s = 0;
  double speedup_measured = 0;
  ProbeResult probe;
  double job_seconds = 0;
};

// Runs the whole job; prints the plan table, the progress line and the
// summary. Throws std::invalid_argument for bad options or input files
// (naming them), std::runtime_error when the job cannot run or fails.
TrainJobResult run_train_job(const TrainJobOptions& options);

}  // namespace asteroid::apps
