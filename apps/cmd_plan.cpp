// `asteroid plan`: plan a model on a cluster (COST_MODEL.md) and write
// plan.json (FORMATS.md), with the per-step times, memory and planning time
// as extra fields. --explain prints the plan table of planner/report.h.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>
#include <stdexcept>

#include "apps/commands.h"
#include "planner/json_io.h"
#include "planner/profile_tables.h"
#include "planner/report.h"
#include "planner/search.h"

namespace asteroid::apps {
namespace {

struct PlanCli {
  std::string cluster, profile, out, strategy = "hpp", optimizer = "sgd";
  int batch = 0, microbatches = 1;
  bool search_microbatches = false, explain = false;
};

void run_plan(const PlanCli& cli) {
  using namespace planner;
  Cluster cluster = load_cluster(cli.cluster);
  Profile profile = load_profile(cli.profile);
  check_profile_covers(profile, cluster, cli.profile);
  ProfileTables tables(cluster, profile);
  TrainingConfig config;
  config.batch = cli.batch;
  config.microbatches = cli.microbatches;
  config.search_microbatches = cli.search_microbatches;
  config.optimizer = parse_optimizer(cli.optimizer);
  const Strategy strategy = parse_strategy(cli.strategy);
  PlanResult r = make_plan(tables, config, strategy);
  if (r.plan.stages.empty())
    throw std::runtime_error(std::string("no ") + strategy_name(strategy) + " plan: " + r.why);
  if (cli.explain) std::fputs(explain_plan(r.plan, r.evaluation, r.planning_ms).c_str(), stdout);
  if (!r.feasible)
    throw std::runtime_error(std::string("the ") + strategy_name(strategy) +
                             " plan does not fit in memory: " + r.why);
  save_plan(r.plan, cli.out, planner::evaluation_to_json(r.evaluation, config.optimizer, r.planning_ms));
  std::printf("%s plan: %zu stage(s), M = %d, T_round %.3f ms, %.2f samples/s, planned in %.1f ms -> %s\n",
              strategy_name(strategy), r.plan.stages.size(), r.plan.microbatches, r.evaluation.round_ms,
              r.evaluation.throughput * 1e3, r.planning_ms, cli.out.c_str());
}

}  // namespace

void add_plan_command(CLI::App& app) {
  auto cli = std::make_shared<PlanCli>();
  CLI::App* cmd = app.add_subcommand("plan", "plan a model on a cluster (hybrid pipeline parallelism)");
  cmd->add_option("--cluster", cli->cluster, "cluster.json")->required();
  cmd->add_option("--profile", cli->profile, "profile.json")->required();
  cmd->add_option("--batch", cli->batch, "mini-batch size")->required()->check(CLI::PositiveNumber);
  cmd->add_option("--microbatches", cli->microbatches, "micro-batches per mini-batch (M)")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--search-microbatches", cli->search_microbatches,
                "also search M over the divisors of the batch");
  cmd->add_option("--strategy", cli->strategy, "hpp (default), dp or pp");
  cmd->add_option("--optimizer", cli->optimizer, "sgd (default), momentum or adam");
  cmd->add_option("--out", cli->out, "plan.json to write")->required();
  cmd->add_flag("--explain", cli->explain, "print the plan table");
  cmd->callback([cli] { run_plan(*cli); });
}

}  // namespace asteroid::apps
