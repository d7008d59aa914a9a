// `asteroid plan`: plan a model on a cluster (COST_MODEL.md) and write
// plan.json (FORMATS.md), with the per-step times, memory and planning time
// as extra fields. --explain prints the plan table of planner/report.h.
// --wire lets the search compress what crosses links where the profile has
// the codecs' speeds (docs/planner.md "Compressed wire"); the default,
// exact, plans as COST_MODEL.md says. --rank simulated chooses among the
// search's candidates by simulated round, as `asteroid train` does by
// default (planner/rank.h); the default, model, is COST_MODEL.md's optimum.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <memory>
#include <stdexcept>

#include "apps/commands.h"
#include "planner/json_io.h"
#include "planner/profile_tables.h"
#include "planner/rank.h"
#include "planner/report.h"
#include "planner/search.h"

namespace asteroid::apps {
namespace {

struct PlanCli {
  std::string cluster, profile, out, strategy = "hpp", optimizer = "sgd", wire = "exact", rank = "model";
  int batch = 0, microbatches = 1;
  uint32_t codec_block = wire_codec::kDefaultBlock;
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
  config.wire = parse_wire_policy(cli.wire);
  config.codec_block = cli.codec_block;
  const Strategy strategy = parse_strategy(cli.strategy);
  const Ranking ranking = parse_ranking(cli.rank);
  const RankedPlan ranked = rank_plans(tables, config, strategy, ranking);
  const PlanResult& r = ranked.result;
  if (r.plan.stages.empty())
    throw std::runtime_error(std::string("no ") + strategy_name(strategy) + " plan: " + r.why);
  if (cli.explain) std::fputs(explain_ranked_plan(ranked).c_str(), stdout);
  if (!r.feasible)
    throw std::runtime_error(std::string("the ") + strategy_name(strategy) +
                             " plan does not fit in memory: " + r.why);
  nlohmann::json extra = planner::evaluation_to_json(r.evaluation, config.optimizer, r.planning_ms);
  if (ranking == Ranking::simulated) extra["ranking"] = ranking_to_json(ranked, ranking);
  save_plan(r.plan, cli.out, extra);
  std::printf("%s plan: %zu stage(s), M = %d, T_round %.3f ms, %.2f samples/s, planned in %.1f ms -> %s\n",
              strategy_name(strategy), r.plan.stages.size(), r.plan.microbatches, r.evaluation.round_ms,
              r.evaluation.throughput * 1e3, r.planning_ms, cli.out.c_str());
  if (ranking == Ranking::simulated)
    std::printf("simulated round %.3f ms (%.2f samples/s), chosen among %zu candidate(s)\n", r.plan.predicted_round_ms,
                r.plan.batch * 1e3 / r.plan.predicted_round_ms, ranked.candidates.size());
  if (config.wire != WirePolicy::exact) {
    std::string wire;
    for (size_t s = 0; s < r.plan.stages.size(); ++s) {
      const Stage& st = r.plan.stages[s];
      if (st.devices.size() > 1) wire += std::string(wire.empty() ? "" : ", ") + "all-reduce " +
                                         std::to_string(s) + " " + wire_codec::codec_name(st.allreduce);
      if (s + 1 < r.plan.stages.size())
        wire += std::string(wire.empty() ? "" : ", ") + std::to_string(s) + "->" + std::to_string(s + 1) + " " +
                wire_codec::codec_name(st.to_next);
    }
    std::printf("wire (%s): %s\n", wire_policy_name(config.wire), wire.empty() ? "nothing crosses a link" : wire.c_str());
  }
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
  cmd->add_option("--strategy", cli->strategy, "hpp (default), dp, pp or single (the best device alone)");
  cmd->add_option("--rank", cli->rank,
                  "model (default: the cost model's optimum, COST_MODEL.md) or simulated (the search's candidates "
                  "ranked by simulated round, as asteroid train does)")
      ->check(CLI::IsMember({"model", "simulated"}));
  cmd->add_option("--optimizer", cli->optimizer, "sgd (default), momentum or adam");
  cmd->add_option("--wire", cli->wire,
                  "codecs the plan may put on links: exact (default: fp32 only), fp16 (+bf16), int8, int4 or auto; "
                  "a lossy codec only where the profile has its speeds")
      ->check(CLI::IsMember({"exact", "fp16", "int8", "int4", "auto"}));
  cmd->add_option("--codec-block", cli->codec_block, "values per scale of int8/int4 (default 64)")
      ->check(CLI::Range(1u, wire_codec::kMaxBlock));
  cmd->add_option("--out", cli->out, "plan.json to write")->required();
  cmd->add_flag("--explain", cli->explain, "print the plan table");
  cmd->callback([cli] { run_plan(*cli); });
}

}  // namespace asteroid::apps
