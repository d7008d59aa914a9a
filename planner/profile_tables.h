// The numbers of COST_MODEL.md in a form that is cheap to query: per-device
// stage times for any layer range and sample count (interpolated as the cost
// model says, from prefix sums over layers), range sums of weight and stash
// bytes, link bandwidths as a matrix and the planner's sorted device order.
// Built once from a cluster and a profile; immutable afterwards, so it may be
// shared between threads. Devices are numbered as in Cluster::devices.
// Also holds each device's measured wire-codec speeds (profile.json "codecs")
// and optimizer update times ("update_ms").
#pragma once

#include <string>
#include <vector>

#include "planner/types.h"

namespace asteroid::planner {

class ProfileTables {
 public:
  // Throws InputError (json_io.h) naming the device when a cluster device has
  // no profile or a profile table has the wrong shape.
  ProfileTables(const Cluster& cluster, const Profile& profile);

  const Cluster& cluster() const { return cluster_; }
  const Profile& profile() const { return profile_; }
  int device_count() const { return static_cast<int>(cluster_.devices.size()); }
  int layer_count() const { return layers_; }
  const std::string& id(int d) const { return cluster_.devices[d].id; }
  // Index of a device id, or throws std::invalid_argument naming it.
  int index(const std::string& id) const;

  // Time of layers [begin, end) on device d for y samples (y >= 0), ms.
  double fwd_ms(int d, int begin, int end, int y) const { return time(fwd_, d, begin, end, coef(d, y)); }
  double bwd_ms(int d, int begin, int end, int y) const { return time(bwd_, d, begin, end, coef(d, y)); }
  // Both at once (same numbers as the two calls above).
  void times(int d, int begin, int end, int y, double* fwd, double* bwd) const {
    Coef c = coef(d, y);
    *fwd = time(fwd_, d, begin, end, c);
    *bwd = time(bwd_, d, begin, end, c);
  }

  double weight_bytes(int begin, int end) const { return weight_[end] - weight_[begin]; }
  double stash_bytes(int begin, int end) const { return stash_[end] - stash_[begin]; }
  double out_bytes(int layer) const { return profile_.layers[layer].out_bytes; }
  double memory_bytes(int d) const { return cluster_.devices[d].memory_mb * 1048576.0; }
  // Mbit/s between two distinct devices.
  double bandwidth(int a, int b) const { return bw_[a * device_count() + b]; }

  // Measured speed of codec c on device d, MB/s of float32 input; 0 when the
  // profile has none. fp32 is never encoded: it always reads 0 and needs none.
  double encode_mb_s(int d, Codec c) const { return enc_[static_cast<size_t>(d) * kCodecCount + static_cast<size_t>(c)]; }
  double decode_mb_s(int d, Codec c) const { return dec_[static_cast<size_t>(d) * kCodecCount + static_cast<size_t>(c)]; }
  // fp32, or a codec whose encode and decode speeds device d has measured.
  bool has_codec(int d, Codec c) const {
    return c == Codec::fp32 || (encode_mb_s(d, c) > 0 && decode_mb_s(d, c) > 0);
  }
  static constexpr size_t kCodecCount = sizeof(wire_codec::kAllCodecs) / sizeof(wire_codec::kAllCodecs[0]);

  // Time of device d's update of layers [begin, end) with optimizer o after
  // a round, ms; 0 when the profile has none for d and o.
  double update_ms(int d, int begin, int end, OptimizerKind o) const {
    const double* p = &update_[(static_cast<size_t>(d) * kOptimizerCount + static_cast<size_t>(o)) * (layers_ + 1)];
    return p[end] - p[begin];
  }
  static constexpr size_t kOptimizerCount = sizeof(kOptimizerNames) / sizeof(kOptimizerNames[0]);

  // fwd+bwd of all layers at the largest batch size profiled by any device.
  double total_time(int d) const { return total_[d]; }
  // Devices by memory descending, then total_time ascending, then id.
  const std::vector<int>& sorted_order() const { return sorted_; }
  // Position of device d in sorted_order().
  int rank(int d) const { return rank_[d]; }
  // The k fastest devices (total_time, then id), listed in sorted_order().
  std::vector<int> fastest(int k) const;

  // min over integer y in [1, max_y] of (fwd+bwd)(d, layer, y) / y, and the
  // same for fwd alone: per-sample rates used by the search's lower bounds.
  double min_rate(int d, int layer, int max_y, bool fwd_only) const;
  // The same for the backward pass alone.
  double min_bwd_rate(int d, int layer, int max_y) const;
  // True when every device's per-layer times are non-decreasing in the batch
  // size, so that stage times are non-decreasing in y (Algorithm 1 is then
  // the exact min-max).
  bool monotone() const { return monotone_; }

 private:
  struct Table {
    std::vector<std::vector<int>> batch;        // [d][k]
    std::vector<std::vector<double>> prefix;    // [d][k * (L+1) + l]
  };
  // Where y falls among device d's profiled sizes: t = seg(k) * c when
  // scale is set (below the first or above the last size), else
  // t = seg(k) + (seg(k+1) - seg(k)) * c. Cached for small y.
  struct Coef {
    int k = 0;
    bool scale = true;
    double c = 0;
  };
  static constexpr int kCoefCache = 512;
  Coef coef(int d, int y) const {
    return y >= 0 && y < kCoefCache ? coef_[static_cast<size_t>(d) * kCoefCache + y] : make_coef(d, y);
  }
  Coef make_coef(int d, int y) const;
  double time(const Table& t, int d, int begin, int end, Coef c) const {
    const double* p = t.prefix[d].data() + static_cast<size_t>(c.k) * (layers_ + 1);
    double lo = p[end] - p[begin];
    if (c.scale) return lo * c.c;
    const double* q = p + (layers_ + 1);
    return lo + ((q[end] - q[begin]) - lo) * c.c;
  }
  std::vector<Coef> coef_;

  Cluster cluster_;
  Profile profile_;
  int layers_ = 0;
  Table fwd_, bwd_;
  std::vector<double> weight_, stash_, bw_, total_;
  std::vector<double> enc_, dec_;  // [d * kCodecCount + codec], 0: not measured
  std::vector<double> update_;      // [(d * kOptimizerCount + o) * (L+1) + l], prefix sums
  std::vector<int> sorted_, rank_, by_speed_;
  bool monotone_ = true;
};

}  // namespace asteroid::planner
