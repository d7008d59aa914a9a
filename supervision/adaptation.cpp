#include "supervision/adaptation.h"

#include <algorithm>
#include <cmath>

namespace asteroid::supervision {
namespace {

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

}  // namespace

SpeedModel::SpeedModel(Rules rules) : rules_(rules) {}

void SpeedModel::expect(std::map<std::string, double> predicted_ms) {
  devices_.clear();
  for (const auto& [device, ms] : predicted_ms) {
    if (!(ms > 0)) continue;
    devices_[device].predicted_ms = ms;
    assumed_.emplace(device, 1.0);
  }
  started_ = false;
}

std::vector<std::string> SpeedModel::observe(uint64_t round, const std::map<std::string, double>& measured_ms) {
  std::vector<std::string> drifted;
  if (!started_) {
    started_ = true;
    return drifted;
  }
  const bool calibrating = this->calibrating();
  for (auto& [device, d] : devices_) {
    auto measured = measured_ms.find(device);
    if (measured == measured_ms.end() || !(measured->second > 0)) continue;
    d.ratios.push_back(measured->second / d.predicted_ms);
    if (static_cast<int>(d.ratios.size()) > rules_.window) d.ratios.pop_front();
    if (calibrating) continue;
    const double departure = estimate(device) / assumed_.at(device);
    if (std::abs(departure - 1) > rules_.threshold) {
      if (++d.streak == rules_.rounds) drifted.push_back(device);
    } else {
      d.streak = 0;
    }
  }
  if (calibrating && ++calibrated_ == rules_.calibration) {
    assume_estimates();
    std::vector<double> scales;
    for (const auto& [device, d] : devices_) scales.push_back(assumed_.at(device));
    if (!scales.empty()) bias_ = median(scales);
  }
  return drifted;
}

bool SpeedModel::observe_probe(const std::string& device, double profile_scale) {
  if (!(profile_scale > 0) || devices_.count(device)) return false;  // a device in the plan is measured by rounds
  const double now = profile_scale * bias_;
  probed_[device] = now;
  const double assumed = assumed_.emplace(device, 1.0).first->second;
  return std::abs(now / assumed - 1) > rules_.threshold;
}

double SpeedModel::estimate(const std::string& device) const {
  auto scale = assumed_.find(device);
  const double assumed = scale == assumed_.end() ? 1.0 : scale->second;
  auto d = devices_.find(device);
  if (d == devices_.end()) {
    auto probed = probed_.find(device);
    return probed == probed_.end() ? assumed : probed->second;
  }
  if (d->second.ratios.empty()) return assumed;
  return assumed * median({d->second.ratios.begin(), d->second.ratios.end()});
}

std::map<std::string, double> SpeedModel::estimates() const {
  std::map<std::string, double> out = assumed_;
  for (const auto& [device, d] : devices_) out[device] = estimate(device);
  for (const auto& [device, scale] : probed_)
    if (!devices_.count(device)) out[device] = scale;
  return out;
}

void SpeedModel::assume_estimates() {
  for (const auto& [device, scale] : probed_) assumed_[device] = scale;
  probed_.clear();
  for (auto& [device, d] : devices_) {
    const double now = estimate(device);
    d.predicted_ms *= now / assumed_.at(device);
    assumed_[device] = now;
    d.ratios.clear();
    d.streak = 0;
  }
}

planner::Profile SpeedModel::scaled(const planner::Profile& base, const std::map<std::string, double>& scales) {
  planner::Profile out = base;
  for (auto& [id, device] : out.devices) {
    auto scale = scales.find(id);
    if (scale == scales.end() || !(scale->second > 0)) continue;
    const double s = scale->second;
    for (auto* table : {&device.fwd_ms, &device.bwd_ms})
      for (auto& layer : *table)
        for (double& ms : layer) ms *= s;
    for (auto& [kind, layers] : device.update_ms)
      for (double& ms : layers) ms *= s;
    for (auto& [codec, speed] : device.codecs) {
      speed.encode_mb_s /= s;
      speed.decode_mb_s /= s;
    }
  }
  return out;
}

bool switch_pays(double current_round_ms, double new_round_ms, double migration_ms, uint64_t horizon_rounds) {
  return (current_round_ms - new_round_ms) * static_cast<double>(horizon_rounds) > migration_ms;
}

double SwitchCosts::estimate_ms(const std::set<std::string>& joining) const {
  double join = 0;
  for (const auto& device : joining) {
    auto known = join_ms_.find(device);
    join = std::max(join, known != join_ms_.end() ? known->second : unknown_join_ms_);
  }
  return in_place_ms_ + join;
}

void SwitchCosts::measured(const std::set<std::string>& joining, double overhead_ms) {
  overhead_ms = std::max(0.0, overhead_ms);
  if (joining.empty()) {
    in_place_ms_ = overhead_ms;
    return;
  }
  for (const auto& device : joining) join_ms_[device] = std::max(0.0, overhead_ms - in_place_ms_);
}

void SpeedSpells::drifted(uint64_t round, const std::vector<std::string>& devices) {
  for (const auto& id : devices) {
    Device& d = devices_.try_emplace(id, Device{start_, {}}).first->second;
    if (round < d.since + detection_) continue;  // the same change, settling
    d.spells.push_back(round - d.since);
    if (d.spells.size() > kept_) d.spells.pop_front();
    d.since = round;
  }
}

uint64_t SpeedSpells::horizon(uint64_t configured, uint64_t now, const std::vector<std::string>& devices) const {
  uint64_t shortest = configured;
  for (const auto& id : devices) {
    auto it = devices_.find(id);
    if (it == devices_.end() || it->second.spells.size() < kept_) continue;
    const Device& d = it->second;
    std::vector<uint64_t> sorted(d.spells.begin(), d.spells.end());
    std::sort(sorted.begin(), sorted.end());
    const uint64_t median = sorted[sorted.size() / 2];
    const uint64_t spell = std::max(median, now > d.since ? now - d.since : 0);
    if (spell >= configured) continue;  // its speed changes no faster than the horizon
    shortest = std::min(shortest, spell > detection_ ? spell - detection_ : 0);
  }
  return shortest;
}

std::deque<uint64_t> SpeedSpells::spells(const std::string& device) const {
  auto it = devices_.find(device);
  return it == devices_.end() ? std::deque<uint64_t>{} : it->second.spells;
}

}  // namespace asteroid::supervision
