#include "planner/search.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <limits>
#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>
#include <unordered_map>

#include "messages/enum_names.h"
#include "planner/allocation.h"
#include "planner/baselines.h"

namespace asteroid::planner {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kTol = 1e-9;
constexpr int kCodecs = static_cast<int>(ProfileTables::kCodecCount);
inline int ci(Codec c) { return static_cast<int>(c); }

// Above this, a (partial) plan cannot reach T* within the tie tolerance.
inline bool over(double lower_bound, double incumbent) {
  return lower_bound > incumbent + kTol * std::fabs(incumbent);
}

// Makes room for `n` in a Pareto front (indices into `pool`): false when an
// entry is no worse than `n` in every key (`n` does not belong); else drops
// the entries `n` is no worse than and returns true.
template <typename Pool, typename T, typename NoWorse>
bool make_room(std::vector<int>& front, const Pool& pool, const T& n, NoWorse no_worse) {
  for (int id : front) {
    if (no_worse(pool[id], n)) return false;
  }
  front.erase(std::remove_if(front.begin(), front.end(), [&](int id) { return no_worse(n, pool[id]); }), front.end());
  return true;
}

// Per-sample rates of every device and layer for one micro-batch size.
struct Rates {
  std::vector<std::vector<double>> both, fwd, bwd;  // [device][layer]
  Rates(const ProfileTables& t, int b) {
    const int n = t.device_count(), l = t.layer_count();
    both.assign(n, std::vector<double>(l));
    fwd.assign(n, std::vector<double>(l));
    bwd.assign(n, std::vector<double>(l));
    for (int d = 0; d < n; ++d)
      for (int x = 0; x < l; ++x) {
        both[d][x] = t.min_rate(d, x, b, false);
        fwd[d][x] = t.min_rate(d, x, b, true);
        bwd[d][x] = t.min_bwd_rate(d, x, b);
      }
  }
};

// The all-reduce's bytes on the wire for every layer range and lossy
// codec, computed once per search (wire_bytes of the range's weights).
struct WireBytes {
  int l1 = 0;  // layers + 1
  std::vector<double> bytes;  // [(begin * l1 + end) * kCodecs + codec]
  WireBytes(const ProfileTables& t, const std::vector<Codec>& codecs, uint32_t block) : l1(t.layer_count() + 1) {
    bytes.assign(static_cast<size_t>(l1) * l1 * kCodecs, 0.0);
    for (int b = 0; b < l1; ++b)
      for (int e = b + 1; e < l1; ++e)
        for (Codec c : codecs)
          bytes[(static_cast<size_t>(b) * l1 + e) * kCodecs + ci(c)] = wire_bytes(c, t.weight_bytes(b, e), block);
  }
  double allreduce_bytes(int b, int e, Codec c) const { return bytes[(static_cast<size_t>(b) * l1 + e) * kCodecs + ci(c)]; }
};

// A Pareto entry: a pipeline suffix (the stage it starts with, and a link to
// the rest) summarised by what T_round needs from it:
//   v = max over its steps c of (M E_c + sum of E before c inside the suffix)
//   a = max over its steps s of (Ta_s - sum of Eb before s inside the suffix)
// plus the tie-break quantities (stage count, peak memory fraction) and,
// with lossy codecs, its first stage's codec terms (`side`).
struct Entry {
  double v = 0, a = 0, peak = 0;
  int stages = 0, parent = -1;
  int begin = 0, end = 0, h = 0, i = 0, inflight = 0;  // the first stage: layers, devices [h, i) of the set
  int side = -1;              // Side of the first stage (-1: no lossy codec in the search)
  Codec next = Codec::fp32;   // the boundary after the first stage
  Codec ar = Codec::fp32;     // the first stage's all-reduce
};

// What the transfer into a suffix needs from the suffix's first stage, per
// codec, for the activation of the layer in front of it: the slowest decode
// (forward) and encode (backward) of its group at its own samples, and
// their sum; infinity when a member has no speed for the codec. Equal
// Sides share one id (so that their entries compare as plain (v, a)).
struct Side {
  double dec[kCodecs], enc[kCodecs], sum[kCodecs];
};

// The entries of one search, by index. References stay valid while it
// grows (chunks, never moved), so an entry can be read while others are added.
class Arena {
 public:
  Entry& operator[](int i) { return chunks_[i >> kShift][i & kMask]; }
  const Entry& operator[](int i) const { return chunks_[i >> kShift][i & kMask]; }
  int size() const { return size_; }
  void push_back(const Entry& e) {
    if ((size_ & kMask) == 0) chunks_.push_back(std::make_unique<Entry[]>(kChunk));
    chunks_.back()[size_ & kMask] = e;
    ++size_;
  }

 private:
  static constexpr int kShift = 12, kChunk = 1 << kShift, kMask = kChunk - 1;
  std::vector<std::unique_ptr<Entry[]>> chunks_;
  int size_ = 0;
};

// Equal Sides get one id: a hash of their bits.
struct SideKeyHash {
  size_t operator()(const std::array<double, 2 * kCodecs>& k) const {
    size_t h = 1469598103934665603ull;
    for (double d : k) {
      uint64_t bits;
      std::memcpy(&bits, &d, sizeof bits);
      h = (h ^ bits) * 1099511628211ull;
    }
    return h;
  }
};

struct Outcome {
  bool found = false;
  double round = kInf, peak = kInf;
  int stages = 0;
  std::vector<Stage> plan_stages;
};

bool outcome_better(const Outcome& a, const Outcome& b) {
  if (!a.found) return false;
  if (!b.found) return true;
  return better_plan(a.round, a.stages, a.peak, b.round, b.stages, b.peak);
}

// Lower-bound tables of one (M, k). They stay valid when the incumbent
// falls (a smaller incumbent only makes them tighter), so the searches of
// one (M, k) share them and recompute only when the incumbent has fallen by
// more than 10% since.
struct BoundTables {
  std::vector<double> q_min, pf_min;
  std::vector<double> pb_min;  // with lossy codecs: the sum of Eb, as pf_min
  double prefix_incumbent = kInf;
  std::vector<int> min_stages;
  double stages_incumbent = kInf;
};

// The exact search for one chosen set (devices `dev`, in sorted order) and
// one M. `incumbent` is the best T_round known (shared across sets and M).
class SuffixSearch {
 public:
  // What a cell keeps:
  //   one:    one entry (the paper's Algorithm 2): fast, not exact; it only
  //           seeds the incumbent;
  //   value:  the Pareto set of (v, a): exact for T_round;
  //   staged: the Pareto set of (v, a, stages): exact for T_round under a
  //           limit on the number of stages.
  // With lossy codecs a cell keeps one front per Side of the entries'
  // first stages (the transfer into them depends on it).
  enum class Keep { one, value, staged };
  SuffixSearch(const ProfileTables& t, const Rates& rates, const std::vector<int>& dev, int m,
               int b, int k_opt, int min_group, int max_group, double* incumbent,
               SearchStats* stats, Keep keep, BoundTables* bounds, WirePolicy wire, uint32_t block,
               const WireBytes* wire_bytes)
      : t_(t), rates_(rates), dev_(dev), k_(static_cast<int>(dev.size())), l_(t.layer_count()),
        m_(m), b_(b), k_opt_(k_opt), min_group_(min_group), max_group_(max_group),
        incumbent_(incumbent), stats_(stats), keep_(keep), bounds_(*bounds),
        q_min_(bounds->q_min), pf_min_(bounds->pf_min), pb_min_(bounds->pb_min), min_stages_(bounds->min_stages),
        block_(block),
        wire_(wire_bytes) {
    qdim_ = std::min(m_, k_);
    prepare_codecs(wire);
    prepare();
  }

  // Restricts the search to plans of at most `max_stages` stages (use with
  // Keep::staged) whose every device stays below `peak_below` of its memory.
  void set_limits(int max_stages, double peak_below) {
    max_stages_ = max_stages;
    peak_below_ = peak_below;
    if (max_stages_ < std::numeric_limits<int>::max() &&
        (min_stages_.empty() || stale(bounds_.stages_incumbent))) {
      compute_min_stages();
      bounds_.stages_incumbent = *incumbent_;
    }
  }

  // A lower bound of T_round for any plan on this set within the incumbent
  // (infinity when there is none): the fluid bound, and the last stage,
  // which counts M times, behind the prefix bounds below.
  double set_lower_bound() {
    double fluid = m_ * b_ * rl_[idx_rl(l_, k_)] / k_;
    if (over(fluid, *incumbent_)) return fluid;
    if (q_min_.empty() || stale(bounds_.prefix_incumbent)) {
      compute_prefix_bounds();
      bounds_.prefix_incumbent = *incumbent_;
    }
    return std::max(fluid, last_stage_bound());
  }

  bool stale(double computed_under) const { return *incumbent_ < 0.9 * computed_under; }

  // REQUIRES: set_lower_bound() was called.
  Outcome run() {
    process(l_, k_);
    for (int a = l_ - 1; a >= 1; --a)
      for (int i = k_ - 1; i >= 1; --i) process(a, i);
    Outcome out;
    if (best_entry_ < 0) return out;
    out.found = true;
    out.round = best_round_;
    out.peak = best_peak_;
    out.stages = best_stages_;
    for (int e = best_entry_; e >= 0; e = arena_[e].parent) {
      const Entry& en = arena_[e];
      std::vector<int> group(dev_.begin() + en.h, dev_.begin() + en.i);
      StageAllocation alloc = allocate_samples(t_, group, en.begin, en.end, b_, en.inflight, k_opt_);
      Stage st;
      st.begin = en.begin;
      st.end = en.end;
      st.to_next = en.next;
      st.allreduce = en.ar;
      for (size_t x = 0; x < group.size(); ++x)
        st.devices.push_back({t_.id(group[x]), alloc.samples[x]});
      out.plan_stages.push_back(std::move(st));
    }
    return out;
  }

 private:
  size_t idx_rl(int a, int h) const { return static_cast<size_t>(a) * (k_ + 1) + h; }
  size_t idx3(int h, int i, int j) const {
    return (static_cast<size_t>(h) * (k_ + 1) + i) * (k_ + 1) + j;
  }
  size_t state(int a, int i, int c, int q) const {
    return ((static_cast<size_t>(a) * classes_total_ + class_offset_[i] + c) * qdim_) + (q - 1);
  }

