#include "planner/latency_predictor.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <stdexcept>

namespace asteroid::planner {
namespace {

struct Point {
  int device = 0, layer = 0, batch = 0;
  double ms = 0;
};

// Fits s_d (a_l + c_l b) to `points` (one table: forward or backward).
void fit(const std::vector<Point>& points, int layers, int devices, std::vector<double>& scales,
         std::vector<double>& a, std::vector<double>& c) {
  a.assign(static_cast<size_t>(layers), 0);
  c.assign(static_cast<size_t>(layers), 0);
  for (int iteration = 0; iteration < 30; ++iteration) {
    // Layers, the scales fixed: minimise sum w (t - s a - s b c)^2 with w = 1/t^2.
    std::vector<double> saa(layers), sab(layers), sbb(layers), sta(layers), stb(layers);
    for (const auto& p : points) {
      const double w = 1 / (p.ms * p.ms), s = scales[p.device], x = s, y = s * p.batch;
      saa[p.layer] += w * x * x;
      sab[p.layer] += w * x * y;
      sbb[p.layer] += w * y * y;
      sta[p.layer] += w * p.ms * x;
      stb[p.layer] += w * p.ms * y;
    }
    for (int l = 0; l < layers; ++l) {
      const double det = saa[l] * sbb[l] - sab[l] * sab[l];
      if (std::abs(det) > 1e-12 * std::max(1.0, saa[l] * sbb[l])) {
        a[l] = (sta[l] * sbb[l] - stb[l] * sab[l]) / det;
        c[l] = (saa[l] * stb[l] - sab[l] * sta[l]) / det;
      }
      // A negative cost is noise around zero: refit the other term alone.
      if (a[l] < 0 || !(det > 0)) {
        a[l] = 0;
        c[l] = sbb[l] > 0 ? std::max(0.0, stb[l] / sbb[l]) : 0;
      } else if (c[l] < 0) {
        c[l] = 0;
        a[l] = saa[l] > 0 ? std::max(0.0, sta[l] / saa[l]) : 0;
      }
    }
    // Scales, the layers fixed: s = sum w t g / sum w g^2.
    std::vector<double> num(devices), den(devices);
    for (const auto& p : points) {
      const double w = 1 / (p.ms * p.ms), g = a[p.layer] + c[p.layer] * p.batch;
      num[p.device] += w * p.ms * g;
      den[p.device] += w * g * g;
    }
    for (int d = 0; d < devices; ++d)
      if (den[d] > 0) scales[d] = num[d] / den[d];
    // The first device's scale is 1: the layers carry the rest.
    const double first = scales[0] > 0 ? scales[0] : 1;
    for (double& s : scales) s /= first;
    for (int l = 0; l < layers; ++l) {
      a[l] *= first;
      c[l] *= first;
    }
  }
}

// The device's own points, linearly between the two around `batch` (the
// end segments extended beyond them), never below zero.
double along(const std::vector<int>& batches, const std::vector<double>& ms, int batch) {
  size_t hi = 1;
  while (hi + 1 < batches.size() && batches[hi] < batch) ++hi;
  const size_t lo = hi - 1;
  const double w = double(batch - batches[lo]) / double(batches[hi] - batches[lo]);
  return std::max(0.0, ms[lo] + w * (ms[hi] - ms[lo]));
}

}  // namespace

LatencyPredictor::LatencyPredictor(const Profile& profile) {
  const int layers = static_cast<int>(profile.layers.size());
  std::vector<std::string> ids;
  for (const auto& [id, device] : profile.devices) ids.push_back(id);
  if (ids.empty()) throw std::invalid_argument("latency predictor: the profile has no device");
  // One fit for both tables: the backward of layer l is line layers + l, so
  // that a device has one scale (its speed) for both.
  std::vector<Point> points;
  std::vector<std::set<int>> batches_of_layer(static_cast<size_t>(layers));
  for (int d = 0; d < static_cast<int>(ids.size()); ++d) {
    const DeviceProfile& dev = profile.devices.at(ids[d]);
    for (int l = 0; l < layers && l < static_cast<int>(dev.fwd_ms.size()); ++l) {
      for (size_t k = 0; k < dev.batch.size() && k < dev.fwd_ms[l].size(); ++k) {
        const double f = dev.fwd_ms[l][k];
        const double b = l < static_cast<int>(dev.bwd_ms.size()) && k < dev.bwd_ms[l].size() ? dev.bwd_ms[l][k] : 0;
        if (f > 0) points.push_back({d, l, dev.batch[k], f});
        if (b > 0) points.push_back({d, layers + l, dev.batch[k], b});
        if (f > 0 || b > 0) batches_of_layer[l].insert(dev.batch[k]);
      }
    }
  }
  for (int l = 0; l < layers; ++l) {
    if (batches_of_layer[l].empty())
      throw std::invalid_argument("latency predictor: no device measured layer " + profile.layers[l].name);
    if (batches_of_layer[l].size() < 2)
      throw std::invalid_argument("latency predictor: layer " + profile.layers[l].name +
                                  " was measured at one batch size only; its per-sample cost is unknown");
  }
  std::vector<double> scales(ids.size(), 1.0), a, c;
  fit(points, 2 * layers, static_cast<int>(ids.size()), scales, a, c);
  for (size_t d = 0; d < ids.size(); ++d) scale_[ids[d]] = scales[d];
  for (int l = 0; l < layers; ++l) {
    fwd_.push_back({a[l], c[l]});
    bwd_.push_back({a[layers + l], c[layers + l]});
  }
}

double LatencyPredictor::scale(const std::string& device) const {
  auto found = scale_.find(device);
  if (found == scale_.end()) throw std::invalid_argument("latency predictor: unknown device '" + device + "'");
  return found->second;
}

double LatencyPredictor::fwd_ms(const std::string& device, int layer, int batch) const {
  return scale(device) * fwd_.at(static_cast<size_t>(layer)).at(batch);
}

double LatencyPredictor::bwd_ms(const std::string& device, int layer, int batch) const {
  return scale(device) * bwd_.at(static_cast<size_t>(layer)).at(batch);
}

Profile LatencyPredictor::completed(const Profile& profile, const std::vector<int>& batches) const {
  Profile out = profile;
  for (auto& [id, device] : out.devices) {
    const DeviceProfile measured = device;
    device.batch = batches;
    const size_t layers = profile.layers.size();
    device.fwd_ms.assign(layers, std::vector<double>(batches.size()));
    device.bwd_ms.assign(layers, std::vector<double>(batches.size()));
    for (size_t l = 0; l < layers; ++l) {
      for (size_t k = 0; k < batches.size(); ++k) {
        const auto at = std::find(measured.batch.begin(), measured.batch.end(), batches[k]);
        const size_t m = static_cast<size_t>(at - measured.batch.begin());
        const bool have = at != measured.batch.end() && l < measured.fwd_ms.size() && m < measured.fwd_ms[l].size();
        if (have) {
          device.fwd_ms[l][k] = measured.fwd_ms[l][m];
          device.bwd_ms[l][k] = measured.bwd_ms[l][m];
        } else if (measured.batch.size() >= 2 && l < measured.fwd_ms.size()) {
          device.fwd_ms[l][k] = along(measured.batch, measured.fwd_ms[l], batches[k]);
          device.bwd_ms[l][k] = along(measured.batch, measured.bwd_ms[l], batches[k]);
        } else {
          device.fwd_ms[l][k] = fwd_ms(id, static_cast<int>(l), batches[k]);
          device.bwd_ms[l][k] = bwd_ms(id, static_cast<int>(l), batches[k]);
        }
      }
    }
  }
  return out;
}

std::vector<int> spread_points(const std::vector<int>& batches, int n) {
  if (n <= 0 || static_cast<size_t>(n) >= batches.size()) return batches;
  if (n == 1) return {batches.back()};
  std::set<int> picked;
  const double lo = std::log(batches.front()), hi = std::log(batches.back());
  for (int i = 0; i < n; ++i) {
    const double target = lo + (hi - lo) * i / (n - 1);
    const auto nearest = std::min_element(batches.begin(), batches.end(), [&](int x, int y) {
      return std::abs(std::log(x) - target) < std::abs(std::log(y) - target);
    });
    picked.insert(*nearest);
  }
  return {picked.begin(), picked.end()};
}

}  // namespace asteroid::planner
