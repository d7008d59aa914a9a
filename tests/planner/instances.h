// Random planning instances (fixed seeds), their tables and training
// configs, and the exhaustive enumerator of COST_MODEL.md's search space that the exactness tests compare the search
// against. The enumerator shares only the definitions (allocation, evaluator)
// with the search, never its dynamic program.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
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

// The tables of random_instance(seed, spec).
inline ProfileTables random_tables(uint32_t seed, const InstanceSpec& spec) {
  const Instance in = random_instance(seed, spec);
  return ProfileTables(in.cluster, in.profile);
}

// M micro-batches of microbatch_size samples each (the batch is their product).
inline TrainingConfig microbatched(int microbatches, int microbatch_size) {
  TrainingConfig cfg;
  cfg.microbatches = microbatches;
  cfg.batch = microbatches * microbatch_size;
  return cfg;
}

// The best plan an exhaustive search has met so far.
struct Enumerated {
  bool found = false;
  double round = 0;
  int stages = 0;
  double peak = 0;
  int devices = 0;
  Plan plan;
  long long plans = 0;  // feasible plans seen

  // Makes `with` (its T_round, stages, peak memory fraction, devices) the best so far.
  void take(double with_round, int with_stages, double with_peak, int with_devices, const Plan& with) {
    found = true;
    round = with_round;
    stages = with_stages;
    peak = with_peak;
    devices = with_devices;
    plan = with;
  }
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

// Every structure of COST_MODEL.md's space for one M: every k (the k
// fastest devices), every P (at most max_stages when > 0), every device
// segmentation and every layer partition, samples allocated by Algorithm 1;
// calls visit(k, P, plan) for each whose every stage allocation is feasible.
template <typename Visit>
void enumerate_structures(const ProfileTables& t, int batch, int microbatches, OptimizerKind optimizer,
                          int max_stages, uint32_t codec_block, Visit visit) {
  const int b = batch / microbatches;
  const int l = t.layer_count();
  const int k_opt = optimizer_state_factor(optimizer);
  for (int k = 1; k <= t.device_count(); ++k) {
    std::vector<int> dev = t.fastest(k);
    for (int p = 1; p <= std::min(k, l) && (max_stages <= 0 || p <= max_stages); ++p) {
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
          plan.codec_block = codec_block;
          int d0 = 0, l0 = 0;
          bool ok = true;
          for (int s = 0; s < p && ok; ++s) {
            std::vector<int> group(dev.begin() + d0, dev.begin() + d0 + gs[s]);
            StageAllocation a = allocate_samples(t, group, l0, l0 + ls[s], b, std::min(microbatches, p - s), k_opt);
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
          if (ok) visit(k, p, plan);
        }
      }
    }
  }
}

// Exhaustive search of COST_MODEL.md's space for one M: every structure
// (enumerate_structures) timed by evaluate(). Same tie-breaks as the planner
// (T_round, stages, peak memory, fewer devices). max_stages > 0: only plans
// of at most that many stages.
inline Enumerated enumerate_best(const ProfileTables& t, int batch, int microbatches,
                                 OptimizerKind optimizer, int max_stages = 0) {
  Enumerated best;
  EvalOptions eo;
  eo.optimizer = optimizer;
  auto consider = [&](int k, int p, const Plan& plan) {
    const Evaluation ev = evaluate(plan, t, eo);
    if (!ev.feasible) return;
    ++best.plans;
    const double peak = ev.peak_memory_fraction;
    bool take = !best.found || better_plan(ev.round_ms, p, peak, best.round, best.stages, best.peak);
    if (!take && !better_plan(best.round, best.stages, best.peak, ev.round_ms, p, peak)) take = k < best.devices;
    if (take) best.take(ev.round_ms, p, peak, k, plan);
  };
  enumerate_structures(t, batch, microbatches, optimizer, max_stages, wire_codec::kDefaultBlock, consider);
  return best;
}

