// Planning time of the exact hpp search for 4..32 devices x 50..200 layers
// (markdown table), and the distribution of simulated / modelled round time
// on the random instances of the planner tests.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "planner/search.h"

using namespace asteroid::planner;

namespace {

// An edge cluster of three device classes (nx: fast, 8 GiB; tx2: medium,
// 8 GiB; nano: slow, 4 GiB) on a 100 Mbit/s LAN with a few slower links,
// and a CNN-like chain: early layers have big activations, late layers big
// weights.
void make_instance(int devices, int layers, uint32_t seed, Cluster* c, Profile* p) {
  std::mt19937 rng(seed);
  auto uni = [&](double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); };
  p->model = "bench";
  p->layers.clear();
  p->devices.clear();
  c->devices.clear();
  c->links.clear();
  std::vector<double> cost(layers);
  for (int l = 0; l < layers; ++l) {
    double depth = static_cast<double>(l) / layers;
    LayerInfo li;
    li.name = "layer" + std::to_string(l);
    li.weight_bytes = std::round(uni(0.5, 1.5) * (2e4 + 4e6 * depth * depth));
    li.out_bytes = std::round(uni(0.5, 1.5) * 4e5 * (1.05 - depth));
    li.stash_bytes = li.out_bytes * 2;
    cost[l] = uni(0.2, 1.0) * 12.0 / layers * 50;  // ms per sample on an nx
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
    for (int l = 0; l < layers; ++l) {
      std::vector<double> f, b;
      for (int bs : dp.batch) {
        double t = cost[l] * s * (0.3 + bs) / 1.3 / 16;
        f.push_back(t);
        b.push_back(2 * t);
      }
      dp.fwd_ms.push_back(f);
      dp.bwd_ms.push_back(b);
    }
    p->devices[dev.id] = dp;
  }
  c->default_bandwidth_mbps = 100;
  for (int d = 0; d + 1 < devices; d += 5)
    c->links.push_back({c->devices[d].id, c->devices[d + 1].id, 40});
}

}  // namespace

int main(int argc, char** argv) {
  int repeat = argc > 1 ? std::atoi(argv[1]) : 3;
  std::printf("Exact hpp planning time (ms, median of %d), batch 64, M = 4\n\n", repeat);
  std::printf("| devices | 50 layers | 100 layers | 200 layers |\n|---|---|---|---|\n");
  for (int n : {4, 8, 16, 32}) {
    std::printf("| %d |", n);
    for (int l : {50, 100, 200}) {
      Cluster c;
      Profile p;
      make_instance(n, l, 7 + n * 1000 + l, &c, &p);
      ProfileTables t(c, p);
      TrainingConfig cfg;
      cfg.batch = 64;
      cfg.microbatches = 4;
      std::vector<double> ms;
      PlanResult r;
      for (int i = 0; i < repeat; ++i) {
        auto t0 = std::chrono::steady_clock::now();
        r = plan_hpp(t, cfg);
        ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      }
      std::sort(ms.begin(), ms.end());
      std::printf(" %.1f (P=%zu, T=%.0f, alloc %lld, entries %lld) |", ms[ms.size() / 2], r.plan.stages.size(),
                  r.evaluation.round_ms, r.stats.stage_allocations, r.stats.entries);
      std::fflush(stdout);
    }
    std::printf("\n");
  }
  return 0;
}
