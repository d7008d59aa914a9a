// `asteroid train`: single-device training (no actors), or distributed
// training of a plan on running nodes under the job supervisor.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <stdexcept>

#include "apps/commands.h"
#include "apps/distributed_training.h"
#include "compute/single_trainer.h"
#include "planner/json_io.h"

namespace asteroid::apps {
namespace {

struct TrainCli {
  compute::TrainOptions train;
  std::string optimizer = "momentum";
  double lr = 0;  // 0: the optimizer's default
  std::string progress = "auto";
  // Distributed.
  std::string cluster_path, plan_path, profile_path, replan = "lightweight", resume;
  int heartbeat_interval_ms = 100, heartbeat_deadline_ms = 700;
  DistributedOptions distributed;
};

compute::ProgressLine::Mode parse_progress(const std::string& s) {
  if (s == "auto") return compute::ProgressLine::Mode::automatic;
  if (s == "terminal") return compute::ProgressLine::Mode::terminal;
  if (s == "plain") return compute::ProgressLine::Mode::plain;
  if (s == "off") return compute::ProgressLine::Mode::off;
  throw std::invalid_argument("--progress must be auto, terminal, plain or off, got '" + s + "'");
}

void print_result(const compute::TrainOptions& o, const compute::TrainResult& r) {
  std::printf(
      "model %s: %lld rounds (%lld samples) in %.1f s, %.0f samples/s, final loss %.4f, "
      "test accuracy %.2f %% on %lld samples\n",
      o.model.c_str(), (long long)r.rounds, (long long)r.samples, r.train_seconds, r.samples_per_s,
      r.final_loss, 100.0 * r.test_accuracy, (long long)r.test_samples);
}

void prepare(TrainCli& cli) {
  compute::TrainOptions& o = cli.train;
  o.optimizer = compute::default_optimizer_config(compute::parse_optimizer_kind(cli.optimizer));
  if (cli.lr != 0) o.optimizer.lr = cli.lr;
  o.progress = parse_progress(cli.progress);
}

// The whole single-device path: options in, summary printed.
void run_single(TrainCli& cli) {
  prepare(cli);
  print_result(cli.train, compute::run_single_training(cli.train));
}

// A plan on running nodes (--cluster, --plan), or a checkpoint resumed.
void run_distributed(TrainCli& cli) {
  prepare(cli);
  DistributedOptions& d = cli.distributed;
  d.train = cli.train;
  if (cli.cluster_path.empty()) throw std::invalid_argument("--cluster is required to train on nodes");
  d.cluster = planner::load_cluster(cli.cluster_path);
  if (!cli.resume.empty()) {
    namespace fs = std::filesystem;
    d.resume_checkpoint = fs::is_directory(cli.resume) ? (fs::path(cli.resume) / "checkpoint.bin").string() : cli.resume;
    if (d.checkpoint_path.empty()) d.checkpoint_path = d.resume_checkpoint;
  } else {
    if (cli.plan_path.empty()) throw std::invalid_argument("--plan is required with --cluster");
    d.plan = planner::load_plan(cli.plan_path);
  }
  if (!cli.profile_path.empty()) d.profile = planner::load_profile(cli.profile_path);
  if (cli.replan != "lightweight" && cli.replan != "heavy") {
    throw std::invalid_argument("--replan must be lightweight or heavy, got '" + cli.replan + "'");
  }
  d.heavy_replan = cli.replan == "heavy";
  d.heartbeat.interval = std::chrono::milliseconds(cli.heartbeat_interval_ms);
  d.heartbeat.deadline = std::chrono::milliseconds(cli.heartbeat_deadline_ms);
  const DistributedResult r = run_distributed_training(d);
  print_result(d.train, r);
  for (const auto& f : r.failures) {
    std::printf("failure of %s in round %llu: %s re-plan, recovered in %.0f ms\n", f.devices.front().c_str(),
                (unsigned long long)f.round, f.replan.c_str(), f.recovery_ms());
  }
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto cli = std::make_shared<TrainCli>();
  CLI::App* cmd = app.add_subcommand(
      "train", "train a model: alone (--strategy single) or on running nodes (--cluster, --plan)");
  cmd->add_option("--strategy", cli->train.strategy, "single")->capture_default_str();
  cmd->add_option("--model", cli->train.model, "zoo model")->capture_default_str();
  cmd->add_option("--epochs", cli->train.epochs, "epochs over the training set")->capture_default_str();
  cmd->add_option("--batch", cli->train.batch, "mini-batch size (samples per round)")->capture_default_str();
  cmd->add_option("--seed", cli->train.seed, "initial weights and sample order")->capture_default_str();
  cmd->add_option("--rounds", cli->train.rounds, "stop after N rounds (0: all epochs)")->capture_default_str();
  cmd->add_option("--optimizer", cli->optimizer, "sgd | momentum | adam")->capture_default_str();
  cmd->add_option("--lr", cli->lr, "learning rate (default 0.05, adam 0.001)");
  cmd->add_option("--threads", cli->train.threads, "Torch threads")->capture_default_str();
  cmd->add_option("--metrics", cli->train.metrics_path, "JSON Lines file, one line per round");
  cmd->add_option("--summary", cli->train.summary_path, "summary JSON file");
  cmd->add_option("--weights-out", cli->train.weights_out, "final flat weights (binary, see docs/compute.md)");
  cmd->add_option("--data-dir", cli->train.data_dir,
                  "Fashion-MNIST directory (default /usr/share/datasets/fashion-mnist)");
  cmd->add_option("--test-samples", cli->train.test_samples, "evaluate on the first N test samples (0: all)")
      ->capture_default_str();
  cmd->add_option("--progress", cli->progress, "auto | terminal | plain | off")->capture_default_str();
  auto* nodes = "Training on nodes";
  cmd->add_option("--cluster", cli->cluster_path, "cluster.json of running nodes")->group(nodes);
  cmd->add_option("--plan", cli->plan_path, "plan.json to train with")->group(nodes);
  cmd->add_option("--profile", cli->profile_path, "profile.json for re-planning (default: uniform times)")
      ->group(nodes);
  cmd->add_option("--trace", cli->distributed.trace_path, "write a Chrome/Perfetto trace")->group(nodes);
  cmd->add_flag("--grid", cli->distributed.print_grid, "print the step x stage grid of the last round")
      ->group(nodes);
  cmd->add_option("--connect-timeout", cli->distributed.connect_timeout_s, "seconds to reach each device")
      ->capture_default_str()
      ->group(nodes);
  cmd->add_option("--job-id", cli->distributed.job_id, "name of the job on the nodes")->group(nodes);
  auto* faults = "Fault tolerance";
  cmd->add_option("--replan", cli->replan, "lightweight | heavy re-planning after a failure")
      ->capture_default_str()
      ->group(faults);
  cmd->add_option("--replicate-every", cli->distributed.replicate_every,
                  "single-device stages replicate their state to a neighbour every N rounds (0: never)")
      ->capture_default_str()
      ->group(faults);
  cmd->add_option("--central-every", cli->distributed.central_every,
                  "every stage also sends its state to the coordinator every N rounds (0: never)")
      ->capture_default_str()
      ->group(faults);
  cmd->add_option("--checkpoint-every", cli->distributed.checkpoint_every,
                  "write a checkpoint every N committed rounds (0: never)")
      ->capture_default_str()
      ->group(faults);
  cmd->add_option("--checkpoint", cli->distributed.checkpoint_path, "checkpoint file")->group(faults);
  cmd->add_option("--resume", cli->resume, "continue from a checkpoint file (or a run folder's checkpoint.bin)")
      ->group(faults);
  cmd->add_option("--heartbeat-interval", cli->heartbeat_interval_ms, "ms between heartbeats")
      ->capture_default_str()
      ->group(faults);
  cmd->add_option("--heartbeat-deadline", cli->heartbeat_deadline_ms, "ms of silence after which a device is dead")
      ->capture_default_str()
      ->group(faults);
  cmd->callback([cli] {
    if (!cli->cluster_path.empty() || !cli->resume.empty()) return run_distributed(*cli);
    if (cli->train.strategy == "single") return run_single(*cli);
    throw std::invalid_argument("--strategy '" + cli->train.strategy + "' trains on nodes: give --cluster and --plan");
  });
}

}  // namespace asteroid::apps
