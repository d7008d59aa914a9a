// Benchmark of the planner (docs/planner.md):
//   1. time of the exact hpp search for 4, 8, 16, 32 devices x 50, 100, 200
//      layers, on two synthetic edge clusters (markdown tables), with the
//      exact wire and with `--wire auto` (codec choice in the search);
//   2. the distribution of simulated round / cost-model round over the
//      random instances of the planner tests and over the benchmark plans.
// Usage: bench_planner [repeats=3]
//        bench_planner 1 DEVICES LAYERS REGIME(0|1) [WIRE=exact]   one instance, with search statistics
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "planner/search.h"
#include "planner/simulator.h"
#include "tests/planner/instances.h"

using namespace asteroid::planner;

namespace {

struct Regime {
  const char* name;
  double out_bytes;  // activation bytes per sample at the first layer
  double bandwidth;  // Mbit/s
};

// Three device classes, cycled: nx (fast, 8 GiB), tx2 (1.8x slower, 8 GiB),
// nano (4.5x slower, 4 GiB), +-10% each; every 5th pair of neighbours on a
// 40 Mbit/s link. A CNN-like chain of `layers`: activations shrink and
// weights grow with depth; about 12 ms per sample for the whole model on an nx.
// Codec speeds (MB/s of float32, encode / decode) on an nx: fp16 1200 / 1600,
// bf16 1500 / 2000, int8 800 / 1200, int4 500 / 900, divided by the class's
// slowness (same +-10%); every 7th device has no int4 (an older runtime).
void make_instance(int devices, int layers, uint32_t seed, const Regime& regime, Cluster* c, Profile* p) {
  std::mt19937 rng(seed);
  auto uni = [&](double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); };
  *c = Cluster{};
  *p = Profile{};
  p->model = "bench";
  std::vector<double> cost(layers);
  for (int l = 0; l < layers; ++l) {
    double depth = static_cast<double>(l) / layers;
    LayerInfo li;
    li.name = "layer" + std::to_string(l);
    li.weight_bytes = std::round(uni(0.5, 1.5) * (2e4 + 4e6 * depth * depth) * 50 / layers);
    li.out_bytes = std::round(uni(0.5, 1.5) * regime.out_bytes * (1.05 - depth));
    li.stash_bytes = li.out_bytes * 2;
    cost[l] = uni(0.2, 1.0) * 12.0 / layers / 0.6;
    p->layers.push_back(li);
  }
  const char* classes[] = {"nx", "tx2", "nano"};
  const double speed[] = {1.0, 1.8, 4.5};
  const double memory[] = {8192, 8192, 4096};
  for (int d = 0; d < devices; ++d) {
    int cls = d % 3;
    Device dev;
    dev.id = std::string(classes[cls]) + std::to_string(d);
    dev.memory_mb = memory[cls];
    c->devices.push_back(dev);
    DeviceProfile dp;
    dp.batch = {1, 4, 16, 32};
    double s = speed[cls] * uni(0.9, 1.1);
    const std::pair<Codec, CodecSpeed> nx_codecs[] = {{Codec::fp16, {1200, 1600}},
                                                      {Codec::bf16, {1500, 2000}},
                                                      {Codec::int8, {800, 1200}},
                                                      {Codec::int4, {500, 900}}};
    for (const auto& [codec, nx] : nx_codecs) {
      if (codec == Codec::int4 && d % 7 == 6) continue;
      dp.codecs[codec] = {nx.encode_mb_s / s, nx.decode_mb_s / s};
    }
    for (int l = 0; l < layers; ++l) {
      std::vector<double> f, b;
      for (int bs : dp.batch) {
        double t = cost[l] * s * (0.3 + bs) / 1.3;  // batching amortises a fixed cost
        f.push_back(t);
        b.push_back(2 * t);
      }
      dp.fwd_ms.push_back(f);
      dp.bwd_ms.push_back(b);
    }
    p->devices[dev.id] = dp;
  }
  c->default_bandwidth_mbps = regime.bandwidth;
  for (int d = 0; d + 1 < devices; d += 5) c->links.push_back({c->devices[d].id, c->devices[d + 1].id, 40});
}

// "b: int8 x3, fp32; a: fp16" (codecs on the boundaries, on the all-reduces).
std::string wire_summary(const Plan& plan) {
  std::map<std::string, int> b, a;
  for (size_t s = 0; s < plan.stages.size(); ++s) {
    if (s + 1 < plan.stages.size()) ++b[asteroid::wire_codec::codec_name(plan.stages[s].to_next)];
    if (plan.stages[s].devices.size() > 1) ++a[asteroid::wire_codec::codec_name(plan.stages[s].allreduce)];
  }
  auto list = [](const std::map<std::string, int>& m) {
    std::string out;
    for (const auto& [name, count] : m)
      out += (out.empty() ? "" : " ") + name + (count > 1 ? " x" + std::to_string(count) : "");
    return out.empty() ? std::string("-") : out;
  };
  return "b: " + list(b) + "; a: " + list(a);
}

double quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  double pos = q * (v.size() - 1);
  size_t lo = static_cast<size_t>(std::floor(pos));
  size_t hi = std::min(v.size() - 1, lo + 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - lo);
}

}  // namespace

