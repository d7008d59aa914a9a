// The learned latency predictor's error (planner/latency_predictor.h)
// against full profiles: for every profile.json given (a run folder's, all
// devices of a cluster at seven batch sizes),
//   - fewer points: every device keeps N batch sizes (spread_points), the
//     predictor fits on them and predicts the others;
//   - a joining device: one device keeps only its largest batch size, the
//     others everything;
// and prints the relative error of the predicted points (median and p90,
// forward and backward together) per profile, next to what the planner
// would do without the predictor for fewer points: interpolate each
// device's own measured points linearly in the batch size.
//
//   bench_predictor runs/*/profile.json [--points 3]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "planner/json_io.h"
#include "planner/latency_predictor.h"

using namespace asteroid::planner;

namespace {

struct Errors {
  std::vector<double> relative;
  void add(double predicted, double measured) {
    if (measured > 0) relative.push_back(std::abs(predicted - measured) / measured);
  }
  double quantile(double q) {
    if (relative.empty()) return NAN;
    std::sort(relative.begin(), relative.end());
    return relative[std::min(relative.size() - 1, static_cast<size_t>(q * relative.size()))];
  }
};

// Profile `full` with each device keeping only `keep(id)` of its batch sizes.
template <typename Keep>
Profile thinned(const Profile& full, Keep keep) {
  Profile out = full;
  for (auto& [id, device] : out.devices) {
    const std::vector<int> kept = keep(id, device.batch);
    DeviceProfile d = device;
    d.batch = kept;
    for (size_t l = 0; l < device.fwd_ms.size(); ++l) {
      d.fwd_ms[l].clear();
      d.bwd_ms[l].clear();
      for (int b : kept) {
        const size_t k = static_cast<size_t>(std::find(device.batch.begin(), device.batch.end(), b) - device.batch.begin());
        d.fwd_ms[l].push_back(device.fwd_ms[l][k]);
        d.bwd_ms[l].push_back(device.bwd_ms[l][k]);
      }
    }
    device = d;
  }
  return out;
}

// Errors of `predictor` on the points of `full` that `thin` does not have.
void score(const Profile& full, const Profile& thin, const LatencyPredictor& predictor, Errors& errors) {
  for (const auto& [id, device] : full.devices) {
    const auto& kept = thin.devices.at(id).batch;
    for (size_t k = 0; k < device.batch.size(); ++k) {
      if (std::find(kept.begin(), kept.end(), device.batch[k]) != kept.end()) continue;
      for (size_t l = 0; l < device.fwd_ms.size(); ++l) {
        errors.add(predictor.fwd_ms(id, static_cast<int>(l), device.batch[k]), device.fwd_ms[l][k]);
        errors.add(predictor.bwd_ms(id, static_cast<int>(l), device.batch[k]), device.bwd_ms[l][k]);
      }
    }
  }
}

// The same points by linear interpolation between the device's own kept
// batch sizes (the cost model's rule between profiled points).
void score_interpolation(const Profile& full, const Profile& thin, Errors& errors) {
  for (const auto& [id, device] : full.devices) {
    const DeviceProfile& kept = thin.devices.at(id);
    for (size_t k = 0; k < device.batch.size(); ++k) {
      const int b = device.batch[k];
      if (std::find(kept.batch.begin(), kept.batch.end(), b) != kept.batch.end()) continue;
      size_t hi = 1;
      while (hi + 1 < kept.batch.size() && kept.batch[hi] < b) ++hi;
      const size_t lo = hi - 1;
      const double w = double(b - kept.batch[lo]) / double(kept.batch[hi] - kept.batch[lo]);
      for (size_t l = 0; l < device.fwd_ms.size(); ++l) {
        errors.add(kept.fwd_ms[l][lo] + w * (kept.fwd_ms[l][hi] - kept.fwd_ms[l][lo]), device.fwd_ms[l][k]);
        errors.add(kept.bwd_ms[l][lo] + w * (kept.bwd_ms[l][hi] - kept.bwd_ms[l][lo]), device.bwd_ms[l][k]);
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  int points = 3;
  std::vector<std::string> paths;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--points") == 0 && i + 1 < argc) {
      points = std::atoi(argv[++i]);
    } else {
      paths.push_back(argv[i]);
    }
  }
  if (paths.empty()) {
    std::fprintf(stderr, "usage: %s profile.json... [--points N]\n", argv[0]);
    return 2;
  }
  std::printf("| profile | model | devices x layers x batch sizes | %d points, predictor: median | p90 | "
              "interpolated: median | p90 | joining device (1 point): median | p90 |\n",
              points);
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& path : paths) {
    const Profile full = load_profile(path);
    Errors fewer, interpolated, joining;
    const Profile thin = thinned(full, [&](const std::string&, const std::vector<int>& b) { return spread_points(b, points); });
    score(full, thin, LatencyPredictor(thin), fewer);
    score_interpolation(full, thin, interpolated);
    for (const auto& [joiner, device] : full.devices) {
      const Profile short_profile = thinned(full, [&](const std::string& id, const std::vector<int>& b) {
        return id == joiner ? std::vector<int>{b.back()} : b;
      });
      Profile only_joiner = full;
      only_joiner.devices = {{joiner, full.devices.at(joiner)}};
      Profile thin_joiner = short_profile;
      thin_joiner.devices = {{joiner, short_profile.devices.at(joiner)}};
      score(only_joiner, thin_joiner, LatencyPredictor(short_profile), joining);
    }
    const auto& any = full.devices.begin()->second;
    std::printf("| %s | %s | %zu x %zu x %zu | %.1f %% | %.1f %% | %.1f %% | %.1f %% | %.1f %% | %.1f %% |\n",
                path.c_str(), full.model.c_str(), full.devices.size(), full.layers.size(), any.batch.size(),
                100 * fewer.quantile(0.5), 100 * fewer.quantile(0.9), 100 * interpolated.quantile(0.5),
                100 * interpolated.quantile(0.9), 100 * joining.quantile(0.5), 100 * joining.quantile(0.9));
  }
  return 0;
}
