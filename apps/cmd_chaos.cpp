// `asteroid chaos`: a seeded chaos campaign on an emulated cluster
// (apps/chaos.h; docs/runtime.md "Chaos campaigns"). Exit 0 when the verdict
// passes, 1 when it does not (the report says why).
#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>

#include "apps/chaos.h"
#include "apps/commands.h"

namespace asteroid::apps {

void add_chaos_command(CLI::App& app) {
  auto o = std::make_shared<ChaosOptions>();
  o->out = "chaos";
  CLI::App* cmd = app.add_subcommand(
      "chaos", "A seeded chaos campaign: train under random faults and judge it against a fault-free run");
  cmd->add_option("--faults", o->draw.faults, "faults to inject (restores are not counted)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--seed", o->draw.seed, "seed of the schedule and of the training")->capture_default_str();
  cmd->add_option("--spacing", o->draw.spacing, "rounds between two faults")
      ->capture_default_str()
      ->check(CLI::Range(2, 100000));
  cmd->add_option("--first-round", o->draw.first_round, "round of the first fault")->capture_default_str();
  cmd->add_option("--env", o->env, "emulated preset (docs/testbed.md)")->capture_default_str();
  cmd->add_option("--bandwidth", o->bandwidth_mbps, "link bandwidth in Mbit/s")->capture_default_str();
  cmd->add_option("--model", o->model, "zoo model")->capture_default_str();
  cmd->add_option("--batch", o->batch, "mini-batch size")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--microbatches", o->microbatches, "micro-batches per round")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--tolerance", o->tolerance, "largest relative difference of a loss or the final weights")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--out", o->out, "the campaign's folder")->capture_default_str();
  cmd->add_option("--run-timeout", o->run_timeout_s, "seconds each of the two runs may take")->capture_default_str();
  cmd->add_option("--train-arg", o->train_args, "one more `asteroid train` argument for both runs (repeatable)");
  cmd->callback([o] {
    const ChaosReport report = run_chaos(*o);
    std::printf("%s\nreport: %s/report.md\n", report.markdown.c_str(), o->out.c_str());
    if (!report.verdict.passed) std::exit(1);
  });
}

}  // namespace asteroid::apps