int main(int argc, char** argv) {
  const int repeat = argc > 1 ? std::max(1, std::atoi(argv[1])) : 3;
  const Regime regimes[] = {{"compute-bound: 1000 Mbit/s LAN, 100 kB/sample activations", 1e5, 1000},
                            {"communication-bound: 100 Mbit/s LAN, 400 kB/sample activations", 4e5, 100}};
  if (argc >= 5) {
    Cluster c;
    Profile p;
    const int n = std::atoi(argv[2]), l = std::atoi(argv[3]);
    make_instance(n, l, 7 + n * 1000 + l, regimes[std::atoi(argv[4]) % 2], &c, &p);
    ProfileTables t(c, p);
    TrainingConfig cfg;
    cfg.batch = 64;
    cfg.microbatches = 4;
    cfg.wire = parse_wire_policy(argc > 5 ? argv[5] : "exact");
    PlanResult r = plan_hpp(t, cfg);
    const SearchStats& st = r.stats;
    std::printf("%.1f ms (seed %.1f, exact %.1f, tie-break %.1f of which codecs %.1f): T_round %.3f, %zu stages, "
                "wire %s; %lld splits, %lld entries, %lld complete plans, %d sets skipped\n",
                r.planning_ms, st.seed_ms, st.exact_ms, st.tie_break_ms, st.codec_tie_break_ms, r.evaluation.round_ms,
                r.plan.stages.size(),
                wire_summary(r.plan).c_str(), st.stage_allocations, st.entries, st.complete_plans,
                st.chosen_sets_skipped);
    return 0;
  }
  std::vector<double> bench_ratios;
  for (const Regime& regime : regimes) {
    std::printf("### hpp planning time, exact wire and `--wire auto`, %s\n\n", regime.name);
    std::printf("batch 64, M = 4, SGD; ms, median of %d runs; P stages, k devices used of N; wire: the codecs "
                "the auto plan puts on its boundaries (b) and all-reduces (a)\n\n",
                repeat);
    std::printf("| devices | layers | exact ms | auto ms | exact plan | auto plan | T_round exact -> auto |\n"
                "|---|---|---|---|---|---|---|\n");
    for (int n : {4, 8, 16, 32}) {
      for (int l : {50, 100, 200}) {
        Cluster c;
        Profile p;
        make_instance(n, l, 7 + n * 1000 + l, regime, &c, &p);
        ProfileTables t(c, p);
        PlanResult r[2];
        double median[2];
        for (int w = 0; w < 2; ++w) {
          TrainingConfig cfg;
          cfg.batch = 64;
          cfg.microbatches = 4;
          cfg.wire = w == 0 ? WirePolicy::exact : WirePolicy::auto_;
          std::vector<double> ms;
          for (int i = 0; i < repeat; ++i) {
            auto t0 = std::chrono::steady_clock::now();
            r[w] = plan_hpp(t, cfg);
            ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
          }
          median[w] = quantile(ms, 0.5);
        }
        auto shape = [](const PlanResult& x) {
          size_t used = 0;
          for (const Stage& s : x.plan.stages) used += s.devices.size();
          return "P=" + std::to_string(x.plan.stages.size()) + ", k=" + std::to_string(used);
        };
        std::printf("| %d | %d | %.0f | %.0f | %s | %s, %s | %.1f -> %.1f ms (%+.0f%%) |\n", n, l, median[0], median[1],
                    shape(r[0]).c_str(), shape(r[1]).c_str(), wire_summary(r[1].plan).c_str(),
                    r[0].evaluation.round_ms, r[1].evaluation.round_ms,
                    100 * (r[1].evaluation.round_ms / r[0].evaluation.round_ms - 1));
        std::fflush(stdout);
        if (r[0].feasible) bench_ratios.push_back(simulate(r[0].plan, t).round_ms / r[0].evaluation.round_ms);
      }
    }
    std::printf("\n");
  }

  // Simulated / modelled round on the tests' random instances.
  std::vector<double> ratios;
  std::mt19937 rng(4242);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  for (uint32_t seed = 1; seed <= 400; ++seed) {
    testing::InstanceSpec spec;
    spec.devices = pick(1, 6);
    spec.layers = pick(1, 8);
    spec.tight_memory = seed % 2;
    spec.mixed_links = (seed / 2) % 2;
    testing::Instance in = testing::random_instance(seed, spec);
    ProfileTables t(in.cluster, in.profile);
    TrainingConfig cfg;
    cfg.microbatches = pick(1, 8);
    cfg.batch = cfg.microbatches * pick(1, 8);
    PlanResult r = plan_hpp(t, cfg);
    if (!r.feasible) continue;
    ratios.push_back(simulate(r.plan, t).round_ms / r.evaluation.round_ms);
  }
  std::printf("### Simulated round / cost-model round of the hpp plan\n\n");
  std::printf("| instances | count | min | median | p90 | max |\n|---|---|---|---|---|---|\n");
  for (auto [name, v] : {std::pair<const char*, std::vector<double>*>{"random (tests' generator, <= 6 devices, <= 8 layers)", &ratios},
                         {"benchmark plans above", &bench_ratios}})
    std::printf("| %s | %zu | %.3f | %.3f | %.3f | %.3f |\n", name, v->size(), quantile(*v, 0), quantile(*v, 0.5),
                quantile(*v, 0.9), quantile(*v, 1));
  return 0;
}
