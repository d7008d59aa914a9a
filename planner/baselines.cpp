#include "planner/baselines.h"

#include <chrono>

namespace asteroid::planner {
namespace {

double elapsed_ms(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

PlanResult plan_dp(const ProfileTables& t, const TrainingConfig& config) {
  const auto start = std::chrono::steady_clock::now();
  const int n = t.device_count();
  PlanResult best;
  bool have = false;
  for (int m : microbatch_choices(config)) {
    const int b = config.batch / m;
    PlanResult r;
    if (n > b) {
      r.why = "dp gives every device at least one sample: " + std::to_string(n) +
              " devices but micro-batches of " + std::to_string(b);
    } else {
      Plan& p = r.plan;
      p.strategy = "dp";
      p.batch = config.batch;
      p.microbatches = m;
      p.microbatch_size = b;
      p.codec_block = config.codec_block;
      Stage st;
      st.begin = 0;
      st.end = t.layer_count();
      int x = 0;
      for (int d : t.sorted_order()) {
        st.devices.push_back({t.id(d), b / n + (x < b % n ? 1 : 0)});
        ++x;
      }
      p.stages.push_back(std::move(st));
      EvalOptions eo;
      eo.optimizer = config.optimizer;
      choose_codecs(p, t, config.wire, eo);
      r.evaluation = evaluate(p, t, eo);
      p.predicted_round_ms = r.evaluation.round_ms;
      r.feasible = r.evaluation.feasible;
      r.why = r.evaluation.infeasible_reason;
    }
    bool take = !have;
    if (have && r.feasible != best.feasible) take = r.feasible;
    else if (have && r.feasible && best.feasible)
      take = better_plan(r.evaluation.round_ms, 1, r.evaluation.peak_memory_fraction,
                         best.evaluation.round_ms, 1, best.evaluation.peak_memory_fraction);
    if (take) {
      best = std::move(r);
      have = true;
    }
  }
  best.planning_ms = elapsed_ms(start);
  return best;
}

PlanResult plan_single(const ProfileTables& t, const TrainingConfig& config) {
  const auto start = std::chrono::steady_clock::now();
  PlanResult best;
  int best_device = -1;
  for (int d = 0; d < t.device_count(); ++d) {
    Cluster alone = t.cluster();
    alone.devices = {alone.devices[static_cast<size_t>(d)]};
    alone.links.clear();
    const ProfileTables tables(alone, t.profile());
    TrainingConfig c = config;
    c.search_microbatches = true;  // the device at its best M, whatever M the others use
    PlanResult r = plan_hpp(tables, c);
    if (!r.feasible) continue;
    if (best_device < 0 || r.evaluation.round_ms < best.evaluation.round_ms) {
      best = std::move(r);
      best_device = d;
    }
  }
  if (best_device < 0) {
    best = PlanResult{};
    best.why = "the model does not fit on any single device";
  } else {
    best.plan.strategy = "single";
    best.plan.idle_devices.clear();
    for (int d : t.sorted_order())
      if (d != best_device) best.plan.idle_devices.push_back(t.id(d));
  }
  best.planning_ms = elapsed_ms(start);
  return best;
}

}  // namespace asteroid::planner