  // The codecs this search may put on a boundary or an all-reduce: fp32 and
  // the policy's lossy codecs that some device of the set has speeds for.
  // Without any lossy one (`lossy_` false) every number below is the same
  // arithmetic as COST_MODEL.md's exact wire.
  void prepare_codecs(WirePolicy wire) {
    codecs_.push_back(Codec::fp32);
    for (Codec c : wire_codecs(wire)) {
      if (c == Codec::fp32) continue;
      bool someone = false;
      for (int d : dev_) someone = someone || t_.has_codec(d, c);
      if (someone) codecs_.push_back(c);
    }
    lossy_ = codecs_.size() > 1;
    wb_.assign(static_cast<size_t>(l_) * kCodecs, kInf);
    for (int x = 0; x < l_; ++x)
      for (Codec c : codecs_) wb_[static_cast<size_t>(x) * kCodecs + ci(c)] = wire_bytes(c, t_.out_bytes(x), block_);
    spd_enc_.assign(static_cast<size_t>(k_) * kCodecs, 0.0);
    spd_dec_.assign(spd_enc_.size(), 0.0);
    for (int x = 0; x < k_; ++x)
      for (Codec c : codecs_)
        if (c != Codec::fp32 && t_.has_codec(dev_[x], c)) {
          spd_enc_[static_cast<size_t>(x) * kCodecs + ci(c)] = t_.encode_mb_s(dev_[x], c);
          spd_dec_[static_cast<size_t>(x) * kCodecs + ci(c)] = t_.decode_mb_s(dev_[x], c);
        }
    // Prefix sums of the speeds over the set's order: the codec time of a
    // group is at least B bytes over the sum of its speeds (a device
    // without the codec counts 0: the group cannot use it anyway).
    sum_enc_.assign(static_cast<size_t>(k_ + 1) * kCodecs, 0.0);
    sum_dec_.assign(sum_enc_.size(), 0.0);
    for (int x = 0; x < k_; ++x)
      for (int c = 0; c < kCodecs; ++c) {
        sum_enc_[static_cast<size_t>(x + 1) * kCodecs + c] =
            sum_enc_[static_cast<size_t>(x) * kCodecs + c] + spd_enc_[static_cast<size_t>(x) * kCodecs + c];
        sum_dec_[static_cast<size_t>(x + 1) * kCodecs + c] =
            sum_dec_[static_cast<size_t>(x) * kCodecs + c] + spd_dec_[static_cast<size_t>(x) * kCodecs + c];
      }
    // For each group [h, i) and lossy codec: the member whose all-reduce
    // codec time is the largest (the same member for every W), -1 when a
    // member lacks the codec.
    const int k1 = k_ + 1;
    ar_slow_.assign(lossy_ ? static_cast<size_t>(k1) * k1 * kCodecs : 0, -1);
    for (int h = 0; lossy_ && h < k_; ++h)
      for (int i = h + 2; i <= k_; ++i)
        for (Codec c : codecs_) {
          if (c == Codec::fp32) continue;
          int slow = -1;
          double worst = -1;
          for (int x = h; x < i; ++x) {
            const double se = spd_enc_[static_cast<size_t>(x) * kCodecs + ci(c)];
            const double sd = spd_dec_[static_cast<size_t>(x) * kCodecs + ci(c)];
            if (!(se > 0 && sd > 0)) {
              slow = -1;
              break;
            }
            const double v = allreduce_codec_ms(1e6, i - h, se, sd);
            if (v > worst) {
              worst = v;
              slow = x;
            }
          }
          ar_slow_[(static_cast<size_t>(h) * k1 + i) * kCodecs + ci(c)] = slow;
        }
  }

  // Ta of weights `w` on group [h, i) in codec c (infinity when a member
  // lacks it): the evaluator's arithmetic.
  double ta_of(int h, int i, int a2, int a, Codec c) const {
    const int g = i - h;
    const double inner = inner_[h * (k_ + 1) + i];
    const double w = t_.weight_bytes(a2, a);
    if (c == Codec::fp32) return 2.0 * (g - 1) / g * w * 8 / 1e3 / inner;
    const int x = ar_slow_[(static_cast<size_t>(h) * (k_ + 1) + i) * kCodecs + ci(c)];
    if (x < 0) return kInf;
    // ring_allreduce_ms with the encoded bytes of the range looked up.
    const double bytes = wire_ ? wire_->allreduce_bytes(a2, a, c) : wire_bytes(c, w, block_);
    return 2.0 * (g - 1) / g * bytes * 8 / 1e3 / inner +
           allreduce_codec_ms(w, g, spd_enc_[static_cast<size_t>(x) * kCodecs + ci(c)],
                              spd_dec_[static_cast<size_t>(x) * kCodecs + ci(c)]);
  }
  // The smallest Ta over the usable codecs (ties to the more exact one),
  // which is what T_round wants (Ta only adds to it); 0 for a group of one.
  double ta_min(int h, int i, int a2, int a, Codec* codec = nullptr) const {
    Codec best_codec = Codec::fp32;
    double best = 0;
    if (i - h > 1) {
      best = ta_of(h, i, a2, a, Codec::fp32);
      for (size_t x = 1; x < codecs_.size(); ++x) {
        const double v = ta_of(h, i, a2, a, codecs_[x]);
        if (v < best) {
          best = v;
          best_codec = codecs_[x];
        }
      }
    }
    if (codec) *codec = best_codec;
    return best;
  }

  // Lower bounds of the transfer of layer l's output from a group inside
  // devices [x0, x1) to a group inside [y0, y1) over `bw` Mbit/s: *f of its
  // Ef, *fb of its Ef + Eb, over the usable codecs (link time of the
  // encoded bytes, plus B out bytes encoded and decoded at the summed speeds
  // of those devices). With the exact wire: COST_MODEL.md's transfer, *fb
  // twice *f.
  void transfer_bound(int l, double bw, int x0, int x1, int y0, int y1, double* f, double* fb,
                      double* b = nullptr) const {
    *f = *fb = kInf;
    if (b) *b = kInf;
    const double volume = b_ * t_.out_bytes(l) / 1e3;
    for (Codec c : codecs_) {
      const int x = ci(c);
      const double bt = b_ * wb_[static_cast<size_t>(l) * kCodecs + x] * 8 / 1e3 / bw;
      double tf = bt, tb = bt;
      if (c != Codec::fp32) {
        auto range = [&](const std::vector<double>& sum, int lo, int hi) {
          const double v = sum[static_cast<size_t>(hi) * kCodecs + x] - sum[static_cast<size_t>(lo) * kCodecs + x];
          return v > 0 ? volume / v : kInf;
        };
        tf = bt + range(sum_enc_, x0, x1) + range(sum_dec_, y0, y1);
        tb = bt + range(sum_enc_, y0, y1) + range(sum_dec_, x0, x1);
      }
      *f = std::min(*f, tf);
      *fb = std::min(*fb, tf + tb);
      if (b) *b = std::min(*b, tb);
    }
  }

  // ta_min for the search's bounds, cheaper: with lossy codecs, each
  // codec's Ta as A * (bytes on the wire) + B * W with the group's
  // coefficients, a hair under (rounding); with the exact wire, ta_min.
  double ta_bound(int h, int i, int a2, int a) const {
    if (!lossy_ || i - h < 2) return ta_min(h, i, a2, a);
    const size_t gi = static_cast<size_t>(h) * (k_ + 1) + i;
    const double w = t_.weight_bytes(a2, a);
    double best = ta_coef_[gi * kCodecs * 2] * w;  // fp32
    for (size_t k = 1; k < codecs_.size(); ++k) {
      const int c = ci(codecs_[k]);
      const double b = ta_coef_[(gi * kCodecs + c) * 2 + 1];
      if (!(b < kInf)) continue;
      const double bytes = wire_ ? wire_->allreduce_bytes(a2, a, codecs_[k]) : wire_bytes(codecs_[k], w, block_);
      best = std::min(best, ta_coef_[(gi * kCodecs + c) * 2] * bytes + b * w);
    }
    return best * (1 - 1e-12);
  }

  // The slowest encode and decode of `ys[0..g)` samples of `out` bytes each
  // on devices [h, h + g), per codec (infinity when a member lacks it).
  void group_codec_ms(int h, int g, const int* ys, double out, double* enc, double* dec) const {
    for (Codec c : codecs_) {
      const int x = ci(c);
      enc[x] = dec[x] = 0;
      if (c == Codec::fp32) continue;
      for (int j = 0; j < g; ++j) {
        const double se = spd_enc_[static_cast<size_t>(h + j) * kCodecs + x];
        const double sd = spd_dec_[static_cast<size_t>(h + j) * kCodecs + x];
        if (!(se > 0 && sd > 0)) {
          enc[x] = dec[x] = kInf;
          break;
        }
        enc[x] = std::max(enc[x], codec_ms(ys[j] * out, se));
        dec[x] = std::max(dec[x], codec_ms(ys[j] * out, sd));
      }
    }
  }

