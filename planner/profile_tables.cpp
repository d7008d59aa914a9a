#include "planner/profile_tables.h"

#include <algorithm>
#include <limits>
#include <numeric>
#include <stdexcept>

#include "planner/json_io.h"

namespace asteroid::planner {

ProfileTables::ProfileTables(const Cluster& cluster, const Profile& profile)
    : cluster_(cluster), profile_(profile), layers_(static_cast<int>(profile.layers.size())) {
  check_profile_covers(profile, cluster, "profile");
  const int n = device_count();
  const int l1 = layers_ + 1;
  weight_.assign(l1, 0.0);
  stash_.assign(l1, 0.0);
  for (int l = 0; l < layers_; ++l) {
    weight_[l + 1] = weight_[l] + profile.layers[l].weight_bytes;
    stash_[l + 1] = stash_[l] + profile.layers[l].stash_bytes;
  }
  int max_batch = 1;
  for (Table* t : {&fwd_, &bwd_}) {
    t->batch.resize(n);
    t->prefix.resize(n);
  }
  for (int d = 0; d < n; ++d) {
    const DeviceProfile& dp = profile.devices.at(cluster.devices[d].id);
    if (dp.batch.empty())
      throw InputError("profile: devices." + cluster.devices[d].id + ".batch: expected a non-empty array");
    max_batch = std::max(max_batch, dp.batch.back());
    const int nk = static_cast<int>(dp.batch.size());
    for (int which = 0; which < 2; ++which) {
      Table& t = which == 0 ? fwd_ : bwd_;
      const auto& rows = which == 0 ? dp.fwd_ms : dp.bwd_ms;
      t.batch[d] = dp.batch;
      t.prefix[d].assign(static_cast<size_t>(nk) * l1, 0.0);
      for (int k = 0; k < nk; ++k) {
        double* p = &t.prefix[d][static_cast<size_t>(k) * l1];
        for (int l = 0; l < layers_; ++l) {
          p[l + 1] = p[l] + rows[l][k];
          if (k > 0 && rows[l][k] < rows[l][k - 1]) monotone_ = false;
        }
      }
    }
  }
  coef_.resize(static_cast<size_t>(n) * kCoefCache);
  for (int d = 0; d < n; ++d)
    for (int y = 0; y < kCoefCache; ++y) coef_[static_cast<size_t>(d) * kCoefCache + y] = make_coef(d, y);
  bw_.assign(static_cast<size_t>(n) * n, std::numeric_limits<double>::infinity());
  for (int a = 0; a < n; ++a)
    for (int b = 0; b < n; ++b)
      if (a != b) bw_[a * n + b] = cluster.bandwidth_mbps(cluster.devices[a].id, cluster.devices[b].id);
  enc_.assign(static_cast<size_t>(n) * kCodecCount, 0.0);
  dec_.assign(enc_.size(), 0.0);
  for (int d = 0; d < n; ++d)
    for (const auto& [codec, speed] : profile.devices.at(cluster.devices[d].id).codecs) {
      if (codec == Codec::fp32) continue;
      enc_[static_cast<size_t>(d) * kCodecCount + static_cast<size_t>(codec)] = speed.encode_mb_s;
      dec_[static_cast<size_t>(d) * kCodecCount + static_cast<size_t>(codec)] = speed.decode_mb_s;
    }
  update_.assign(static_cast<size_t>(n) * kOptimizerCount * l1, 0.0);
  for (int d = 0; d < n; ++d)
    for (const auto& [kind, times] : profile.devices.at(cluster.devices[d].id).update_ms) {
      if (static_cast<int>(times.size()) != layers_)
        throw InputError("profile: devices." + cluster.devices[d].id + ".update_ms." + optimizer_name(kind) +
                         ": expected " + std::to_string(layers_) + " times (one per layer), got " +
                         std::to_string(times.size()));
      double* p = &update_[(static_cast<size_t>(d) * kOptimizerCount + static_cast<size_t>(kind)) * l1];
      for (int l = 0; l < layers_; ++l) p[l + 1] = p[l] + times[l];
    }
  total_.resize(n);
  for (int d = 0; d < n; ++d)
    total_[d] = fwd_ms(d, 0, layers_, max_batch) + bwd_ms(d, 0, layers_, max_batch);

  sorted_.resize(n);
  std::iota(sorted_.begin(), sorted_.end(), 0);
  std::sort(sorted_.begin(), sorted_.end(), [&](int a, int b) {
    const Device& da = cluster.devices[a];
    const Device& db = cluster.devices[b];
    if (da.memory_mb != db.memory_mb) return da.memory_mb > db.memory_mb;
    if (total_[a] != total_[b]) return total_[a] < total_[b];
    return da.id < db.id;
  });
  rank_.resize(n);
  for (int r = 0; r < n; ++r) rank_[sorted_[r]] = r;
  by_speed_.resize(n);
  std::iota(by_speed_.begin(), by_speed_.end(), 0);
  std::sort(by_speed_.begin(), by_speed_.end(), [&](int a, int b) {
    if (total_[a] != total_[b]) return total_[a] < total_[b];
    return cluster.devices[a].id < cluster.devices[b].id;
  });
}

int ProfileTables::index(const std::string& id) const {
  int i = cluster_.index_of(id);
  if (i < 0) throw std::invalid_argument("unknown device id \"" + id + "\"");
  return i;
}

std::vector<int> ProfileTables::fastest(int k) const {
  std::vector<int> out(by_speed_.begin(), by_speed_.begin() + std::min(k, device_count()));
  std::sort(out.begin(), out.end(), [&](int a, int b) { return rank_[a] < rank_[b]; });
  return out;
}

ProfileTables::Coef ProfileTables::make_coef(int d, int y) const {
  const std::vector<int>& b = fwd_.batch[d];
  const size_t n = b.size();
  Coef c;
  if (y <= b[0]) {
    c.k = 0;
    c.c = static_cast<double>(y) / b[0];
  } else if (y >= b[n - 1]) {
    c.k = static_cast<int>(n - 1);
    c.c = static_cast<double>(y) / b[n - 1];
  } else {
    size_t k = static_cast<size_t>(std::upper_bound(b.begin(), b.end(), y) - b.begin()) - 1;
    c.k = static_cast<int>(k);
    c.scale = false;
    c.c = static_cast<double>(y - b[k]) / (b[k + 1] - b[k]);
  }
  return c;
}

double ProfileTables::min_rate(int d, int layer, int max_y, bool fwd_only) const {
  // t(y)/y is monotone between breakpoints (t is linear there), so the
  // minimum over [1, max_y] is at 1, max_y or a profiled size inside.
  auto rate = [&](int y) {
    double t = fwd_ms(d, layer, layer + 1, y);
    if (!fwd_only) t += bwd_ms(d, layer, layer + 1, y);
    return t / y;
  };
  double best = std::min(rate(1), rate(std::max(1, max_y)));
  for (int y : fwd_.batch[d])
    if (y >= 1 && y <= max_y) best = std::min(best, rate(y));
  return best;
}

double ProfileTables::min_bwd_rate(int d, int layer, int max_y) const {
  auto rate = [&](int y) { return bwd_ms(d, layer, layer + 1, y) / y; };
  double best = std::min(rate(1), rate(std::max(1, max_y)));
  for (int y : bwd_.batch[d])
    if (y >= 1 && y <= max_y) best = std::min(best, rate(y));
  return best;
}

}  // namespace asteroid::planner