// Random codec speeds (fixed seed) on every device of the instance: each
// lossy codec with probability 1 - missing (so that some devices cannot
// use some codecs), encode 5..1000 MB/s (log-uniform) x a per-device factor
// 0.3..3, decode 1..3x that: codec time then competes with link time on
// the generator's 5..1000 Mbit/s links, either way.
inline void add_codec_speeds(Instance& in, uint32_t seed, double missing) {
  std::mt19937 rng(seed * 7919u + 17);
  auto uni = [&](double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); };
  for (auto& [id, dp] : in.profile.devices) {
    const double factor = uni(0.3, 3.0);
    for (Codec c : {Codec::fp16, Codec::bf16, Codec::int8, Codec::int4}) {
      if (uni(0, 1) < missing) continue;
      CodecSpeed s;
      s.encode_mb_s = std::exp(uni(std::log(5.0), std::log(1000.0))) * factor;
      s.decode_mb_s = s.encode_mb_s * uni(1.0, 3.0);
      dp.codecs[c] = s;
    }
  }
}

// The best structure with its codecs; `plans` counts the feasible
// (structure, codec assignment) pairs seen.
struct EnumeratedWire : Enumerated {
  int64_t lossiness = 0;
  // The best plan puts on some boundary a codec whose own Ef + Eb is not
  // the smallest usable while that faster codec would make T_round worse
  // (the model's reason the search must branch on boundary codecs).
  bool slower_boundary_codec = false;
};

// The usable codecs (policy and speeds of every device given) for devices `ids`.
inline std::vector<Codec> usable_codecs(const ProfileTables& t, WirePolicy policy, const std::vector<std::string>& ids) {
  std::vector<Codec> out;
  for (Codec c : wire_codecs(policy)) {
    bool ok = true;
    for (const std::string& id : ids) ok = ok && t.has_codec(t.index(id), c);
    if (ok) out.push_back(c);
  }
  return out;
}

// Every usable codec on every boundary and on every all-reduce of a group
// of two or more of `plan` (its stages and samples fixed): calls
// visit(round, lossiness, plan with those codecs, faster_codec_worse) for
// each assignment. Step times come from evaluate() (one evaluation per
// codec, every boundary and all-reduce in it); each assignment's T_round
// from round_latency(), the literal formula.
template <typename Visit>
void enumerate_codecs(const ProfileTables& t, const Plan& plan, WirePolicy policy, const EvalOptions& eo,
                      Visit visit) {
  const int p = static_cast<int>(plan.stages.size());
  const Evaluation base = evaluate(plan, t, eo);
  std::map<Codec, Evaluation> by_codec;
  for (Codec c : wire_codecs(policy)) {
    Plan x = plan;
    for (int s = 0; s < p; ++s) {
      x.stages[s].allreduce = c;
      if (s + 1 < p) x.stages[s].to_next = c;
    }
    by_codec[c] = evaluate(x, t, eo);
  }
  struct Choice {
    int step;        // index into the steps
    bool allreduce;  // else a boundary
    int stage;
    std::vector<Codec> codecs;
  };
  std::vector<Choice> choices;
  for (int s = 0; s < p; ++s) {
    std::vector<std::string> ids;
    for (const StageDevice& d : plan.stages[s].devices) ids.push_back(d.id);
    if (ids.size() > 1) choices.push_back({2 * s, true, s, usable_codecs(t, policy, ids)});
    if (s + 1 < p) {
      for (const StageDevice& d : plan.stages[s + 1].devices) ids.push_back(d.id);
      choices.push_back({2 * s + 1, false, s, usable_codecs(t, policy, ids)});
    }
  }
  std::vector<double> ef(base.steps.size()), eb(ef.size()), ta(ef.size());
  for (size_t i = 0; i < ef.size(); ++i) {
    ef[i] = base.steps[i].ef_ms;
    eb[i] = base.steps[i].eb_ms;
    ta[i] = base.steps[i].ta_ms;
  }
  std::vector<size_t> pick(choices.size(), 0);
  Plan with = plan;
  for (;;) {
    int64_t lossiness = 0;
    for (size_t x = 0; x < choices.size(); ++x) {
      const Choice& ch = choices[x];
      const Codec c = ch.codecs[pick[x]];
      const StepTime& st = by_codec[c].steps[ch.step];
      if (ch.allreduce) {
        ta[ch.step] = st.ta_ms;
        with.stages[ch.stage].allreduce = c;
      } else {
        ef[ch.step] = st.ef_ms;
        eb[ch.step] = st.eb_ms;
        with.stages[ch.stage].to_next = c;
      }
      lossiness += codec_lossiness(c);
    }
    const double round = round_latency(ef, eb, ta, plan.microbatches);
    // A codec with a faster transfer on some boundary that makes T_round worse.
    auto faster_codec_worse = [&]() {
      for (size_t x = 0; x < choices.size(); ++x) {
        const Choice& ch = choices[x];
        if (ch.allreduce) continue;
        const StepTime& mine = by_codec[ch.codecs[pick[x]]].steps[ch.step];
        for (Codec y : ch.codecs) {
          const StepTime& other = by_codec[y].steps[ch.step];
          if (!(other.ef_ms + other.eb_ms < mine.ef_ms + mine.eb_ms)) continue;
          std::vector<double> ef2 = ef, eb2 = eb;
          ef2[ch.step] = other.ef_ms;
          eb2[ch.step] = other.eb_ms;
          const double r2 = round_latency(ef2, eb2, ta, plan.microbatches);
          if (r2 > round && !same_round(r2, round)) return true;
        }
      }
      return false;
    };
    visit(round, lossiness, with, faster_codec_worse);
    size_t x = 0;  // next assignment (odometer)
    while (x < choices.size() && ++pick[x] == choices[x].codecs.size()) pick[x++] = 0;
    if (x == choices.size()) break;
  }
}