  void prepare() {
    const int k1 = k_ + 1;
    // Prefix lower bounds: sum over layers [0, a) of the best rate among devices [0, h).
    rl_.assign(static_cast<size_t>(l_ + 1) * k1, 0.0);
    rfl_.assign(rl_.size(), 0.0);
    rbl_.assign(rl_.size(), 0.0);
    std::vector<double> mn(l_, kInf), mnf(l_, kInf), mnb(l_, kInf);
    for (int h = 1; h <= k_; ++h) {
      int d = dev_[h - 1];
      for (int x = 0; x < l_; ++x) {
        mn[x] = std::min(mn[x], rates_.both[d][x]);
        mnf[x] = std::min(mnf[x], rates_.fwd[d][x]);
        mnb[x] = std::min(mnb[x], rates_.bwd[d][x]);
      }
      for (int a = 0; a < l_; ++a) {
        rl_[idx_rl(a + 1, h)] = rl_[idx_rl(a, h)] + mn[a];
        rfl_[idx_rl(a + 1, h)] = rfl_[idx_rl(a, h)] + mnf[a];
        rbl_[idx_rl(a + 1, h)] = rbl_[idx_rl(a, h)] + mnb[a];
      }
    }
    // Per-device prefix sums of rates (stage bound for non-monotone profiles).
    rate_prefix_.assign(static_cast<size_t>(k_) * (l_ + 1), 0.0);
    rate_prefix_f_.assign(rate_prefix_.size(), 0.0);
    rate_prefix_b_.assign(rate_prefix_.size(), 0.0);
    for (int x = 0; x < k_; ++x)
      for (int a = 0; a < l_; ++a) {
        rate_prefix_[x * (l_ + 1) + a + 1] = rate_prefix_[x * (l_ + 1) + a] + rates_.both[dev_[x]][a];
        rate_prefix_f_[x * (l_ + 1) + a + 1] = rate_prefix_f_[x * (l_ + 1) + a] + rates_.fwd[dev_[x]][a];
        rate_prefix_b_[x * (l_ + 1) + a + 1] = rate_prefix_b_[x * (l_ + 1) + a] + rates_.bwd[dev_[x]][a];
      }
    // Cross bandwidth: min over [h, i) x [i, j); inner: min over pairs of [h, i).
    cross_.assign(static_cast<size_t>(k1) * k1 * k1, kInf);
    for (int i = 1; i < k_; ++i)
      for (int h = i - 1; h >= 0; --h) {
        double m = kInf;
        for (int j = i + 1; j <= k_; ++j) {
          m = std::min(m, t_.bandwidth(dev_[h], dev_[j - 1]));
          cross_[idx3(h, i, j)] = std::min(m, h + 1 < i ? cross_[idx3(h + 1, i, j)] : kInf);
        }
      }
    inner_.assign(static_cast<size_t>(k1) * k1, kInf);
    for (int h = 0; h < k_; ++h)
      for (int i = h + 2; i <= k_; ++i) {
        double m = inner_[h * k1 + i - 1];
        for (int x = h; x < i - 1; ++x) m = std::min(m, t_.bandwidth(dev_[x], dev_[i - 1]));
        inner_[h * k1 + i] = m;
      }
    // Classes of j for each i: j's whose first group [i, j) has the same
    // bandwidth to every earlier device give the same transfer times.
    class_of_.assign(static_cast<size_t>(k1) * k1, -1);
    class_rep_.assign(k1, {});
    class_offset_.assign(k1, 0);
    classes_total_ = 0;
    for (int i = 1; i < k_; ++i) {
      class_offset_[i] = classes_total_;
      std::vector<double> prev(i, kInf), cur(i, kInf);
      int c = -1;
      for (int j = i + 1; j <= k_; ++j) {
        for (int x = 0; x < i; ++x) cur[x] = std::min(cur[x], t_.bandwidth(dev_[x], dev_[j - 1]));
        if (c < 0 || cur != prev) {
          ++c;
          class_rep_[i].push_back(j);
          prev = cur;
        }
        class_of_[i * k1 + j] = c;
      }
      classes_total_ += c + 1;
    }
    fronts_.assign(static_cast<size_t>(l_ + 1) * std::max(classes_total_, 1) * qdim_, {});
    if (lossy_) {
      lfronts_.assign(fronts_.size(), {});
      floor_.assign(fronts_.size(), -1.0);
      pb_cache_.assign(static_cast<size_t>(k1) * k1 * 2, {});
    }
    // ta_bound's coefficients (needs inner_).
    ta_coef_.assign(lossy_ ? static_cast<size_t>(k1) * k1 * kCodecs * 2 : 0, kInf);
    for (int h = 0; lossy_ && h < k_; ++h)
      for (int i = h + 2; i <= k_; ++i) {
        const int g = i - h;
        const size_t gi = static_cast<size_t>(h) * k1 + i;
        const double ring = 2.0 * (g - 1) / g * 8 / 1e3 / inner_[gi];  // ms per byte on the wire
        for (Codec c : codecs_) {
          const int x = c == Codec::fp32 ? -1 : ar_slow_[gi * kCodecs + ci(c)];
          if (c != Codec::fp32 && x < 0) continue;
          ta_coef_[(gi * kCodecs + ci(c)) * 2] = ring;
          ta_coef_[(gi * kCodecs + ci(c)) * 2 + 1] =
              c == Codec::fp32 ? 0.0
                               : allreduce_codec_ms(1.0, g, spd_enc_[static_cast<size_t>(x) * kCodecs + ci(c)],
                                                    spd_dec_[static_cast<size_t>(x) * kCodecs + ci(c)]);
        }
      }

    mem_.resize(k_);
    for (int x = 0; x < k_; ++x) mem_[x] = t_.memory_bytes(dev_[x]);
  }

  // `prefix_stages`: at least how many stages the plan still needs in front.
  // `rep`: the class representative end of the new entry's first group
  // (for cell_floor).
  void insert(size_t cell, const Entry& n, int prefix_stages, int rep = 0) {
    std::vector<int>& front = fronts_[cell];
    switch (keep_) {
      case Keep::one:
        if (!front.empty()) {
          Entry& e = arena_[front[0]];  // not referenced yet: cells are read only once complete
          if (better_plan(n.v + n.a, n.stages, n.peak, e.v + e.a, e.stages, e.peak)) e = n;
        } else {
          push(front, front.end(), n);
        }
        return;
      case Keep::value: {
        if (lossy_) {
          insert_lossy(lfronts_[cell], n, cell_floor(cell, n.begin, n.h, rep));
          return;
        }
        // Sorted by v ascending, hence a strictly descending.
        auto pos = std::lower_bound(front.begin(), front.end(), n.v,
                                    [&](int id, double v) { return arena_[id].v < v; });
        if (pos != front.begin() && arena_[*(pos - 1)].a <= n.a) return;
        if (pos != front.end() && arena_[*pos].v == n.v && arena_[*pos].a <= n.a) return;
        auto last = pos;
        while (last != front.end() && arena_[*last].a >= n.a) ++last;
        pos = front.erase(pos, last);
        push(front, pos, n);
        return;
      }
      case Keep::staged:
        if (too_many_stages(n.stages + prefix_stages)) return;
        if (lossy_) {
          insert_lossy(lfronts_[cell], n, cell_floor(cell, n.begin, n.h, rep));
          return;
        }
        if (!make_room(front, arena_, n, [](const Entry& x, const Entry& y) {
              return x.v <= y.v && x.a <= y.a && x.stages <= y.stages;
            }))
          return;
        push(front, front.end(), n);
        return;
    }
  }

  // With lossy codecs a cell keeps one staircase (sorted by v, a strictly
  // descending) per Side, and for Keep::staged per (Side, stage count).
  struct SubFront {
    int side;
    int stages;  // Keep::staged; 0 for Keep::value
    std::vector<int> ids;
  };
  // The entry of staircase f with the largest v <= v (it has the smallest
  // a among those), or nullptr.
  const Entry* stair_floor(const std::vector<int>& f, double v) const {
    auto pos = std::upper_bound(f.begin(), f.end(), v, [&](double x, int id) { return x < arena_[id].v; });
    return pos == f.begin() ? nullptr : &arena_[*(pos - 1)];
  }
  // With lossy codecs: a lower bound of the backward time PB of every
  // prefix in front of cell `cell` (layers [0, a) on devices [0, h), the
  // stage after it on [h, rep) for its bandwidth): its backward passes
  // and transfers (the prefix DP's fluid bound, pb_min_) and the backward
  // transfer into the suffix (its fewest bytes, fluid codec time).
  // T_round = max(V', PE' + v) + max(A', a - PB') with A' >= 0, so a suffix's
  // a at or under this bound never counts: entries compare with
  // a_eff = max(a, floor) (exact, and it cuts the Pareto sets of (v, a)
  // that codec branches make long).
  double cell_floor(size_t cell, int a, int h, int rep) {
    double& f = floor_[cell];
    if (f < 0) {
      f = 0;
      if (h > 0) {
        const double bw = cross_[idx3(h - 1, h, rep)];
        const double volume = b_ * t_.out_bytes(a - 1) / 1e3;
        double tb = kInf;
        for (Codec c : codecs_) {
          const int x = ci(c);
          const double bt = b_ * wb_[static_cast<size_t>(a - 1) * kCodecs + x] * 8 / 1e3 / bw;
          double v = bt;
          if (c != Codec::fp32) {
            const double se = sum_enc_[static_cast<size_t>(k_) * kCodecs + x] - sum_enc_[static_cast<size_t>(h) * kCodecs + x];
            const double sd = sum_dec_[static_cast<size_t>(h) * kCodecs + x];
            v = se > 0 && sd > 0 ? bt + volume / se + volume / sd : kInf;
          }
          tb = std::min(tb, v);
        }
        // The backward passes and transfers of the prefix: the prefix DP's
        // bound when it has one, else the fluid one over all h devices.
        double pb = b_ * rbl_[idx_rl(a, h)] / h;
        const size_t at = static_cast<size_t>(a) * (k_ + 1) + h;
        if (at < pb_min_.size() && pb_min_[at] < kInf) pb = std::max(pb, pb_min_[at]);
        f = (pb + tb) * (1 - 1e-12);
      }
    }
    return f;
  }

  // Entries are compared only with entries of the same Side (and, under a
  // stage limit, with those of no more stages): a front per Side is exact
  // (their transfers in are the same), and comparing across Sides would
  // drop only about 1% more (measured) at a cost growing with the Sides.
  void insert_lossy(std::vector<SubFront>& cell, const Entry& n, double floor) {
    const int stages = keep_ == Keep::staged ? n.stages : 0;
    const double na = std::max(n.a, floor);
    SubFront* own = nullptr;
    for (SubFront& sf : cell)
      if (sf.side == n.side && sf.stages == stages) own = &sf;
    // Is n dominated? (Its own front first: the likeliest.)
    if (own) {
      const Entry* e = stair_floor(own->ids, n.v);
      if (e && e->a <= na) return;
    }
    if (stages > 0)
      for (SubFront& sf : cell) {
        if (&sf == own || sf.side != n.side || sf.stages > stages) continue;
        const Entry* e = stair_floor(sf.ids, n.v);
        if (e && e->a <= na) return;
      }
    // Drop what n dominates.
    for (SubFront& sf : cell) {
      if (sf.side != n.side || sf.stages < stages) continue;
      auto pos = std::lower_bound(sf.ids.begin(), sf.ids.end(), n.v,
                                  [&](int id, double v) { return arena_[id].v < v; });
      auto last = pos;
      while (last != sf.ids.end() && std::max(arena_[*last].a, floor) >= na) ++last;
      sf.ids.erase(pos, last);
    }
    if (!own) {
      cell.push_back({n.side, stages, {}});
      own = &cell.back();
    }
    auto pos = std::lower_bound(own->ids.begin(), own->ids.end(), n.v,
                                [&](int id, double v) { return arena_[id].v < v; });
    push(own->ids, pos, n);
  }
  void push(std::vector<int>& front, std::vector<int>::iterator pos, const Entry& n) {
    arena_.push_back(n);
    front.insert(pos, static_cast<int>(arena_.size()) - 1);
    ++stats_->entries;
  }

