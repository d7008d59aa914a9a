// `asteroid simulate`: run a plan through the discrete-event simulator of
// the runtime's rules (planner/simulator.h) and print the simulated round
// next to the cost model's, the bubble fraction and the step x stage grid.
// Transfers and all-reduces use the plan's codecs (plan.json
// "to_next_codec", "allreduce_codec", "codec_block").
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <stdexcept>

#include "apps/commands.h"
#include "planner/allocation.h"
#include "planner/json_io.h"
#include "planner/profile_tables.h"
#include "planner/report.h"
#include "planner/search.h"
#include "planner/simulator.h"

namespace asteroid::apps {
namespace {

struct SimulateCli {
  std::string cluster, profile, plan, optimizer, trace;  // optimizer: empty = the plan file's
  int microbatches = 0;
};

// The same stages with M micro-batches: each group re-splits the new
// micro-batch size by Algorithm 1.
planner::Plan with_microbatches(planner::Plan plan, int m, const planner::ProfileTables& t,
                                OptimizerKind opt) {
  if (plan.batch % m != 0)
    throw std::runtime_error("--microbatches " + std::to_string(m) + " does not divide the plan's batch " +
                             std::to_string(plan.batch));
  plan.microbatches = m;
  plan.microbatch_size = plan.batch / m;
  const int p = static_cast<int>(plan.stages.size());
  for (int s = 0; s < p; ++s) {
    planner::Stage& st = plan.stages[s];
    std::vector<int> group;
    for (const planner::StageDevice& d : st.devices) group.push_back(t.index(d.id));
    std::sort(group.begin(), group.end(), [&](int a, int b) { return t.rank(a) < t.rank(b); });
    planner::StageAllocation a = planner::allocate_samples(t, group, st.begin, st.end, plan.microbatch_size,
                                                           std::min(m, p - s), planner::optimizer_state_factor(opt));
    if (!a.feasible)
      throw std::runtime_error("with " + std::to_string(m) + " micro-batches, stage " + std::to_string(s) +
                               " cannot split its samples: " + a.why);
    st.devices.clear();
    for (size_t i = 0; i < group.size(); ++i) st.devices.push_back({t.id(group[i]), a.samples[i]});
  }
  return plan;
}

void run_simulate(const SimulateCli& cli) {
  using namespace planner;
  Cluster cluster = load_cluster(cli.cluster);
  Profile profile = load_profile(cli.profile);
  check_profile_covers(profile, cluster, cli.profile);
  Plan plan = load_plan(cli.plan, cluster, profile);
  ProfileTables tables(cluster, profile);
  EvalOptions eo;
  // The optimizer the plan was made for (plan.json "optimizer"), else SGD.
  std::string optimizer = cli.optimizer;
  if (optimizer.empty()) {
    const nlohmann::json file = read_json_file(cli.plan);
    optimizer = file.contains("optimizer") && file["optimizer"].is_string() ? file["optimizer"].get<std::string>() : "sgd";
  }
  eo.optimizer = parse_optimizer(optimizer);
  if (cli.microbatches > 0 && cli.microbatches != plan.microbatches)
    plan = with_microbatches(plan, cli.microbatches, tables, eo.optimizer);
  Evaluation ev = evaluate(plan, tables, eo);
  Simulation sim = simulate(plan, tables, eo);
  std::fputs(explain_simulation(plan, ev, sim).c_str(), stdout);
  if (!ev.feasible) spdlog::warn("the plan does not fit in memory: {}", ev.infeasible_reason);
  for (const std::string& w : ev.warnings) spdlog::warn("{}", w);
  if (!cli.trace.empty()) {
    std::ofstream out(cli.trace);
    out << chrome_trace(plan, sim) << "\n";
    if (!out) throw std::runtime_error(cli.trace + ": cannot write the trace");
    std::printf("trace (chrome://tracing, ui.perfetto.dev) -> %s\n", cli.trace.c_str());
  }
}

}  // namespace

void add_simulate_command(CLI::App& app) {
  auto cli = std::make_shared<SimulateCli>();
  CLI::App* cmd = app.add_subcommand("simulate", "simulate a plan's round under the runtime's 1F1B rules");
  cmd->add_option("--cluster", cli->cluster, "cluster.json")->required();
  cmd->add_option("--profile", cli->profile, "profile.json")->required();
  cmd->add_option("--plan", cli->plan, "plan.json")->required();
  cmd->add_option("--microbatches", cli->microbatches,
                  "simulate with this M instead of the plan's (groups re-split the samples)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--optimizer", cli->optimizer, "sgd, momentum or adam: its memory and its profiled update times (default: the plan file's, else sgd)");
  cmd->add_option("--trace", cli->trace, "also write a Chrome/Perfetto trace here");
  cmd->callback([cli] { run_simulate(*cli); });
}

}  // namespace asteroid::apps
