// Planning strategies over the search space of COST_MODEL.md.
//
// `hpp` returns the true optimum of that space: the minimum T_round over the
// chosen set (the k fastest devices, k = 1..N), the number of stages, the
// contiguous device segments and the layer boundaries (and M, when searched),
// ties broken by fewer stages, then smaller peak memory fraction, then fewer
// devices, then smaller M. It is a dynamic program over pipeline suffixes that
// keeps, per cell, the Pareto set of exactly the quantities the objective
// needs, pruned by a branch-and-bound incumbent (docs/planner.md explains why
// that is exact). `dp` and `pp` are the baselines of COST_MODEL.md.
#pragma once

#include <string>

#include "planner/cost_model.h"
#include "planner/profile_tables.h"
#include "planner/types.h"

namespace asteroid::planner {

enum class Strategy { hpp, dp, pp };

// "hpp" | "dp" | "pp"; throws std::invalid_argument otherwise.
Strategy parse_strategy(const std::string& name);
const char* strategy_name(Strategy s);
// "sgd" | "momentum" | "adam"; throws std::invalid_argument otherwise.
Optimizer parse_optimizer(const std::string& name);
const char* optimizer_name(Optimizer o);

struct TrainingConfig {
  int batch = 0;                     // mini-batch size (BATCH)
  int microbatches = 1;              // M (ignored when searched)
  bool search_microbatches = false;  // try every divisor of batch as M
  Optimizer optimizer = Optimizer::sgd;
};

struct SearchStats {
  long long stage_allocations = 0;  // greedy splits computed
  long long entries = 0;            // Pareto entries created
  long long complete_plans = 0;     // whole plans met by the search
  int chosen_sets_skipped = 0;      // k pruned by the lower bound
  double seed_ms = 0;               // one-value DP seeding the incumbent
  double exact_ms = 0;              // exact minimum of T_round
  double tie_break_ms = 0;          // exact tie-breaks among the optima
};

struct PlanResult {
  bool feasible = false;
  std::string why;         // when no feasible plan exists
  Plan plan;               // the best plan (empty stages when infeasible)
  Evaluation evaluation;   // of `plan`
  double planning_ms = 0;  // wall time of the search
  SearchStats stats;
};

// REQUIRES: config.batch >= 1 and (unless searched) divisible by
// config.microbatches; throws std::invalid_argument otherwise.
PlanResult plan_hpp(const ProfileTables& tables, const TrainingConfig& config);
PlanResult plan_dp(const ProfileTables& tables, const TrainingConfig& config);
PlanResult plan_pp(const ProfileTables& tables, const TrainingConfig& config);
PlanResult make_plan(const ProfileTables& tables, const TrainingConfig& config, Strategy strategy);

// Plans equal in T_round (relative tolerance 1e-9) are ordered by fewer
// stages, then smaller peak memory fraction. True when a is better than b.
bool better_plan(double round_a, int stages_a, double peak_a, double round_b, int stages_b,
                 double peak_b);
// |a - b| <= 1e-9 max(|a|, |b|) (infinities: only equal to themselves).
bool same_round(double a, double b);

}  // namespace asteroid::planner