  // At least how many stages a plan needs for layers [0, a) on devices
  // [0, h) if T_round is to stay within the incumbent (1 when not computed).
  int min_stages(int a, int h) const {
    if (h == 0) return 0;
    return min_stages_.empty() ? 1 : min_stages_[static_cast<size_t>(a) * (k_ + 1) + h];
  }

  // A necessary condition for stage [a2, a) on devices [h, i) in a plan
  // within the incumbent: it fits in memory with one micro-batch in flight
  // and M E + Ta <= T (E bounded below by the min-max split, or the fluid bound
  // when profiles are not monotone). Monotone: true for [a2, a) implies
  // true for every shorter range.
  bool stage_possible(int a2, int a, int h, int i, std::vector<int>& y) const {
    const int g = i - h;
    const double fixed = t_.weight_bytes(a2, a) * (2 + k_opt_);
    const double stash = t_.stash_bytes(a2, a);
    for (int x = h; x < i; ++x)
      if (fixed + stash > mem_[x]) return false;
    const double ta = ta_bound(h, i, a2, a);
    double bound;
    if (t_.monotone()) {
      greedy_split(t_, &dev_[h], g, a2, a, b_, nullptr, y.data());
      bound = 0;
      for (int x = 0; x < g; ++x) {
        double f, bw;
        t_.times(dev_[h + x], a2, a, y[x], &f, &bw);
        bound = std::max(bound, f + bw);
      }
    } else {
      double inv = 0;
      for (int x = h; x < i; ++x) {
        const double* rp = &rate_prefix_[x * (l_ + 1)];
        double rho = rp[a] - rp[a2];
        inv += rho > 0 ? 1.0 / rho : kInf;
      }
      bound = inv > 0 ? b_ / inv : 0;
    }
    return !over(m_ * bound + ta, *incumbent_);
  }

  // min_stages for every (a, h): a DP over prefixes with a sliding-window
  // minimum, the valid first layers of a stage found by two pointers.
  void compute_min_stages() {
    const int kBig = 1 << 29;
    const size_t k1 = k_ + 1;
    min_stages_.assign(static_cast<size_t>(l_ + 1) * k1, kBig);
    min_stages_[0] = 0;
    std::vector<int> y(k_);
    std::vector<int> window;
    for (int h = 1; h <= k_; ++h)
      for (int h2 = h - 1; h2 >= 0 && h - h2 <= max_group_; --h2) {
        const int g = h - h2;
        if (g > b_) break;
        if (g < min_group_) continue;
        window.clear();
        size_t head = 0;
        int lo = 0;
        for (int a = 1; a <= l_; ++a) {
          const int add = a - 1;
          const int v = min_stages_[add * k1 + h2];
          while (window.size() > head && min_stages_[window.back() * k1 + h2] >= v) window.pop_back();
          window.push_back(add);
          while (lo < a && !stage_possible(lo, a, h2, h, y)) ++lo;
          while (head < window.size() && window[head] < lo) ++head;
          if (head < window.size()) {
            int cand = min_stages_[window[head] * k1 + h2] + 1;
            int& cell = min_stages_[a * k1 + h];
            cell = std::min(cell, cand);
          }
        }
      }
  }

  // True when a plan that will have at least `stages` stages is over the limit.
  bool too_many_stages(int stages) const { return stages > max_stages_; }

  void complete(const Entry& n) {
    ++stats_->complete_plans;
    if (too_many_stages(n.stages)) return;
    double round = n.v + n.a;
    if (best_entry_ >= 0 &&
        !better_plan(round, n.stages, n.peak, best_round_, best_stages_, best_peak_))
      return;
    arena_.push_back(n);
    best_entry_ = static_cast<int>(arena_.size()) - 1;
    best_round_ = round;
    best_stages_ = n.stages;
    best_peak_ = n.peak;
    *incumbent_ = std::min(*incumbent_, round);
  }

  struct Alive {
    int c = 0, q = 0;
    double min_v = 0;  // smallest v among the entries
    double tau = 0;    // lower bound of Ef + Eb of the transfer into this suffix from a group ending at i (set per h)
    double tail = 0;   // lower bound of that Ef + Eb plus v of an entry (set per h)
    double bt[kCodecs] = {};  // its link time per codec (bytes over bandwidth, no codec time)
    // Lossy codecs: min over the entries of (receiving Side sum + v), per
    // codec (fp32: min_v); with the sender's codec time, a bound on E + v
    // of the transfer into this suffix and the suffix.
    double side_v[kCodecs] = {};
    std::vector<int> entries;
  };

  // Lower bounds on the forward (pf) and forward+backward (pe) time of a
  // prefix that runs layers [0, a) on devices [0, h) in front of a stage on
  // devices [h, i), including the transfer into that stage, and on T_round
  // from the prefix alone (t).
  struct PrefixBound {
    double pf = 0, pe = 0, t = 0;
  };
  // A prefix bound from its transfer bounds into the next stage: forward
  // (tau_f) and forward plus backward (tau_fb).
  PrefixBound prefix_bound_with(int a, int h, double tau_f, double tau_fb) const {
    PrefixBound p;
    const double work = b_ * rl_[idx_rl(a, h)] / h;
    const size_t cell = static_cast<size_t>(a) * (k_ + 1) + h;
    p.pf = pf_min_[cell] + tau_f;
    p.pe = q_min_[cell] + tau_fb;
    p.t = std::max(m_ * std::max(work, tau_fb), p.pe);
    return p;
  }
  // `y_hi`: the stage's group is [h, i) for its bandwidth, but may end
  // anywhere up to y_hi for its codec speeds (a cell's class representative
  // i stands for every group end with the same bandwidths).
  PrefixBound prefix_bound(int a, int h, int i, int y_hi) const {
    if (h == 0) return {};
    // The prefix's last group contains device h-1, so the bandwidth into
    // [h, i) is at most its best link into that group.
    double tau_f, tau_fb;
    if (lossy_) {  // cached per (h, i, y_hi): many codecs to go through
      std::vector<double>& cache = pb_cache_[(static_cast<size_t>(h) * (k_ + 1) + i) * 2 + (y_hi == i ? 0 : 1)];
      if (cache.empty()) cache.assign(2 * static_cast<size_t>(l_ + 1), -1.0);
      if (cache[2 * a] < 0) transfer_bound(a - 1, cross_[idx3(h - 1, h, i)], 0, h, h, y_hi, &cache[2 * a], &cache[2 * a + 1]);
      tau_f = cache[2 * a];
      tau_fb = cache[2 * a + 1];
    } else {
      transfer_bound(a - 1, cross_[idx3(h - 1, h, i)], 0, h, h, y_hi, &tau_f, &tau_fb);
    }
    return prefix_bound_with(a, h, tau_f, tau_fb);
  }
  // prefix_bound(a, h, i, ...) for the entries of one Side: the transfer
  // into them with their own receiving codec time (decode forward, encode
  // backward) instead of a bound.
  PrefixBound prefix_bound_side(int a, int h, int i, const Side& sy) const {
    if (h == 0) return {};
    const double bw = cross_[idx3(h - 1, h, i)];
    const double volume = b_ * t_.out_bytes(a - 1) / 1e3;
    double tau_f = kInf, tau_fb = kInf;
    for (Codec c : codecs_) {
      const int x = ci(c);
      const double bt = b_ * wb_[static_cast<size_t>(a - 1) * kCodecs + x] * 8 / 1e3 / bw;
      double tf = bt, tb = bt;
      if (c != Codec::fp32) {
        const double se = sum_enc_[static_cast<size_t>(h) * kCodecs + x];  // the sender is in [0, h)
        const double sd = sum_dec_[static_cast<size_t>(h) * kCodecs + x];
        tf = se > 0 ? bt + volume / se + sy.dec[x] : kInf;
        tb = sd > 0 ? bt + sy.enc[x] + volume / sd : kInf;
      }
      tau_f = std::min(tau_f, tf);
      tau_fb = std::min(tau_fb, tf + tb);
    }
    return prefix_bound_with(a, h, tau_f, tau_fb);
  }

