#include "planner/rank.h"

#include <chrono>
#include <cstdio>

#include "messages/enum_names.h"
#include "planner/baselines.h"
#include "planner/report.h"
#include "planner/simulator.h"

namespace asteroid::planner {
namespace {

constexpr Named<Ranking> kRankingNames[] = {{Ranking::model, "model"}, {Ranking::simulated, "simulated"}};

bool same_stages(const Plan& a, const Plan& b) {
  if (a.microbatches != b.microbatches || a.stages.size() != b.stages.size()) return false;
  for (size_t s = 0; s < a.stages.size(); ++s) {
    const Stage& x = a.stages[s];
    const Stage& y = b.stages[s];
    if (x.begin != y.begin || x.end != y.end || x.to_next != y.to_next || x.allreduce != y.allreduce ||
        x.devices.size() != y.devices.size())
      return false;
    for (size_t d = 0; d < x.devices.size(); ++d)
      if (x.devices[d].id != y.devices[d].id || x.devices[d].samples != y.devices[d].samples) return false;
  }
  return true;
}

size_t device_count(const Plan& plan) {
  size_t n = 0;
  for (const auto& s : plan.stages) n += s.devices.size();
  return n;
}

}  // namespace

Ranking parse_ranking(const std::string& name) { return parse_named(kRankingNames, name, "ranking"); }
const char* ranking_name(Ranking r) { return name_of(kRankingNames, r); }

RankedPlan rank_plans(const ProfileTables& t, const TrainingConfig& config, Strategy strategy, Ranking ranking,
                      double min_gain) {
  const auto start = std::chrono::steady_clock::now();
  RankedPlan ranked;
  std::vector<PlanResult> results;
  auto consider = [&](std::string source, PlanResult r) {
    if (!r.feasible || r.plan.stages.empty()) return;
    for (const auto& c : ranked.candidates)
      if (same_stages(c.plan, r.plan)) return;
    ranked.candidates.push_back({std::move(source), r.plan, r.evaluation.round_ms, 0});
    results.push_back(std::move(r));
  };
  PlanResult first = make_plan(t, config, strategy);
  if (ranking == Ranking::model || !first.feasible) {
    ranked.result = std::move(first);
    if (ranked.result.feasible)
      ranked.candidates.push_back({"optimum", ranked.result.plan, ranked.result.evaluation.round_ms, 0});
    return ranked;
  }
  consider("optimum", std::move(first));
  if (strategy == Strategy::hpp) {
    TrainingConfig fixed = config;
    fixed.search_microbatches = false;
    for (int m : microbatch_choices(config)) {
      fixed.microbatches = m;
      fixed.max_stages = 0;
      PlanResult best = plan_hpp(t, fixed);
      const int stages = static_cast<int>(best.plan.stages.size());
      consider("M=" + std::to_string(m), std::move(best));
      // Shallower pipelines wait less for their gradients.
      for (int limit = stages - 1; limit >= 1; --limit) {
        fixed.max_stages = limit;
        consider("M=" + std::to_string(m) + " P<=" + std::to_string(limit), plan_hpp(t, fixed));
      }
    }
    consider("single", plan_single(t, config));
  }
  EvalOptions eo;
  eo.optimizer = config.optimizer;
  for (size_t i = 0; i < ranked.candidates.size(); ++i) {
    Candidate& c = ranked.candidates[i];
    c.simulated_round_ms = simulate(c.plan, t, eo).round_ms;
    const Candidate& best = ranked.candidates[ranked.chosen];
    if (c.simulated_round_ms < best.simulated_round_ms && !same_round(c.simulated_round_ms, best.simulated_round_ms))
      ranked.chosen = i;
  }
  // The best device alone keeps the job unless a cluster plan beats it by min_gain.
  int alone = -1;
  for (size_t i = 0; i < ranked.candidates.size(); ++i) {
    const Candidate& c = ranked.candidates[i];
    if (device_count(c.plan) == 1 &&
        (alone < 0 || c.simulated_round_ms < ranked.candidates[static_cast<size_t>(alone)].simulated_round_ms))
      alone = static_cast<int>(i);
  }
  if (alone >= 0 && device_count(ranked.candidates[ranked.chosen].plan) > 1 &&
      ranked.candidates[ranked.chosen].simulated_round_ms * (1 + min_gain) >=
          ranked.candidates[static_cast<size_t>(alone)].simulated_round_ms)
    ranked.chosen = static_cast<size_t>(alone);
  ranked.result = std::move(results[ranked.chosen]);
  ranked.result.plan.predicted_round_ms = ranked.candidates[ranked.chosen].simulated_round_ms;
  ranked.result.planning_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return ranked;
}

std::string explain_ranked_plan(const RankedPlan& ranked) {
  const PlanResult& r = ranked.result;
  std::string out = explain_plan(r.plan, r.evaluation, r.planning_ms);
  if (ranked.candidates.size() < 2) return out;
  out += "\nranked by simulated round (the runtime's 1F1B rule; docs/planner.md):\n";
  out += "candidate     M    stages  devices  model ms  simulated ms\n";
  char line[160];
  for (size_t i = 0; i < ranked.candidates.size(); ++i) {
    const Candidate& c = ranked.candidates[i];
    std::snprintf(line, sizeof line, "%-12s  %-3d  %-6zu  %-7zu  %8.1f  %12.1f%s\n", c.source.c_str(),
                  c.plan.microbatches, c.plan.stages.size(), device_count(c.plan), c.model_round_ms,
                  c.simulated_round_ms, i == ranked.chosen ? "  <- chosen" : "");
    out += line;
  }
  return out;
}

nlohmann::json ranking_to_json(const RankedPlan& ranked, Ranking ranking) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& c : ranked.candidates)
    list.push_back({{"source", c.source},
                    {"microbatches", c.plan.microbatches},
                    {"stages", c.plan.stages.size()},
                    {"devices", device_count(c.plan)},
                    {"model_round_ms", c.model_round_ms},
                    {"simulated_round_ms", c.simulated_round_ms}});
  return {{"by", ranking_name(ranking)}, {"chosen", ranked.chosen}, {"candidates", list}};
}

}  // namespace asteroid::planner
