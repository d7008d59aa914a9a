#include "supervision/straggler_watch.h"

#include <algorithm>

namespace asteroid::supervision {
namespace {

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

}  // namespace

StragglerWatch::StragglerWatch(Rules rules, std::map<std::string, double> predicted_ms) : rules_(rules) {
  for (const auto& [id, ms] : predicted_ms) devices_[id].predicted_ms = ms;
}

std::vector<StragglerWatch::Verdict> StragglerWatch::observe(uint64_t round,
                                                             const std::map<std::string, double>& measured_ms) {
  if (!warmed_up_) {
    warmed_up_ = true;
    return {};
  }
  std::map<std::string, double> ratios;
  for (const auto& [id, ms] : measured_ms) {
    Device& d = devices_[id];
    if (d.predicted_ms <= 0) {
      d.calibration.push_back(ms);
      if (static_cast<int>(d.calibration.size()) < std::max(rules_.rounds, 1)) continue;
      d.predicted_ms = std::max(median(d.calibration), 1e-3);
      d.calibration.clear();
    }
    if (ms > 0) ratios[id] = ms / d.predicted_ms;
  }
  std::vector<Verdict> verdicts;
  if (ratios.size() < 2) return verdicts;  // nothing to compare with
  for (const auto& [id, ratio] : ratios) {
    std::vector<double> others;
    for (const auto& [other, r] : ratios) {
      if (other != id) others.push_back(r);
    }
    const double relative = ratio / median(others);
    Device& d = devices_[id];
    const bool slow = relative > rules_.factor;
    d.slow_streak = slow ? d.slow_streak + 1 : 0;
    d.normal_streak = slow ? 0 : d.normal_streak + 1;
    const bool flips = d.straggling ? d.normal_streak >= rules_.rounds : d.slow_streak >= rules_.rounds;
    if (!flips) continue;
    d.straggling = !d.straggling;
    d.slow_streak = d.normal_streak = 0;
    verdicts.push_back({id, d.straggling, round, measured_ms.at(id), d.predicted_ms, relative});
  }
  return verdicts;
}

bool StragglerWatch::straggling(const std::string& device) const {
  auto it = devices_.find(device);
  return it != devices_.end() && it->second.straggling;
}

}  // namespace asteroid::supervision