// The smallest T_round of a plan's stages over every codec assignment, and
// the least lossiness among the assignments that reach it (same_round).
inline std::pair<double, int64_t> best_codecs_for(const ProfileTables& t, const Plan& plan, WirePolicy policy,
                                                  const EvalOptions& eo) {
  double best = std::numeric_limits<double>::infinity();
  enumerate_codecs(t, plan, policy, eo, [&](double round, int64_t, const Plan&, auto&&) {
    best = std::min(best, round);
  });
  int64_t loss = std::numeric_limits<int64_t>::max();
  enumerate_codecs(t, plan, policy, eo, [&](double round, int64_t lossiness, const Plan&, auto&&) {
    if (same_round(round, best)) loss = std::min(loss, lossiness);
  });
  return {best, loss};
}

// Exhaustive search of the space with codecs, for one M: every structure of
// enumerate_best (k, P, device segments, layer partition, Algorithm 1) with
// every codec assignment (enumerate_codecs). Tie-breaks: T_round, stages,
// peak memory, fewer devices, then wire_lossiness.
inline EnumeratedWire enumerate_best_wire(const ProfileTables& t, int batch, int microbatches, OptimizerKind optimizer,
                                          WirePolicy policy, uint32_t block) {
  EnumeratedWire best;
  EvalOptions eo;
  eo.optimizer = optimizer;
  enumerate_structures(t, batch, microbatches, optimizer, 0, block, [&](int k, int p, const Plan& plan) {
    const Evaluation base = evaluate(plan, t, eo);
    if (!base.feasible) return;
    const double peak = base.peak_memory_fraction;
    enumerate_codecs(t, plan, policy, eo, [&](double round, int64_t lossiness, const Plan& with,
                                               auto&& faster_codec_worse) {
      ++best.plans;
      bool take = !best.found || better_plan(round, p, peak, best.round, best.stages, best.peak);
      const bool not_worse = best.found && !better_plan(best.round, best.stages, best.peak, round, p, peak);
      if (!take && not_worse) take = k < best.devices || (k == best.devices && lossiness < best.lossiness);
      if (!take) return;
      best.take(round, p, peak, k, with);
      best.lossiness = lossiness;
      best.slower_boundary_codec = faster_codec_worse();
    });
  });
  return best;
}

}  // namespace asteroid::planner::testing
