// Choosing the plan to train by simulating the search's candidates
// (docs/planner.md "Ranking by simulation"). The closed form of
// COST_MODEL.md never waits; the runtime does: stage p admits K_p
// micro-batches and then waits for gradients that cross every later stage
// and link twice (schedule.h), which the simulator (simulator.h) plays out.
// On the emulated testbed the simulated round is within a few percent of
// the measured one where the closed form is off by up to 45 %; the exact
// search over the closed form stays the generator of candidates.
//
// Candidates, in this order: the search's optimum for the configuration as
// given; for every micro-batch count M the configuration allows, the
// optimum at that M and, for that optimum's P stages, the optimum of at
// most P - 1, P - 2, ..., 1 stages (TrainingConfig::max_stages: shallower
// pipelines wait less); and the best device alone (baselines.h).
// Duplicates and plans that do not fit are left out. The shortest simulated
// round wins; ties (same_round) go to the earlier candidate. With min_gain
// g > 0 a plan on several devices wins over the best one-device candidate
// only when its simulated round is shorter by more than the fraction g: a
// cluster plan has costs a round does not show (replication, exposure to
// failures, shared links), and the simulation's error is of that order.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "planner/search.h"

namespace asteroid::planner {

// model: the strategy's plan by the cost model, unsimulated (COST_MODEL.md);
// simulated: the candidates above, ranked by simulated round.
enum class Ranking { model, simulated };

// "model" | "simulated"; throws std::invalid_argument otherwise.
Ranking parse_ranking(const std::string& name);
const char* ranking_name(Ranking r);

struct Candidate {
  std::string source;  // "optimum", "M=8", "single"
  Plan plan;
  double model_round_ms = 0;      // T_round
  double simulated_round_ms = 0;  // 0 with Ranking::model
};

struct RankedPlan {
  // The chosen plan and its cost-model evaluation. With Ranking::simulated
  // its predicted_round_ms is the simulated round.
  PlanResult result;
  std::vector<Candidate> candidates;  // in the order considered
  size_t chosen = 0;                  // index in candidates
};

// Strategies other than hpp have one candidate (their plan), simulated
// under Ranking::simulated. Throws what make_plan throws.
RankedPlan rank_plans(const ProfileTables& tables, const TrainingConfig& config, Strategy strategy, Ranking ranking,
                      double min_gain = 0);

// The chosen plan's table (report.h explain_plan) followed, when several
// candidates were simulated, by the candidates: source, M, stages, devices,
// model and simulated round, the chosen one marked.
std::string explain_ranked_plan(const RankedPlan& ranked);

// plan.json's "ranking": {"by": "model"|"simulated", "chosen": i,
// "candidates": [{"source", "microbatches", "stages", "devices",
// "model_round_ms", "simulated_round_ms"}...]}.
nlohmann::json ranking_to_json(const RankedPlan& ranked, Ranking ranking);

}  // namespace asteroid::planner
