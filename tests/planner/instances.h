// Random planning instances (fixed seeds) and the exhaustive enumerator of
// COST_MODEL.md's search space that the exactness tests compare the search
// against. The enumerator shares only the definitions (allocation, evaluator)
// with the search, never its dynamic program.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "planner/allocation.h"
#include "planner/cost_model.h"
#include "planner/search.h"
#include "planner/types.h"

namespace asteroid::planner::testing {

struct InstanceSpec {
  int devices = 4;
  int layers = 6;
  bool tight_memory = false;
  bool mixed_links = false;
  bool monotone = true;  // false: some profiled times decrease with batch size
  bool identical = false;  // every device the same (speed, memory): many exact ties
};

struct Instance {
  Cluster cluster;
  Profile profile;
};

inline Instance random_instance(uint32_t seed, const InstanceSpec& spec) {
  std::mt19937 rng(seed);
  auto uni = [&](double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); };
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  Instance in;
  in.profile.model = "random-" + std::to_string(seed);
  double total_weight = 0, total_stash = 0;
  for (int l = 0; l < spec.layers; ++l) {
    LayerInfo li;
    li.name = "l" + std::to_string(l);
    li.weight_bytes = std::round(uni(1e5, 2e6));
    li.out_bytes = std::round(uni(1e3, 3e5));
    li.stash_bytes = std::round(uni(1e4, 5e5));
    total_weight += li.weight_bytes;
    total_stash += li.stash_bytes;
    in.profile.layers.push_back(li);
  }
  std::vector<double> layer_cost(spec.layers);
  for (double& c : layer_cost) c = uni(0.2, 3.0);
  for (int d = 0; d < spec.devices; ++d) {
    Device dev;
    dev.id = "d" + std::to_string(d);
    // Loose: everything fits anywhere. Tight: a device holds roughly a
    // third to all of the model's state with a few samples in flight.
    double need = total_weight * 2 + total_stash * 8;
    dev.memory_mb = spec.tight_memory ? std::max(0.5, std::round(need * uni(0.25, 1.1) / 1048576 * 4) / 4)
                                      : 4096;
    in.cluster.devices.push_back(dev);
    DeviceProfile dp;
    dp.batch = {1, 2 + pick(0, 2), 8};
    if (pick(0, 3) == 0) dp.batch = {4};
    double speed = uni(0.5, 4.0);
    double fixed = uni(0.0, 0.6);  // per-call overhead: batching helps
    if (spec.identical) {
      speed = 1;
      fixed = 0.25;
      dev.memory_mb = in.cluster.devices.empty() ? dev.memory_mb : in.cluster.devices.front().memory_mb;
      in.cluster.devices.back().memory_mb = dev.memory_mb;
      dp.batch = {1, 4, 8};
    }
    for (int l = 0; l < spec.layers; ++l) {
      std::vector<double> f, b;
      for (int bs : dp.batch) {
        double t = layer_cost[l] * speed * (fixed + bs) / (1 + fixed) * (spec.identical ? 1.0 : uni(0.9, 1.1));
        f.push_back(t);
        b.push_back(t * (spec.identical ? 2.0 : uni(1.5, 2.5)));
      }
      if (spec.monotone) {
        for (size_t k = 1; k < f.size(); ++k) {
          f[k] = std::max(f[k], f[k - 1]);
          b[k] = std::max(b[k], b[k - 1]);
        }
      } else if (f.size() > 1 && pick(0, 2) == 0) {
        f[1] = f[0] * 0.7;  // a noisy measurement
      }
      dp.fwd_ms.push_back(f);
      dp.bwd_ms.push_back(b);
    }
    in.profile.devices[dev.id] = dp;
  }
  in.cluster.default_bandwidth_mbps = std::round(uni(20, 500));
  if (spec.mixed_links) {
    for (int a = 0; a < spec.devices; ++a)
      for (int b = a + 1; b < spec.devices; ++b)
        if (pick(0, 2) == 0)
          in.cluster.links.push_back({"d" + std::to_string(a), "d" + std::to_string(b), std::round(uni(5, 1000))});
  }
  return in;
}

struct Enumerated {
  bool found = false;
  double round = 0;
  int stages = 0;
  double peak = 0;
  int devices = 0;
  Plan plan;
  long long plans = 0;  // feasible plans seen
};

// Every composition of n into p positive parts.
inline void compositions(int n, int p, std::vector<int>& cur, std::vector<std::vector<int>>& out) {
  if (p == 1) {
    cur.push_back(n);
    out.push_back(cur);
    cur.pop_back();
    return;
  }
  for (int first = 1; first <= n - (p - 1); ++first) {
    cur.push_back(first);
    compositions(n - first, p - 1, cur, out);
    cur.pop_back();
  }
}

// Exhaustive search of COST_MODEL.md's space for one M: every k, every P,
// every device segmentation and every layer partition, allocated by
// Algorithm 1 and timed by evaluate(). Same tie-breaks as the planner
// (T_round, stages, peak memory, fewer devices).
inline Enumerated enumerate_best(const ProfileTables& t, int batch, int microbatches,
                                 Optimizer optimizer) {
  Enumerated best;
  const int b = batch / microbatches;
  const int l = t.layer_count();
  const int k_opt = optimizer_state_factor(optimizer);
  EvalOptions eo;
  eo.optimizer = optimizer;
  for (int k = 1; k <= t.device_count(); ++k) {
    std::vector<int> dev = t.fastest(k);
    for (int p = 1; p <= std::min(k, l); ++p) {
      std::vector<std::vector<int>> groups, parts;
      std::vector<int> cur;
      compositions(k, p, cur, groups);
      compositions(l, p, cur, parts);
      for (const auto& gs : groups) {
        for (const auto& ls : parts) {
          Plan plan;
          plan.strategy = "hpp";
          plan.batch = batch;
          plan.microbatches = microbatches;
          plan.microbatch_size = b;
          int d0 = 0, l0 = 0;
          bool ok = true;
          for (int s = 0; s < p && ok; ++s) {
            std::vector<int> group(dev.begin() + d0, dev.begin() + d0 + gs[s]);
            StageAllocation a = allocate_samples(t, group, l0, l0 + ls[s], b,
                                                 std::min(microbatches, p - s), k_opt);
            if (!a.feasible) {
              ok = false;
              break;
            }
            Stage st;
            st.begin = l0;
            st.end = l0 + ls[s];
            for (size_t x = 0; x < group.size(); ++x) st.devices.push_back({t.id(group[x]), a.samples[x]});
            plan.stages.push_back(st);
            d0 += gs[s];
            l0 += ls[s];
          }
          if (!ok) continue;
          Evaluation ev = evaluate(plan, t, eo);
          if (!ev.feasible) continue;
          ++best.plans;
          bool take = !best.found ||
                      better_plan(ev.round_ms, p, ev.peak_memory_fraction, best.round, best.stages, best.peak);
          if (!take && !better_plan(best.round, best.stages, best.peak, ev.round_ms, p, ev.peak_memory_fraction))
            take = k < best.devices;
          if (take) {
            best.found = true;
            best.round = ev.round_ms;
            best.stages = p;
            best.peak = ev.peak_memory_fraction;
            best.devices = k;
            best.plan = plan;
          }
        }
      }
    }
  }
  return best;
}

}  // namespace asteroid::planner::testing