  // Lower bounds over every prefix that runs layers [0, a) on devices
  // [0, h) within the incumbent, by a DP over such prefixes with the fluid
  // bound for each stage's Ef and E (B / sum of 1/rate over the group: no
  // split does better), the exact all-reduce time Ta (in its fastest codec),
  // and each transfer at the best bandwidth it could have, in the codec with
  // the fewest bytes and without codec time:
  //   pf_min_: sum of Ef over its steps;
  //   q_min_:  min over its stages s of (sum of Ef before s + Ta_s + sum of
  //            E from s on). T_round >= q + v of the suffix, because
  //            T_round >= (PE + v) + (Ta_s - PB_s) for every stage s.
  void compute_prefix_bounds() {
    const size_t k1 = k_ + 1;
    pf_min_.assign(static_cast<size_t>(l_ + 1) * k1, kInf);
    q_min_.assign(pf_min_.size(), kInf);
    pf_min_[0] = q_min_[0] = 0;
    if (lossy_) {
      pb_min_.assign(pf_min_.size(), kInf);
      pb_min_[0] = 0;
    }
    std::vector<double> tau_tab(l_ + 1), tau_fb_tab(l_ + 1), tau_b_tab(l_ + 1);
    for (int h = 1; h < k_; ++h)
      for (int h2 = h - 1; h2 >= 0 && h - h2 <= max_group_; --h2) {
        const int g = h - h2;
        if (g > b_) break;
        if (g < min_group_) continue;
        double mem_min = kInf;
        for (int x = h2; x < h; ++x) mem_min = std::min(mem_min, mem_[x]);
        // The transfer into [h2, h) after layer a2 - 1, for every a2.
        if (h2 > 0)
          for (int a2 = 1; a2 < l_; ++a2)
            transfer_bound(a2 - 1, cross_[idx3(h2 - 1, h2, h)], 0, h2, h2, h, &tau_tab[a2], &tau_fb_tab[a2],
                           &tau_b_tab[a2]);
        for (int a = 1; a < l_; ++a) {
          const int a_hi = h2 == 0 ? 0 : a - 1;
          const int a_lo = h2 == 0 ? 0 : 1;
          double& pf_cell = pf_min_[static_cast<size_t>(a) * k1 + h];
          double& q_cell = q_min_[static_cast<size_t>(a) * k1 + h];
          for (int a2 = a_hi; a2 >= a_lo; --a2) {
            const double w = t_.weight_bytes(a2, a);
            if (w * (2 + k_opt_) + t_.stash_bytes(a2, a) > mem_min) break;
            const double ta = ta_bound(h2, h, a2, a);
            double inv = 0, invf = 0;
            for (int x = h2; x < h; ++x) {
              const double* rp = &rate_prefix_[x * (l_ + 1)];
              const double* rf = &rate_prefix_f_[x * (l_ + 1)];
              double rho = rp[a] - rp[a2], rhof = rf[a] - rf[a2];
              inv += rho > 0 ? 1.0 / rho : kInf;
              invf += rhof > 0 ? 1.0 / rhof : kInf;
            }
            const double e = inv > 0 ? b_ / inv : 0;
            const double ef = invf > 0 ? b_ / invf : 0;
            // T >= M E_s + Ta_s for every stage; longer stages only grow.
            if (over(m_ * e + ta, *incumbent_)) break;
            const size_t prev = static_cast<size_t>(a2) * k1 + h2;
            if (pf_min_[prev] == kInf) continue;
            const double tau = h2 > 0 ? tau_tab[a2] : 0.0, tau_fb = h2 > 0 ? tau_fb_tab[a2] : 0.0;
            pf_cell = std::min(pf_cell, pf_min_[prev] + tau + ef);
            q_cell = std::min({q_cell, pf_min_[prev] + tau + e + ta, q_min_[prev] + tau_fb + e});
            if (lossy_) {
              double invb = 0;
              for (int x = h2; x < h; ++x) {
                const double* rb = &rate_prefix_b_[x * (l_ + 1)];
                const double rho = rb[a] - rb[a2];
                invb += rho > 0 ? 1.0 / rho : kInf;
              }
              double& pb_cell = pb_min_[static_cast<size_t>(a) * k1 + h];
              pb_cell = std::min(pb_cell, pb_min_[prev] + (h2 > 0 ? tau_b_tab[a2] : 0.0) + (invb > 0 ? b_ / invb : 0));
            }
          }
        }
      }
  }

  // min over last stages [a2, L) on [h2, k) of the prefix bound in front
  // plus M E + Ta of that stage (T >= M E_last + PE_last + (Ta_s - PB_s)).
  double last_stage_bound() const {
    const size_t k1 = k_ + 1;
    double best = kInf;
    for (int h2 = k_ - 1; h2 >= 0 && k_ - h2 <= max_group_; --h2) {
      const int g = k_ - h2;
      if (g > b_) break;
      if (g < min_group_) continue;
      double mem_min = kInf;
      for (int x = h2; x < k_; ++x) mem_min = std::min(mem_min, mem_[x]);
      for (int a2 = h2 == 0 ? 0 : l_ - 1; a2 >= (h2 == 0 ? 0 : 1); --a2) {
        const double w = t_.weight_bytes(a2, l_);
        if (w * (2 + k_opt_) + t_.stash_bytes(a2, l_) > mem_min) break;
        const double ta = ta_bound(h2, k_, a2, l_);
        double inv = 0;
        for (int x = h2; x < k_; ++x) {
          const double* rp = &rate_prefix_[x * (l_ + 1)];
          double rho = rp[l_] - rp[a2];
          inv += rho > 0 ? 1.0 / rho : kInf;
        }
        const double e = inv > 0 ? b_ / inv : 0;
        if (over(m_ * e + ta, *incumbent_)) break;
        const size_t prev = static_cast<size_t>(a2) * k1 + h2;
        if (pf_min_[prev] == kInf) continue;
        double tau = 0, tau_fb = 0;
        if (h2 > 0) transfer_bound(a2 - 1, cross_[idx3(h2 - 1, h2, k_)], 0, h2, h2, k_, &tau, &tau_fb);
        best = std::min({best, pf_min_[prev] + tau + m_ * e + ta, q_min_[prev] + tau_fb + m_ * e});
      }
    }
    return best;
  }

  bool prune(const PrefixBound& p, double v, double a) const {
    return over(p.pf + v + a, *incumbent_) || over(p.pe + v, *incumbent_);
  }

  // Extends every suffix that starts at layer a with devices [i, k) by one
  // more stage in front of it. a == l_ && i == k_ is the empty suffix.
  // A new stage's group and range at one K (in-flight micro-batches).
  struct PerK {
    bool ok = false;
    double ef = 0, eb = 0, peak = 0;
    std::vector<int> y;  // the split (with lossy codecs)
    // Lossy codecs: the group's slowest encode of its activations and
    // decode of their gradients at the boundary behind it, and its Side for
    // the boundary in front of it (made when first needed).
    double enc[kCodecs] = {}, dec[kCodecs] = {};
    int side = -1;
  };

