// `asteroid train`: the training job on nodes (apps/train_job.h,
// docs/default-job.md): with no arguments it brings up emulated env C,
// profiles, plans hpp, trains fmnist-resnet for one epoch and leaves a run
// folder. `--strategy single` without --env/--cluster/--resume is the
// in-process single-device path (no nodes, no run folder; docs/compute.md).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <stdexcept>

#include "apps/commands.h"
#include "apps/train_job.h"
#include "compute/profiler.h"
#include "compute/single_trainer.h"
#include "compute/torchscript_model.h"

namespace asteroid::apps {
namespace {

struct TrainCli {
  TrainJobOptions job;
  std::string optimizer = "momentum";
  double lr = 0;  // 0: the optimizer's default
  std::string progress = "auto";
  std::string replan = "lightweight";
  std::string adapt = "on";
  std::string profile_batches = "1,2,4,8,16,32,64";
  int heartbeat_interval_ms = 100, heartbeat_deadline_ms = 700;
  bool no_plots = false;
  bool no_tls = false;

  TrainCli() {
    job.distributed.train.model = "fmnist-resnet";
    job.distributed.train.epochs = 1;
    job.distributed.train.batch = 64;
  }
  compute::TrainOptions& train() { return job.distributed.train; }
};

compute::ProgressLine::Mode parse_progress(const std::string& s) {
  if (s == "auto") return compute::ProgressLine::Mode::automatic;
  if (s == "terminal") return compute::ProgressLine::Mode::terminal;
  if (s == "plain") return compute::ProgressLine::Mode::plain;
  if (s == "off") return compute::ProgressLine::Mode::off;
  throw std::invalid_argument("--progress must be auto, terminal, plain or off, got '" + s + "'");
}

void prepare(TrainCli& cli) {
  compute::TrainOptions& o = cli.train();
  o.optimizer = compute::default_optimizer_config(parse_optimizer(cli.optimizer));
  if (cli.lr != 0) o.optimizer.lr = cli.lr;
  o.progress = parse_progress(cli.progress);
}

// The in-process single-device path: options in, summary printed.
void run_single(TrainCli& cli) {
  prepare(cli);
  cli.train().model = compute::resolve_model(cli.train().model, cli.job.data_file, cli.job.test_data_file);
  compute::TrainOptions o = cli.train();
  o.strategy = "single";
  const compute::TrainResult r = compute::run_single_training(o);
  std::printf(
      "model %s: %lld rounds (%lld samples) in %.1f s, %.0f samples/s, final loss %.4f, "
      "test accuracy %.2f %% on %lld samples\n",
      o.model.c_str(), (long long)r.rounds, (long long)r.samples, r.train_seconds, r.samples_per_s, r.final_loss,
      100.0 * r.test_accuracy, (long long)r.test_samples);
}

// Everything else: the job on nodes.
void run_job(TrainCli& cli) {
  prepare(cli);
  TrainJobOptions& j = cli.job;
  DistributedOptions& d = j.distributed;
  d.recovery = supervision::recovery_from_name(cli.replan);
  d.adapt.on = cli.adapt == "on";
  d.heartbeat.interval = std::chrono::milliseconds(cli.heartbeat_interval_ms);
  d.heartbeat.deadline = std::chrono::milliseconds(cli.heartbeat_deadline_ms);
  j.profile_batches = compute::parse_batch_list(cli.profile_batches);
  j.plots = !cli.no_plots;
  j.tls = !cli.no_tls;
  run_train_job(j);
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto cli = std::make_shared<TrainCli>();
  TrainJobOptions& j = cli->job;
  DistributedOptions& d = j.distributed;
  compute::TrainOptions& t = d.train;
  CLI::App* cmd = app.add_subcommand(
      "train",
      "train a model on nodes: with no arguments, bring up emulated env C, profile, plan (hpp), train fmnist-resnet "
      "for one epoch and leave a run folder in runs/ (docs/default-job.md); --strategy single alone trains in this "
      "process");
  cmd->add_option("--strategy", j.strategy, "hpp | dp | pp | single (the best device alone)")->capture_default_str();
  cmd->add_option("--model", t.model, "zoo model, or a TorchScript file (docs/custom-models.md)")->capture_default_str();
  cmd->add_option("--data", j.data_file, "a TorchScript model's data: a torch.save file (default Fashion-MNIST)");
  cmd->add_option("--test-data", j.test_data_file, "its test split in a file of its own (default: one in ten of --data)");
  cmd->add_option("--epochs", t.epochs, "epochs over the training set")->capture_default_str();
  cmd->add_option("--batch", t.batch, "mini-batch size (samples per round)")->capture_default_str();
  cmd->add_option("--seed", t.seed, "initial weights and sample order")->capture_default_str();
  cmd->add_option("--rounds", t.rounds, "stop after N rounds (0: all epochs)")->capture_default_str();
  cmd->add_option("--optimizer", cli->optimizer, "sgd | momentum | adam")->capture_default_str();
  cmd->add_option("--lr", cli->lr, "learning rate (default 0.05, adam 0.001)");
  cmd->add_option("--threads", t.threads, "Torch threads (this process)")->capture_default_str();
  cmd->add_option("--metrics", t.metrics_path, "JSON Lines file, one line per round (default: in the run folder)");
  cmd->add_option("--summary", t.summary_path, "summary JSON file (default: in the run folder)");
  cmd->add_option("--weights-out", t.weights_out, "final flat weights (binary, see docs/compute.md)");
  cmd->add_option("--data-dir", t.data_dir, "Fashion-MNIST directory (default /usr/share/datasets/fashion-mnist)");
  cmd->add_option("--test-samples", t.test_samples, "evaluate on the first N test samples (0: all)")
      ->capture_default_str();
  cmd->add_option("--progress", cli->progress, "auto | terminal | plain | off")->capture_default_str();

  auto* cluster = "Cluster";
  cmd->add_option("--env", j.env, "bring up this emulated preset: A, B, C or D (default C; docs/testbed.md)")
      ->group(cluster);
  cmd->add_option("--bandwidth", j.bandwidth_mbps, "link bandwidth of the preset in Mbit/s (default 1000; 100 = slow)")
      ->check(CLI::PositiveNumber)
      ->group(cluster);
  cmd->add_option("--cpu-budget", j.cpu_budget, "cores the whole preset may use (default: 3/4 of the cores)")
      ->check(CLI::PositiveNumber)
      ->group(cluster);
  cmd->add_option("--cpu", j.cpu_mode, "CPU emulation of the preset: auto | cgroup | throttle | none")
      ->capture_default_str()
      ->group(cluster);
  cmd->add_option("--net", j.net_mode, "link emulation of the preset: auto | netns | relay | none")
      ->capture_default_str()
      ->group(cluster);
  cmd->add_option("--cluster", j.cluster_file, "cluster.json of running nodes (no up/down)")->group(cluster);
  cmd->add_flag("--no-tls", cli->no_tls,
                "with --env: plain TCP between the preset's nodes (default: mutual TLS, docs/security.md)")
      ->excludes("--cluster")
      ->group(cluster);
  cmd->add_option("--tls-dir", j.tls_dir,
                  "with --cluster: mutual TLS with the certificates in DIR (ca.pem, coordinator.pem/.key), "
                  "instead of the cluster's tls.dir (docs/security.md)")
      ->check(CLI::ExistingDirectory)
      ->needs("--cluster")
      ->group(cluster);
  cmd->add_flag("--skip-unreachable", j.skip_unreachable,
                "with --cluster: train without the devices that do not answer at the start instead of failing; "
                "they join when they answer (profiled then, beside the rounds)")
      ->group(cluster);
  cmd->add_option("--out", j.out, "the run folder (default: runs/<time>-<name>, with runs/latest)")->group(cluster);
  cmd->add_flag("--no-plots", cli->no_plots, "no PNG plots in the run folder")->group(cluster);
  cmd->add_option("--baseline-rounds", j.baseline_rounds,
                  "after the job, train the best single device alone this many rounds on the same cluster and "
                  "report the measured speedup (0: none)")
      ->capture_default_str()
      ->group(cluster);
  cmd->add_option("--min-gain", j.min_gain,
                  "a plan on several devices is trained only if it beats the best device alone by this fraction, "
                  "simulated and in the probe")
      ->capture_default_str()
      ->group(cluster);
  cmd->add_option("--probe-rounds", j.probe_rounds,
                  "before training an hpp plan on several devices, train it and the best single device this many "
                  "rounds each and train the faster (0: trust the planner)")
      ->capture_default_str()
      ->group(cluster);
  cmd->add_flag_callback(
         "--no-baseline", [&j] { j.baseline_rounds = 0; }, "no measured baseline (same as --baseline-rounds 0)")
      ->group(cluster);

  auto* planning = "Profiling and planning";
  cmd->add_option("--planner-on", j.distributed.planner_on,
                  "the device whose node runs the planner actor (every plan, the first included, comes from it by "
                  "message; default: this process)")
      ->group(planning);
  cmd->add_option("--rank", j.rank,
                  "how the plan is chosen: simulated (the search's candidates under the runtime's 1F1B rule) or "
                  "model (the cost model's optimum, COST_MODEL.md)")
      ->check(CLI::IsMember({"simulated", "model"}))
      ->capture_default_str()
      ->group(planning);
  cmd->add_option("--wire", j.wire,
                  "codecs the planner may put on links: exact (fp32 only), fp16 (+bf16), int8, int4 or auto; a lossy "
                  "codec only where the profile has its speeds and it makes the round faster")
      ->capture_default_str()
      ->group(planning);
  cmd->add_option("--codec-block", j.codec_block, "values per int8/int4 scale")
      ->capture_default_str()
      ->check(CLI::Range(1u, wire_codec::kMaxBlock))
      ->group(planning);
  cmd->add_option("--microbatches", j.microbatches, "micro-batches per mini-batch (0: searched)")
      ->capture_default_str()
      ->group(planning);
  cmd->add_option("--profile-batches", cli->profile_batches, "batch sizes every device profiles")
      ->capture_default_str()
      ->group(planning);
  cmd->add_option("--profile-repeats", j.profile_repeats, "measured runs per layer and batch size")
      ->capture_default_str()
      ->group(planning);
  cmd->add_option("--profile-points", j.profile_points,
                  "batch sizes every device measures (the smallest, the largest, spread between); the learned "
                  "latency predictor fills in the others (0: measure all)")
      ->capture_default_str()
      ->check(CLI::Range(0, 64))
      ->group(planning);
  cmd->add_option("--profile-timeout", j.profile_timeout_s, "seconds for every device to profile")
      ->capture_default_str()
      ->group(planning);
  cmd->add_option("--plan", j.plan_file, "train this plan.json (no profiling, no planning)")->group(planning);
  cmd->add_option("--profile", j.profile_file, "profile.json for a given --plan (predictions, re-planning)")
      ->group(planning);

  auto* nodes = "Training on nodes";
  cmd->add_option("--trace", d.trace_path, "write the Chrome/Perfetto trace here (default: run folder trace.json)")
      ->group(nodes);
  cmd->add_flag("--grid", d.print_grid, "print the step x stage grid of the last round")->group(nodes);
  cmd->add_option("--connect-timeout", d.connect_timeout_s, "seconds to reach each device")
      ->capture_default_str()
      ->group(nodes);
  cmd->add_option("--job-id", d.job_id, "name of the job on the nodes")->group(nodes);

  auto* faults = "Fault tolerance";
  cmd->add_option("--faults", j.faults_file, "fault schedule (JSON; docs/default-job.md)")->group(faults);
  cmd->add_option("--plan-switches", j.plan_switches_file,
                  "plans to switch to at round boundaries (JSON; docs/default-job.md)")
      ->group(faults);
  cmd->add_option("--replan", cli->replan, "after a failure: lightweight | heavy re-plan and pipeline replay, restart (the baseline: "
                  "plan anew and start again from the last checkpoint), or stop (end the job, keeping the last "
                  "checkpoint for --resume)")
      ->capture_default_str()
      ->group(faults);
  cmd->add_option("--replicate-every", d.replicate_every,
                  "single-device stages replicate their state to a neighbour every N rounds (0: never)")
      ->capture_default_str()
      ->group(faults);
  cmd->add_option("--replica-share", d.replica_link_share,
                  "replication may keep at most this share of the time: after a replica that took d, the next waits "
                  "d (1 - share) / share (smaller: fewer replicas, longer replays after a failure)")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 1.0))
      ->group(faults);
  cmd->add_option("--central-every", d.central_every,
                  "every stage also sends its state to the coordinator every N rounds (0: never)")
      ->capture_default_str()
      ->group(faults);
  // On by default: a coordinator that dies loses at most this many rounds.
  d.checkpoint_every = 100;
  cmd->add_option("--checkpoint-every", d.checkpoint_every, "write a checkpoint every N committed rounds (0: never)")
      ->capture_default_str()
      ->group(faults);
  cmd->add_option("--checkpoint", d.checkpoint_path, "checkpoint file (default: run folder checkpoint.bin)")
      ->group(faults);
  cmd->add_option("--resume", j.resume, "continue from a checkpoint file (or a run folder's checkpoint.bin)")
      ->group(faults);
  cmd->add_option("--heartbeat-interval", cli->heartbeat_interval_ms, "ms between heartbeats")
      ->capture_default_str()
      ->group(faults);
  cmd->add_option("--heartbeat-deadline", cli->heartbeat_deadline_ms, "ms of silence after which a device is dead")
      ->capture_default_str()
      ->group(faults);
  cmd->add_option("--straggler-factor", d.straggler.factor,
                  "a device computing this many times slower than the others, relative to the plan, is a straggler")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 1000.0))
      ->group(faults);
  cmd->add_option("--straggler-rounds", d.straggler.rounds,
                  "consecutive rounds before a device is reported a straggler, or reported back")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000))
      ->group(faults);
  auto* adapt = "Adaptive training (docs/runtime.md)";
  cmd->add_option("--adapt", cli->adapt,
                  "re-plan when a device's measured speed drifts from the plan's, and switch plans when the gain "
                  "over the horizon pays for the move")
      ->capture_default_str()
      ->check(CLI::IsMember({"on", "off"}))
      ->group(adapt);
  cmd->add_option("--adapt-threshold", d.adapt.rules.threshold,
                  "relative drift of a device's learned speed from the plan's that counts (0.3: 30 %)")
      ->capture_default_str()
      ->check(CLI::Range(0.01, 100.0))
      ->group(adapt);
  cmd->add_option("--adapt-rounds", d.adapt.rules.rounds, "consecutive committed rounds of drift before a re-plan")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000))
      ->group(adapt);
  cmd->add_option("--adapt-horizon", d.adapt.horizon_rounds,
                  "rounds within which a switch must save more time than moving the state costs")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000000))
      ->group(adapt);
  cmd->callback([cli] {
    const TrainJobOptions& job = cli->job;
    const bool on_nodes = !job.env.empty() || !job.cluster_file.empty() || !job.resume.empty() ||
                          !job.plan_file.empty();
    if (job.strategy == "single" && !on_nodes) return run_single(*cli);
    run_job(*cli);
  });
}

}  // namespace asteroid::apps
