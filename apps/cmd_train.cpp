// `asteroid train`: single-device training now; the distributed strategies
// plug in next to run_single() with the same options.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>
#include <stdexcept>

#include "apps/commands.h"
#include "compute/single_trainer.h"

namespace asteroid::apps {
namespace {

struct TrainCli {
  compute::TrainOptions train;
  std::string optimizer = "momentum";
  double lr = 0;  // 0: the optimizer's default
  std::string progress = "auto";
};

compute::ProgressLine::Mode parse_progress(const std::string& s) {
  if (s == "auto") return compute::ProgressLine::Mode::automatic;
  if (s == "terminal") return compute::ProgressLine::Mode::terminal;
  if (s == "plain") return compute::ProgressLine::Mode::plain;
  if (s == "off") return compute::ProgressLine::Mode::off;
  throw std::invalid_argument("--progress must be auto, terminal, plain or off, got '" + s + "'");
}

// The whole single-device path: options in, summary printed.
void run_single(TrainCli& cli) {
  compute::TrainOptions& o = cli.train;
  o.optimizer = compute::default_optimizer_config(compute::parse_optimizer_kind(cli.optimizer));
  if (cli.lr != 0) o.optimizer.lr = cli.lr;
  o.progress = parse_progress(cli.progress);
  const compute::TrainResult r = compute::run_single_training(o);
  std::printf(
      "model %s: %lld rounds (%lld samples) in %.1f s, %.0f samples/s, final loss %.4f, "
      "test accuracy %.2f %% on %lld samples\n",
      o.model.c_str(), (long long)r.rounds, (long long)r.samples, r.train_seconds, r.samples_per_s,
      r.final_loss, 100.0 * r.test_accuracy, (long long)r.test_samples);
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto cli = std::make_shared<TrainCli>();
  CLI::App* cmd = app.add_subcommand("train", "train a model (--strategy single: one device, no actors)");
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
  cmd->callback([cli] {
    if (cli->train.strategy == "single") return run_single(*cli);
    throw std::invalid_argument("--strategy '" + cli->train.strategy +
                                "' is not implemented yet (available: single)");
  });
}

}  // namespace asteroid::apps