  void process(int a, int i) {
    const bool empty = (a == l_);
    std::vector<Alive> alive;
    if (empty) {
      alive.emplace_back();
    } else {
      const int nc = static_cast<int>(class_rep_[i].size());
      for (int c = 0; c < nc; ++c) {
        const PrefixBound pb = prefix_bound(a, i, class_rep_[i][c], k_);
        for (int q = 1; q <= qdim_; ++q) {
          const size_t cell = state(a, i, c, q);
          std::vector<int>& f = fronts_[cell];
          if (lossy_)  // the entries of every Side's front
            for (SubFront& sf : lfronts_[cell]) f.insert(f.end(), sf.ids.begin(), sf.ids.end());
          if (f.empty()) continue;
          Alive al;
          al.c = c;
          al.q = q;
          al.min_v = kInf;
          for (double& x : al.side_v) x = kInf;
          if (!over(pb.t, *incumbent_)) {
            int side = -1;
            PrefixBound ps = pb;
            for (int id : f) {
              const Entry& e = arena_[id];
              // With lossy codecs the bound of each Side's entries counts
              // their receiving codec time exactly.
              if (lossy_ && e.side != side) {
                side = e.side;
                ps = prefix_bound_side(a, i, class_rep_[i][c], sides_[side]);
              }
              if (prune(ps, e.v, e.a) || too_many_stages(e.stages + min_stages(a, i))) continue;
              al.entries.push_back(id);
              al.min_v = std::min(al.min_v, e.v);
              if (lossy_)
                for (Codec x : codecs_) {
                  const double sum = x == Codec::fp32 ? 0.0 : sides_[e.side].sum[ci(x)];
                  al.side_v[ci(x)] = std::min(al.side_v[ci(x)], sum + e.v);
                }
            }
          }
          std::vector<int>().swap(f);  // processed once; free the memory
          if (lossy_) std::vector<SubFront>().swap(lfronts_[cell]);
          if (!al.entries.empty()) alive.push_back(std::move(al));
        }
      }
      if (alive.empty()) return;
    }
    // Which K (in-flight micro-batches) the new stage may need.
    std::vector<int> need_list;
    for (const Alive& al : alive) need_list.push_back(std::min(m_, al.q + 1));
    std::sort(need_list.begin(), need_list.end());
    need_list.erase(std::unique(need_list.begin(), need_list.end()), need_list.end());
    const int min_k = need_list.front();

    // Under a stage limit, a stage with devices in front of it is useful
    // only if the shortest suffix here plus it plus the prefix fit the limit.
    int fewest_stages = std::numeric_limits<int>::max();
    for (const Alive& al : alive) {
      if (empty) fewest_stages = 0;
      for (int id : al.entries) fewest_stages = std::min(fewest_stages, arena_[id].stages);
    }
    std::vector<int> y0(k_), y(k_), caps(k_);
    std::vector<PerK> per_k(need_list.size());
    const bool monotone = t_.monotone();
    struct Link {
      double tf, tb;  // the transfer's Ef and Eb in this codec
      Codec codec;
    };
    std::vector<Link> links;

    for (int h = i - 1; h >= 0 && i - h <= max_group_; --h) {
      const int g = i - h;
      if (g > b_) break;
      if (g < min_group_) continue;
      const int* grp = &dev_[h];
      const double* mem = &mem_[h];
      // Transfers from [h, i) into each alive suffix: the link time per
      // codec; the cheapest (fewest bytes, no codec time) bounds every
      // entry this group can make.
      double min_tail = 0;
      if (!empty) {
        min_tail = kInf;
        for (Alive& al : alive) {
          const double bw = cross_[idx3(h, i, class_rep_[i][al.c])];
          for (Codec c : codecs_)
            al.bt[ci(c)] = b_ * wb_[static_cast<size_t>(a - 1) * kCodecs + ci(c)] * 8 / 1e3 / bw;
          if (lossy_) {
            // E of the transfer + v of the suffix, per codec: the link both
            // ways, this group's codec time (fluid), the suffix's (exact).
            al.tail = kInf;
            const double volume = b_ * t_.out_bytes(a - 1) / 1e3;
            for (Codec c : codecs_) {
              const int x = ci(c);
              double tail = 2 * al.bt[x] + al.side_v[x];
              if (c != Codec::fp32) {
                const double se = sum_enc_[static_cast<size_t>(i) * kCodecs + x] - sum_enc_[static_cast<size_t>(h) * kCodecs + x];
                const double sd = sum_dec_[static_cast<size_t>(i) * kCodecs + x] - sum_dec_[static_cast<size_t>(h) * kCodecs + x];
                tail += se > 0 && sd > 0 ? volume / se + volume / sd : kInf;
              }
              al.tail = std::min(al.tail, tail);
            }
          } else {
            double tau_f;
            transfer_bound(a - 1, bw, h, i, i, k_, &tau_f, &al.tau);
            al.tail = al.tau + al.min_v;
          }
          min_tail = std::min(min_tail, al.tail);
        }
      }
      if (h > 0 && too_many_stages(fewest_stages + 2)) continue;
      const int a_hi = (h == 0) ? 0 : a - 1;
      const int a_lo = (h == 0) ? 0 : 1;
      for (int a2 = a_hi; a2 >= a_lo; --a2) {
        if (h > 0 && too_many_stages(fewest_stages + 1 + min_stages(a2, h))) continue;
        const PrefixBound pb = prefix_bound(a2, h, i, i);
        if (over(pb.t, *incumbent_) || over(pb.pe + min_tail, *incumbent_)) continue;
        const double w = t_.weight_bytes(a2, a);
        const double fixed = w * (2 + k_opt_);
        const double stash = t_.stash_bytes(a2, a);
        // T >= M E_s + Ta_s for every stage s, and both grow with the range.
        Codec ar_fast = Codec::fp32;
        const double ta = ta_min(h, i, a2, a, &ar_fast);
        if (over(ta, *incumbent_)) break;
        // Memory at the smallest K needed: if a device cannot take one
        // sample, no longer stage on this group can either.
        bool fits = true;
        for (int x = 0; x < g && fits; ++x) fits = fixed + min_k * stash <= mem[x];
        if (!fits) break;
        if (!monotone) {
          double inv = 0;
          for (int x = 0; x < g; ++x) {
            const double* rp = &rate_prefix_[(h + x) * (l_ + 1)];
            double rho = rp[a] - rp[a2];
            inv += rho > 0 ? 1.0 / rho : kInf;
          }
          double fluid = inv > 0 ? b_ / inv : 0;
          if (over(m_ * fluid + ta, *incumbent_) || over(fluid + min_tail, *incumbent_)) break;
          if (over(pb.pe + fluid + min_tail, *incumbent_)) continue;
        }
        ++stats_->stage_allocations;
        greedy_split(t_, grp, g, a2, a, b_, nullptr, y0.data());
        double ef0 = 0, eb0 = 0, mm0 = 0;
        for (int x = 0; x < g; ++x) {
          double f, bw;
          t_.times(grp[x], a2, a, y0[x], &f, &bw);
          ef0 = std::max(ef0, f);
          eb0 = std::max(eb0, bw);
          mm0 = std::max(mm0, f + bw);
        }
        // With non-decreasing profiles, mm0 is the exact min-max: a lower
        // bound on E of this stage and of every longer one on this group.
        if (monotone && (over(m_ * mm0 + ta, *incumbent_) || over(mm0 + min_tail, *incumbent_))) break;
        if (over(pb.pe + mm0 + min_tail, *incumbent_)) continue;
        bool any = false, smallest_k_fails = false;
        for (size_t kk = 0; kk < need_list.size(); ++kk) {
          const int inflight = need_list[kk];
          PerK& pk = per_k[kk];
          bool within = true;
          for (int x = 0; x < g && within; ++x)
            within = fixed + static_cast<double>(inflight) * y0[x] * stash <= mem[x];
          const int* ys = y0.data();
          pk.ok = true;
          pk.side = -1;
          if (within) {
            pk.ef = ef0;
            pk.eb = eb0;
          } else {
            for (int x = 0; x < g && pk.ok; ++x) {
              caps[x] = sample_capacity(t_, grp[x], a2, a, inflight, k_opt_, b_);
              pk.ok = caps[x] >= 1;
            }
            ++stats_->stage_allocations;
            if (pk.ok) pk.ok = greedy_split(t_, grp, g, a2, a, b_, caps.data(), y.data());
            if (pk.ok) stage_times(t_, grp, g, y.data(), a2, a, &pk.ef, &pk.eb);
            ys = y.data();
          }
          if (!pk.ok) {
            if (kk == 0) smallest_k_fails = true;
            continue;
          }
          pk.peak = 0;
          for (int x = 0; x < g; ++x)
            pk.peak = std::max(pk.peak, (fixed + static_cast<double>(inflight) * ys[x] * stash) / mem[x]);
          if (pk.peak >= peak_below_) pk.ok = false;  // not monotone in the range: no break
          any = any || pk.ok;
          if (pk.ok && lossy_) {
            pk.y.assign(ys, ys + g);
            if (!empty) group_codec_ms(h, g, ys, t_.out_bytes(a - 1), pk.enc, pk.dec);
          }
        }
        // The smallest K does not fit in memory: neither does any longer range.
        if (smallest_k_fails) break;
        if (!any) continue;
        for (const Alive& al : alive) {
          const int inflight = std::min(m_, al.q + 1);
          const size_t kk = std::lower_bound(need_list.begin(), need_list.end(), inflight) - need_list.begin();
          PerK& pk = per_k[kk];
          if (!pk.ok) continue;
          const double e = pk.ef + pk.eb;
          // The all-reduce in its fastest usable codec (Ta only adds to T_round).
          Entry n;
          n.begin = a2;
          n.end = a;
          n.h = h;
          n.i = i;
          n.inflight = inflight;
          n.ar = ar_fast;
          if (empty) {
            n.v = m_ * e;
            n.a = ta;
            n.stages = 1;
            n.peak = pk.peak;
            if (prune(pb, n.v, n.a)) continue;
            if (h == 0) {
              complete(n);
            } else {
              n.side = side_of(pk, h, g, a2);
              insert(state(a2, h, class_of_[h * (k_ + 1) + i], 1), n, min_stages(a2, h), i);
            }
            continue;
          }
          if (over(pb.pe + e + al.tail, *incumbent_)) continue;
          const int q2 = std::min(qdim_, al.q + 1);
          const int prefix_stages = h > 0 ? min_stages(a2, h) : 0;
          const size_t cell = h > 0 ? state(a2, h, class_of_[h * (k_ + 1) + i], q2) : 0;
          if (!lossy_) {
            // The exact wire: one transfer time, COST_MODEL.md's arithmetic.
            const double tau = al.bt[0];
            for (int id : al.entries) {
              const Entry& s = arena_[id];
              n.v = std::max({m_ * e, e + m_ * (2 * tau), e + 2 * tau + s.v});
              n.a = std::max(ta, s.a - pk.eb - tau);
              if (prune(pb, n.v, n.a)) continue;
              n.stages = s.stages + 1;
              n.peak = std::max(s.peak, pk.peak);
              n.parent = id;
              if (h == 0) complete(n);
              else insert(cell, n, prefix_stages);
            }
            continue;
          }
          // The entries come in runs of one Side (for Keep::value each run
          // sorted by v, a descending). For a run, the boundary's codecs: a
          // codec whose transfer is no shorter in total (Ef + Eb) and whose
          // Eb is no longer than another's can never do better, whatever
          // the suffix (v grows with Ef + Eb, a falls with Eb); the rest are
          // branches.
          const std::vector<int>& ids = al.entries;
          for (size_t r0 = 0, r1; r0 < ids.size(); r0 = r1) {
            const int side = arena_[ids[r0]].side;
            const int run_stages = arena_[ids[r0]].stages;
            const bool staged = keep_ == Keep::staged;
            for (r1 = r0 + 1; r1 < ids.size() && arena_[ids[r1]].side == side &&
                              (!staged || arena_[ids[r1]].stages == run_stages);
                 ++r1) {
            }
            const Side& sy = sides_[side];
            links.clear();
            for (Codec c : codecs_) {
              const int x = ci(c);
              Link l{al.bt[x], al.bt[x], c};
              if (c != Codec::fp32) {
                l.tf = al.bt[x] + pk.enc[x] + sy.dec[x];
                l.tb = al.bt[x] + sy.enc[x] + pk.dec[x];
                if (!(l.tf < kInf && l.tb < kInf)) continue;
              }
              const double et = l.tf + l.tb;
              bool beaten = false;
              for (const Link& o : links) beaten = beaten || (o.tf + o.tb <= et && o.tb >= l.tb);
              if (beaten) continue;  // (the earlier, more exact codec wins a tie)
              links.erase(std::remove_if(links.begin(), links.end(),
                                         [&](const Link& o) { return et <= o.tf + o.tb && l.tb >= o.tb; }),
                          links.end());
              links.push_back(l);
            }
            // One new entry per (entry of the run, link).
            auto extend = [&](int id, const Link& l) {
              const Entry& s = arena_[id];
              const double et = l.tf + l.tb;
              n.v = std::max({m_ * e, e + m_ * et, e + et + s.v});
              n.a = std::max(ta, s.a - pk.eb - l.tb);
              if (prune(pb, n.v, n.a)) return;
              n.next = l.codec;
              n.stages = s.stages + 1;
              n.peak = std::max(s.peak, pk.peak);
              n.parent = id;
              if (h == 0) {
                complete(n);
              } else {
                n.side = side_of(pk, h, g, a2);
                insert(cell, n, prefix_stages, i);
              }
            };
            if (keep_ == Keep::one || h == 0) {
              for (size_t j = r0; j < r1; ++j)
                for (const Link& l : links) extend(ids[j], l);
              continue;
            }
            // A sorted run (one Side; for Keep::staged one stage count too,
            // so its new entries have one stage count): per link, new v = max(M e, e + M Et,
            // e + Et + v) and new a = max(Ta, a - Eb - Eb_link). Entries
            // whose e + Et + v is under the first two terms all get the same
            // new v, and only the last of them (smallest a) can stay; from
            // the first entry whose a - Eb - Eb_link <= Ta on, every new a is
            // Ta, and only that first one (smallest v) can stay. The others
            // would be dominated, so only the window between is visited.
            for (const Link& l : links) {
              const double et = l.tf + l.tb;
              const double floor_v = std::max(m_ * e, e + m_ * et);
              size_t j = std::partition_point(ids.begin() + r0, ids.begin() + r1,
                                              [&](int id) { return !(e + et + arena_[id].v > floor_v); }) -
                         ids.begin();
              if (j > r0) --j;
              for (; j < r1; ++j) {
                const Entry& s = arena_[ids[j]];
                const double v = std::max(floor_v, e + et + s.v);
                // v only grows along the run and a >= Ta: past the bound, done.
                if (over(pb.pe + v, *incumbent_) || over(pb.pf + v + ta, *incumbent_)) break;
                extend(ids[j], l);
                if (s.a - pk.eb - l.tb <= ta) break;
              }
            }
          }
        }
      }
    }
  }

