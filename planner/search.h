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
//
// With a wire policy other than `exact`, the codec of every boundary and of
// every group's all-reduce is part of the space (docs/planner.md
// "Compressed wire"): the search stays exact over it (T_round and the ties
// above), and the plan it returns gets the least lossy codecs that keep its
// T_round (choose_codecs). With `exact`, or a profile without codec speeds,
// the plans are COST_MODEL.md's, unchanged.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "planner/cost_model.h"
#include "planner/profile_tables.h"
#include "planner/types.h"

namespace asteroid::planner {

// hpp: the exact search; dp, pp and single: the baselines (baselines.h).
enum class Strategy { hpp, dp, pp, single };

// "hpp" | "dp" | "pp" | "single"; throws std::invalid_argument otherwise.
Strategy parse_strategy(const std::string& name);
const char* strategy_name(Strategy s);

// Which wire codecs a plan may use (`--wire`), nested: exact {fp32}; fp16
// {fp32, fp16, bf16}; int8 adds int8; int4 adds int4; auto_ every codec
// (today the same set as int4). A codec other than fp32 is used on a
// boundary only where every device of both groups has its speed in the
// profile, on an all-reduce only where every member has it.
enum class WirePolicy { exact, fp16, int8, int4, auto_ };

// "exact" | "fp16" | "int8" | "int4" | "auto"; throws std::invalid_argument otherwise.
WirePolicy parse_wire_policy(const std::string& name);
const char* wire_policy_name(WirePolicy p);
bool wire_allows(WirePolicy p, Codec c);
// The codecs the policy allows, in enum order (fp32 first).
std::vector<Codec> wire_codecs(WirePolicy p);

// How lossy a plan's wire is, for the last tie-break: fewer int4 choices,
// then fewer int8, then fewer bf16, then fewer fp16 (a choice is a boundary
// or the all-reduce of a group of two or more). As one additive number:
// the sum over choices of codec_lossiness (0, 1, 2^10, 2^20, 2^30 in enum
// order), exact up to 1023 choices of one kind.
int64_t codec_lossiness(Codec c);
int64_t wire_lossiness(const Plan& plan);

struct TrainingConfig {
  int batch = 0;                     // mini-batch size (BATCH)
  int microbatches = 1;              // M (ignored when searched)
  bool search_microbatches = false;  // try every divisor of batch as M
  OptimizerKind optimizer = OptimizerKind::sgd;
  WirePolicy wire = WirePolicy::exact;                // codecs the plan may use
  uint32_t codec_block = wire_codec::kDefaultBlock;  // Plan::codec_block of the plans made
  // hpp and pp: plans of at most this many stages (0: no limit). Still the
  // exact optimum within the limit (a slower search: no seeding).
  int max_stages = 0;
};

struct SearchStats {
  long long stage_allocations = 0;  // greedy splits computed
  long long entries = 0;            // Pareto entries created
  long long complete_plans = 0;     // whole plans met by the search
  int chosen_sets_skipped = 0;      // k pruned by the lower bound
  double seed_ms = 0;               // one-value DP seeding the incumbent
  double exact_ms = 0;              // exact minimum of T_round
  double tie_break_ms = 0;          // exact tie-breaks among the optima
  double codec_tie_break_ms = 0;    // the least lossy codecs for the plan found (choose_codecs)
};

struct PlanResult {
  bool feasible = false;
  std::string why;         // when no feasible plan exists
  Plan plan;               // the best plan (empty stages when infeasible)
  Evaluation evaluation;   // of `plan`
  double planning_ms = 0;  // wall time of the search
  SearchStats stats;
};

// The micro-batch counts a search tries: every divisor of the batch when
// searched, else config.microbatches. Throws std::invalid_argument naming
// a bad batch, M or codec block.
std::vector<int> microbatch_choices(const TrainingConfig& config);

// REQUIRES: config.batch >= 1 and (unless searched) divisible by
// config.microbatches; throws std::invalid_argument otherwise.
PlanResult plan_hpp(const ProfileTables& tables, const TrainingConfig& config);
PlanResult plan_pp(const ProfileTables& tables, const TrainingConfig& config);
PlanResult make_plan(const ProfileTables& tables, const TrainingConfig& config, Strategy strategy);

// Codecs for a plan whose stages and samples are fixed (the dp baseline,
// the lightweight re-plan, and the last step of hpp and pp): the assignment
// of usable codecs to its boundaries and all-reduces with the smallest
// T_round, and among those (equal within same_round) the least lossy
// (wire_lossiness). Exact for these stages: a small dynamic program over
// the boundaries keeping the Pareto set of (v, a, lossiness). Sizes use
// plan.codec_block.
void choose_codecs(Plan& plan, const ProfileTables& tables, WirePolicy policy, const EvalOptions& options = {});

// True when codec c may carry data between (or among) these devices under
// the policy: allowed, and fp32 or profiled on every one of them.
bool codec_usable(const ProfileTables& tables, WirePolicy policy, Codec c, const std::vector<int>& devices);

// Plans equal in T_round (relative tolerance 1e-9) are ordered by fewer
// stages, then smaller peak memory fraction. True when a is better than b.
bool better_plan(double round_a, int stages_a, double peak_a, double round_b, int stages_b,
                 double peak_b);
// |a - b| <= 1e-9 max(|a|, |b|) (infinities: only equal to themselves).
bool same_round(double a, double b);

}  // namespace asteroid::planner