  // The Side of a new first stage on devices [h, h + g) split as pk.y,
  // for the activation of layer a2 - 1 that will come into it.
  int side_of(PerK& pk, int h, int g, int a2) {
    if (!lossy_) return -1;
    if (pk.side < 0) {
      Side sd{};
      group_codec_ms(h, g, pk.y.data(), t_.out_bytes(a2 - 1), sd.enc, sd.dec);
      std::array<double, 2 * kCodecs> key;
      for (int c = 0; c < kCodecs; ++c) {
        sd.sum[c] = sd.dec[c] + sd.enc[c];
        key[c] = sd.enc[c];
        key[kCodecs + c] = sd.dec[c];
      }
      auto [it, fresh] = side_ids_.emplace(key, static_cast<int>(sides_.size()));
      if (fresh) sides_.push_back(sd);
      pk.side = it->second;
    }
    return pk.side;
  }

  const ProfileTables& t_;
  const Rates& rates_;
  const std::vector<int>& dev_;
  const int k_, l_, m_, b_, k_opt_, min_group_, max_group_;
  double* incumbent_;
  SearchStats* stats_;
  const Keep keep_;
  int max_stages_ = std::numeric_limits<int>::max();
  double peak_below_ = kInf;
  BoundTables& bounds_;
  std::vector<double>& q_min_;
  std::vector<double>& pf_min_;
  std::vector<double>& pb_min_;
  std::vector<int>& min_stages_;
  const uint32_t block_;
  const WireBytes* wire_;  // nullptr: computed when needed
  std::vector<double> rate_prefix_f_, rate_prefix_b_;
  int qdim_ = 1;

  // The wire (prepare_codecs).
  std::vector<Codec> codecs_;     // fp32 first, then the usable lossy codecs in enum order
  bool lossy_ = false;            // any lossy codec at all
  std::vector<double> wb_;        // [layer * kCodecs + codec]: bytes of one sample's output on the wire
  std::vector<double> sum_enc_, sum_dec_;  // [(x + 1) * kCodecs + codec]: prefix sums of those speeds
  std::vector<double> spd_enc_, spd_dec_;  // [x * kCodecs + codec]: MB/s of dev_[x], 0 if not profiled
  std::vector<int> ar_slow_;      // [(h * (k+1) + i) * kCodecs + codec]: slowest all-reduce member, -1 unusable
  std::vector<double> ta_coef_;   // [((h * (k+1) + i) * kCodecs + codec) * 2 + {0: A, 1: B}]: ta_bound
  std::vector<Side> sides_;
  std::unordered_map<std::array<double, 2 * kCodecs>, int, SideKeyHash> side_ids_;  // equal Sides, one id
  std::vector<std::vector<SubFront>> lfronts_;
  std::vector<double> floor_;  // cell_floor per cell, -1 until computed
  mutable std::vector<std::vector<double>> pb_cache_;  // prefix_bound's transfer bounds, [(h, i, y_hi) ][2 * a]  // per cell, with lossy codecs (Keep::value, Keep::staged)

  std::vector<double> rl_, rfl_, rbl_, rate_prefix_, cross_, inner_, mem_;
  std::vector<int> class_of_, class_offset_;
  std::vector<std::vector<int>> class_rep_;
  int classes_total_ = 0;
  std::vector<std::vector<int>> fronts_;
  Arena arena_;
  int best_entry_ = -1;
  double best_round_ = kInf, best_peak_ = kInf;
  int best_stages_ = 0;
};

std::vector<int> divisors(int n) {
  std::vector<int> out;
  for (int d = 1; d <= n; ++d)
    if (n % d == 0) out.push_back(d);
  return out;
}

}  // namespace

std::vector<int> microbatch_choices(const TrainingConfig& c) {
  if (c.batch < 1) throw std::invalid_argument("batch must be >= 1, got " + std::to_string(c.batch));
  if (c.codec_block < 1 || c.codec_block > wire_codec::kMaxBlock)
    throw std::invalid_argument("codec block must be in [1, " + std::to_string(wire_codec::kMaxBlock) + "], got " +
                                std::to_string(c.codec_block));
  if (c.search_microbatches) return divisors(c.batch);
  if (c.microbatches < 1)
    throw std::invalid_argument("microbatches must be >= 1, got " + std::to_string(c.microbatches));
  if (c.batch % c.microbatches != 0)
    throw std::invalid_argument("batch " + std::to_string(c.batch) +
                                " is not divisible by microbatches " +
                                std::to_string(c.microbatches));
  return {c.microbatches};
}

namespace {

struct Chosen {
  Outcome outcome;
  int k = 0, m = 0;
  size_t mi = 0;  // index of m among the M choices
};

// Whether some device has a lossy codec the policy allows.
bool any_lossy_codec(const ProfileTables& t, WirePolicy wire) {
  for (Codec c : wire_codecs(wire))
    for (int d = 0; c != Codec::fp32 && d < t.device_count(); ++d)
      if (t.has_codec(d, c)) return true;
  return false;
}

double elapsed_ms(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

PlanResult finish(const ProfileTables& t, const TrainingConfig& config, Strategy strategy,
                  const Chosen& best, const std::vector<int>& used,
                  std::chrono::steady_clock::time_point start, SearchStats stats, const std::string& why) {
  PlanResult r;
  r.stats = stats;
  r.planning_ms = elapsed_ms(start);
  if (!best.outcome.found) {
    r.feasible = false;
    r.why = why.empty() ? "no plan fits in the devices' memory" : why;
    return r;
  }
  Plan& p = r.plan;
  p.strategy = strategy_name(strategy);
  p.batch = config.batch;
  p.microbatches = best.m;
  p.microbatch_size = config.batch / best.m;
  p.codec_block = config.codec_block;
  p.stages = best.outcome.plan_stages;
  for (int d : t.sorted_order())
    if (std::find(used.begin(), used.end(), d) == used.end()) p.idle_devices.push_back(t.id(d));
  EvalOptions eo;
  eo.optimizer = config.optimizer;
  // 4. The codec tie-break: the least lossy codecs that keep this plan's
  //    T_round (the search found codecs reaching the optimum; among the
  //    assignments that do, choose_codecs takes the least lossy one).
  if (any_lossy_codec(t, config.wire)) {
    const double before = elapsed_ms(start);
    choose_codecs(p, t, config.wire, eo);
    r.stats.codec_tie_break_ms = elapsed_ms(start) - before;
  }
  r.evaluation = evaluate(p, t, eo);
  p.predicted_round_ms = r.evaluation.round_ms;
  r.feasible = r.evaluation.feasible;
  r.why = r.evaluation.infeasible_reason;
  r.planning_ms = elapsed_ms(start);
  return r;
}

// The DP over chosen sets `ks` (k fastest devices each) and the M choices.
PlanResult run_search(const ProfileTables& t, const TrainingConfig& config, Strategy strategy,
                      const std::vector<int>& ks, int min_group, int max_group) {
  auto start = std::chrono::steady_clock::now();
  const int k_opt = optimizer_state_factor(config.optimizer);
  SearchStats stats;
  Chosen best;
  std::vector<int> best_used;
  double incumbent = kInf;
  const std::vector<int> ms = microbatch_choices(config);
  std::vector<Rates> rates;
  for (int m : ms) rates.emplace_back(t, config.batch / m);
  std::map<std::pair<size_t, int>, BoundTables> bounds;
  // (Up to 400 layers: 1.3 MB at 400; beyond, each all-reduce's bytes are
  // computed when needed.)
  std::unique_ptr<WireBytes> wire_bytes;
  if (any_lossy_codec(t, config.wire) && t.layer_count() <= 400)
    wire_bytes = std::make_unique<WireBytes>(t, wire_codecs(config.wire), config.codec_block);
  // A stage limit (TrainingConfig::max_stages) needs the fronts that keep
  // stage counts, and no seeding: the one-value DP does not respect it.
  const bool limited = config.max_stages > 0;
  const int stage_limit = limited ? config.max_stages : std::numeric_limits<int>::max();
  auto search = [&](size_t mi, int k, SuffixSearch::Keep keep, bool count_skip, int max_stages = -1,
                    double peak_below = kInf) {
    if (max_stages < 0) max_stages = stage_limit;
    std::vector<int> dev = t.fastest(k);
    SuffixSearch s(t, rates[mi], dev, ms[mi], config.batch / ms[mi], k_opt, min_group, max_group,
                   &incumbent, &stats, keep, &bounds[{mi, k}], config.wire, config.codec_block, wire_bytes.get());
    s.set_limits(max_stages, peak_below);
    if (over(s.set_lower_bound(), incumbent)) {
      if (count_skip) ++stats.chosen_sets_skipped;
      return Outcome{};
    }
    return s.run();
  };
  // 1. Seed the incumbent with the one-value-per-cell DP (an upper bound) on
  //    a few sets, small first: 1, 2, 4, 8, ... and all N (measured: more
  //    seeds cost more than the pruning they buy).
  for (size_t mi = 0; mi < ms.size() && !limited; ++mi)
    for (auto k = ks.rbegin(); k != ks.rend(); ++k)
      if ((*k & (*k - 1)) == 0 || *k == ks.front()) search(mi, *k, SuffixSearch::Keep::one, false);
  stats.seed_ms = elapsed_ms(start);
  // 2. The exact minimum of T_round for every (M, k), pruned by the incumbent.
  struct Tie {
    size_t mi;
    int k;
    Outcome outcome;
  };
  std::vector<Tie> ties;
  double best_round = kInf;
  for (size_t mi = 0; mi < ms.size(); ++mi)
    for (int k : ks) {
      Outcome o = search(mi, k, limited ? SuffixSearch::Keep::staged : SuffixSearch::Keep::value, true);
      if (!o.found) continue;
      if (o.round < best_round && !same_round(o.round, best_round)) ties.clear();
      best_round = std::min(best_round, o.round);
      ties.push_back({mi, k, std::move(o)});
    }
  ties.erase(std::remove_if(ties.begin(), ties.end(),
                            [&](const Tie& t) { return !same_round(t.outcome.round, best_round); }),
             ties.end());
  stats.exact_ms = elapsed_ms(start) - stats.seed_ms;
  // 3. Among the (M, k) that reach it, the tie-breaks: fewer stages, lower
  //    peak memory, then fewer devices, then smaller M. Seeded with the best
  //    plan of step 2; each (M, k), in preference order, is asked for a plan
  //    at the optimum with fewer stages, then (same stages) with a lower
  //    peak, until there is none. Each question is an exact search under a
  //    stage limit and a peak filter, so the answer "none" is a proof.
  std::sort(ties.begin(), ties.end(), [](const Tie& a, const Tie& b) {
    return a.k != b.k ? a.k < b.k : a.mi < b.mi;
  });
  for (Tie& tie : ties)
    if (!best.outcome.found || outcome_better(tie.outcome, best.outcome))
      best = Chosen{tie.outcome, tie.k, ms[tie.mi], tie.mi};
  const bool tie_break_needed = ties.size() > 1 || (!ties.empty() && best.outcome.stages > 1);
  for (const Tie& tie : tie_break_needed ? ties : std::vector<Tie>{}) {
    for (bool fewer_stages : {true, false}) {
      for (;;) {
        const int max_stages = best.outcome.stages - (fewer_stages ? 1 : 0);
        if (max_stages < 1) break;
        const double peak_below = fewer_stages ? kInf : best.outcome.peak;
        Outcome o = search(tie.mi, tie.k, SuffixSearch::Keep::staged, false, max_stages, peak_below);
        if (!o.found || !same_round(o.round, best_round) || !outcome_better(o, best.outcome)) break;
        best = Chosen{std::move(o), tie.k, ms[tie.mi], tie.mi};
      }
    }
  }
  if (best.outcome.found) best_used = t.fastest(best.k);
  stats.tie_break_ms = elapsed_ms(start) - stats.seed_ms - stats.exact_ms;
  return finish(t, config, strategy, best, best_used, start, stats, "");
}

}  // namespace

bool same_round(double a, double b) {
  if (std::isinf(a) || std::isinf(b)) return a == b;
  return std::fabs(a - b) <= kTol * std::max(std::fabs(a), std::fabs(b));
}

bool better_plan(double round_a, int stages_a, double peak_a, double round_b, int stages_b,
                 double peak_b) {
  if (!same_round(round_a, round_b)) return round_a < round_b;
  if (stages_a != stages_b) return stages_a < stages_b;
  return peak_a < peak_b;
}

namespace {
constexpr Named<Strategy> kStrategyNames[] = {
    {Strategy::hpp, "hpp"}, {Strategy::dp, "dp"}, {Strategy::pp, "pp"}, {Strategy::single, "single"}};
constexpr Named<WirePolicy> kWirePolicyNames[] = {{WirePolicy::exact, "exact"},
                                                  {WirePolicy::fp16, "fp16"},
                                                  {WirePolicy::int8, "int8"},
                                                  {WirePolicy::int4, "int4"},
                                                  {WirePolicy::auto_, "auto"}};
}  // namespace

Strategy parse_strategy(const std::string& name) { return parse_named(kStrategyNames, name, "strategy"); }
const char* strategy_name(Strategy s) { return name_of(kStrategyNames, s); }
WirePolicy parse_wire_policy(const std::string& name) { return parse_named(kWirePolicyNames, name, "wire policy"); }
const char* wire_policy_name(WirePolicy p) { return name_of(kWirePolicyNames, p); }

bool wire_allows(WirePolicy p, Codec c) {
  switch (c) {
    case Codec::fp32: return true;
    case Codec::fp16:
    case Codec::bf16: return p != WirePolicy::exact;
    case Codec::int8: return p == WirePolicy::int8 || p == WirePolicy::int4 || p == WirePolicy::auto_;
    case Codec::int4: return p == WirePolicy::int4 || p == WirePolicy::auto_;
  }
  return p == WirePolicy::auto_;
}

std::vector<Codec> wire_codecs(WirePolicy p) {
  std::vector<Codec> out;
  for (Codec c : wire_codec::kAllCodecs)
    if (wire_allows(p, c)) out.push_back(c);
  return out;
}

int64_t codec_lossiness(Codec c) {
  switch (c) {
    case Codec::fp32: return 0;
    case Codec::fp16: return 1;
    case Codec::bf16: return int64_t{1} << 10;
    case Codec::int8: return int64_t{1} << 20;
    case Codec::int4: return int64_t{1} << 30;
  }
  return int64_t{1} << 40;
}

int64_t wire_lossiness(const Plan& plan) {
  int64_t score = 0;
  for (size_t s = 0; s < plan.stages.size(); ++s) {
    const Stage& st = plan.stages[s];
    if (s + 1 < plan.stages.size()) score += codec_lossiness(st.to_next);
    if (st.devices.size() > 1) score += codec_lossiness(st.allreduce);
  }
  return score;
}

bool codec_usable(const ProfileTables& t, WirePolicy policy, Codec c, const std::vector<int>& devices) {
  if (!wire_allows(policy, c)) return false;
  for (int d : devices)
    if (!t.has_codec(d, c)) return false;
  return true;
}

void choose_codecs(Plan& plan, const ProfileTables& t, WirePolicy policy, const EvalOptions& options) {
  const int p = static_cast<int>(plan.stages.size());
  const int m = plan.microbatches;
  for (Stage& st : plan.stages) st.to_next = st.allreduce = Codec::fp32;
  const std::vector<Codec> codecs = wire_codecs(policy);
  std::vector<std::vector<int>> groups(p);
  for (int s = 0; s < p; ++s)
    for (const StageDevice& d : plan.stages[s].devices) groups[s].push_back(t.index(d.id));
  // The options: each group's all-reduce (Ta) and each boundary (Ef, Eb)
  // in every usable codec, timed as the evaluator times them.
  struct Option {
    Codec codec;
    double f, b;  // all-reduce: Ta in f
  };
  std::vector<std::vector<Option>> ar(p), tr(p);
  bool choice = false;
  for (int s = 0; s < p; ++s) {
    const Stage& st = plan.stages[s];
    for (Codec c : codecs) {
      if (st.devices.size() > 1 && codec_usable(t, policy, c, groups[s]))
        ar[s].push_back({c, allreduce_time(t, st, c, plan.codec_block).ta_ms, 0});
      if (s + 1 < p) {
        std::vector<int> both = groups[s];
        both.insert(both.end(), groups[s + 1].begin(), groups[s + 1].end());
        if (!codec_usable(t, policy, c, both)) continue;
        TransferTime x = transfer_time(t, st, plan.stages[s + 1], c, plan.codec_block, plan.microbatch_size);
        tr[s].push_back({c, x.ef_ms, x.eb_ms});
      }
    }
    if (ar[s].empty()) ar[s].push_back({Codec::fp32, 0, 0});  // a group of one: no all-reduce
    choice = choice || ar[s].size() > 1 || tr[s].size() > 1;
  }
  if (!choice) return;
  // The compute steps do not depend on the codecs.
  const Evaluation base = evaluate(plan, t, options);
  // Suffixes from the last stage backwards, as the search does: the Pareto
  // set of (v, a, lossiness) (T_round = v + a of the whole plan).
  struct Node {
    double v, a;
    int64_t loss;
    Codec next, ar;
    int parent;
  };
  std::vector<Node> nodes;
  std::vector<int> front, grown;
  auto add = [&](const Node& n) {
    if (!make_room(grown, nodes, n,
                   [](const Node& x, const Node& y) { return x.v <= y.v && x.a <= y.a && x.loss <= y.loss; }))
      return;
    nodes.push_back(n);
    grown.push_back(static_cast<int>(nodes.size()) - 1);
  };
  for (int s = p - 1; s >= 0; --s) {
    const StepTime& step = base.steps[2 * s];
    const double e = step.ef_ms + step.eb_ms;
    const bool group = plan.stages[s].devices.size() > 1;
    grown.clear();
    for (const Option& o : ar[s]) {
      const int64_t ar_loss = group ? codec_lossiness(o.codec) : 0;
      if (s == p - 1) {
        add({m * e, o.f, ar_loss, Codec::fp32, o.codec, -1});
        continue;
      }
      for (int id : front)
        for (const Option& x : tr[s]) {
          const Node& n = nodes[id];
          const double et = x.f + x.b;
          add({std::max({m * e, e + m * et, e + et + n.v}), std::max(o.f, n.a - step.eb_ms - x.b),
               n.loss + ar_loss + codec_lossiness(x.codec), x.codec, o.codec, id});
        }
    }
    front.swap(grown);
  }
  // The smallest T_round, then the least lossy among the equal ones (the
  // earlier, more exact, on a tie).
  int best = -1;
  for (int id : front) {
    const Node& n = nodes[id];
    if (best < 0) {
      best = id;
      continue;
    }
    const double r = n.v + n.a, rb = nodes[best].v + nodes[best].a;
    if (same_round(r, rb) ? n.loss < nodes[best].loss : r < rb) best = id;
  }
  for (int s = 0; s < p && best >= 0; ++s) {
    plan.stages[s].allreduce = nodes[best].ar;
    plan.stages[s].to_next = nodes[best].next;
    best = nodes[best].parent;
  }
}

PlanResult plan_hpp(const ProfileTables& t, const TrainingConfig& config) {
  std::vector<int> ks;
  for (int k = t.device_count(); k >= 1; --k) ks.push_back(k);
  return run_search(t, config, Strategy::hpp, ks, 1, std::numeric_limits<int>::max());
}

PlanResult plan_pp(const ProfileTables& t, const TrainingConfig& config) {
  const int n = t.device_count();
  if (t.layer_count() < n) {
    PlanResult r;
    r.why = "pp needs one stage per device: " + std::to_string(n) + " devices but only " +
            std::to_string(t.layer_count()) + " layers";
    return r;
  }
  PlanResult r = run_search(t, config, Strategy::pp, {n}, 1, 1);
  if (r.plan.stages.empty() && r.why.empty()) r.why = "no pipeline of one device per stage fits in memory";
  return r;
}

PlanResult make_plan(const ProfileTables& t, const TrainingConfig& config, Strategy strategy) {
  switch (strategy) {
    case Strategy::hpp: return plan_hpp(t, config);
    case Strategy::dp: return plan_dp(t, config);
    case Strategy::pp: return plan_pp(t, config);
    case Strategy::single: return plan_single(t, config);
  }
  return plan_hpp(t, config);
}

}  // namespace asteroid::planner
