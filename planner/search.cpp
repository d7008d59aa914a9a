#include "planner/search.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <stdexcept>

#include "planner/allocation.h"

namespace asteroid::planner {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kTol = 1e-9;

// Above this, a (partial) plan cannot reach T* within the tie tolerance.
inline bool over(double lower_bound, double incumbent) {
  return lower_bound > incumbent + kTol * std::fabs(incumbent);
}

// Per-sample rates of every device and layer for one micro-batch size.
struct Rates {
  std::vector<std::vector<double>> both, fwd;  // [device][layer]
  Rates(const ProfileTables& t, int b) {
    const int n = t.device_count(), l = t.layer_count();
    both.assign(n, std::vector<double>(l));
    fwd.assign(n, std::vector<double>(l));
    for (int d = 0; d < n; ++d)
      for (int x = 0; x < l; ++x) {
        both[d][x] = t.min_rate(d, x, b, false);
        fwd[d][x] = t.min_rate(d, x, b, true);
      }
  }
};

// A Pareto entry: a pipeline suffix (the stage it starts with, and a link to
// the rest) summarised by what T_round needs from it:
//   v = max over its steps c of (M E_c + sum of E before c inside the suffix)
//   a = max over its steps s of (Ta_s - sum of Eb before s inside the suffix)
// plus the tie-break quantities (stage count, peak memory fraction).
struct Entry {
  double v, a, peak;
  int stages, parent;
  int begin, end, h, i, inflight;  // the first stage: layers, devices [h, i) of the set
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
  enum class Keep { one, value, staged };
  SuffixSearch(const ProfileTables& t, const Rates& rates, const std::vector<int>& dev, int m,
               int b, int k_opt, int min_group, int max_group, double* incumbent,
               SearchStats* stats, Keep keep, BoundTables* bounds)
      : t_(t), rates_(rates), dev_(dev), k_(static_cast<int>(dev.size())), l_(t.layer_count()),
        m_(m), b_(b), k_opt_(k_opt), min_group_(min_group), max_group_(max_group),
        incumbent_(incumbent), stats_(stats), keep_(keep), bounds_(*bounds),
        q_min_(bounds->q_min), pf_min_(bounds->pf_min), min_stages_(bounds->min_stages) {
    qdim_ = std::min(m_, k_);
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

  void prepare() {
    const int k1 = k_ + 1;
    // Prefix lower bounds: sum over layers [0, a) of the best rate among devices [0, h).
    rl_.assign(static_cast<size_t>(l_ + 1) * k1, 0.0);
    rfl_.assign(rl_.size(), 0.0);
    std::vector<double> mn(l_, kInf), mnf(l_, kInf);
    for (int h = 1; h <= k_; ++h) {
      int d = dev_[h - 1];
      for (int x = 0; x < l_; ++x) {
        mn[x] = std::min(mn[x], rates_.both[d][x]);
        mnf[x] = std::min(mnf[x], rates_.fwd[d][x]);
      }
      for (int a = 0; a < l_; ++a) {
        rl_[idx_rl(a + 1, h)] = rl_[idx_rl(a, h)] + mn[a];
        rfl_[idx_rl(a + 1, h)] = rfl_[idx_rl(a, h)] + mnf[a];
      }
    }
    // Per-device prefix sums of rates (stage bound for non-monotone profiles).
    rate_prefix_.assign(static_cast<size_t>(k_) * (l_ + 1), 0.0);
    rate_prefix_f_.assign(rate_prefix_.size(), 0.0);
    for (int x = 0; x < k_; ++x)
      for (int a = 0; a < l_; ++a) {
        rate_prefix_[x * (l_ + 1) + a + 1] = rate_prefix_[x * (l_ + 1) + a] + rates_.both[dev_[x]][a];
        rate_prefix_f_[x * (l_ + 1) + a + 1] = rate_prefix_f_[x * (l_ + 1) + a] + rates_.fwd[dev_[x]][a];
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
    mem_.resize(k_);
    for (int x = 0; x < k_; ++x) mem_[x] = t_.memory_bytes(dev_[x]);
  }

  // `prefix_stages`: at least how many stages the plan still needs in front.
  void insert(std::vector<int>& front, const Entry& n, int prefix_stages) {
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
        for (int id : front) {
          const Entry& e = arena_[id];
          if (e.v <= n.v && e.a <= n.a && e.stages <= n.stages) return;
        }
        front.erase(std::remove_if(front.begin(), front.end(),
                                   [&](int id) {
                                     const Entry& e = arena_[id];
                                     return n.v <= e.v && n.a <= e.a && n.stages <= e.stages;
                                   }),
                    front.end());
        push(front, front.end(), n);
        return;
    }
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
    const double ta =
        g > 1 ? 2.0 * (g - 1) / g * t_.weight_bytes(a2, a) * 8 / 1e3 / inner_[h * (k_ + 1) + i] : 0.0;
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
    int c, q;
    double min_v;  // smallest v among the entries
    double tau;    // the transfer into this suffix from a group ending at i (set per h)
    std::vector<int> entries;
  };

  // Lower bounds on the forward (pf) and forward+backward (pe) time of a
  // prefix that runs layers [0, a) on devices [0, h) in front of a stage on
  // devices [h, i), including the transfer into that stage, and on T_round
  // from the prefix alone (t).
  struct PrefixBound {
    double pf = 0, pe = 0, t = 0;
  };
  PrefixBound prefix_bound(int a, int h, int i) const {
    PrefixBound p;
    if (h == 0) return p;
    // The prefix's last group contains device h-1, so the bandwidth into
    // [h, i) is at most its best link into that group.
    const double tau_in = b_ * t_.out_bytes(a - 1) * 8 / 1e3 / cross_[idx3(h - 1, h, i)];
    const double work = b_ * rl_[idx_rl(a, h)] / h;
    const size_t cell = static_cast<size_t>(a) * (k_ + 1) + h;
    p.pf = pf_min_[cell] + tau_in;
    p.pe = q_min_[cell] + 2 * tau_in;
    p.t = std::max(m_ * std::max(work, 2 * tau_in), p.pe);
    return p;
  }
  // Lower bounds over every prefix that runs layers [0, a) on devices
  // [0, h) within the incumbent, by a DP over such prefixes with the fluid
  // bound for each stage's Ef and E (B / sum of 1/rate over the group: no
  // split does better), the exact all-reduce time Ta, and each transfer at
  // the best bandwidth it could have:
  //   pf_min_: sum of Ef over its steps;
  //   q_min_:  min over its stages s of (sum of Ef before s + Ta_s + sum of
  //            E from s on). T_round >= q + v of the suffix, because
  //            T_round >= (PE + v) + (Ta_s - PB_s) for every stage s.
  void compute_prefix_bounds() {
    const size_t k1 = k_ + 1;
    pf_min_.assign(static_cast<size_t>(l_ + 1) * k1, kInf);
    q_min_.assign(pf_min_.size(), kInf);
    pf_min_[0] = q_min_[0] = 0;
    for (int h = 1; h < k_; ++h)
      for (int h2 = h - 1; h2 >= 0 && h - h2 <= max_group_; --h2) {
        const int g = h - h2;
        if (g > b_) break;
        if (g < min_group_) continue;
        double mem_min = kInf;
        for (int x = h2; x < h; ++x) mem_min = std::min(mem_min, mem_[x]);
        const double inner = inner_[h2 * k1 + h];
        for (int a = 1; a < l_; ++a) {
          const int a_hi = h2 == 0 ? 0 : a - 1;
          const int a_lo = h2 == 0 ? 0 : 1;
          double& pf_cell = pf_min_[static_cast<size_t>(a) * k1 + h];
          double& q_cell = q_min_[static_cast<size_t>(a) * k1 + h];
          for (int a2 = a_hi; a2 >= a_lo; --a2) {
            const double w = t_.weight_bytes(a2, a);
            if (w * (2 + k_opt_) + t_.stash_bytes(a2, a) > mem_min) break;
            const double ta = g > 1 ? 2.0 * (g - 1) / g * w * 8 / 1e3 / inner : 0.0;
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
            const double tau =
                h2 > 0 ? b_ * t_.out_bytes(a2 - 1) * 8 / 1e3 / cross_[idx3(h2 - 1, h2, h)] : 0.0;
            pf_cell = std::min(pf_cell, pf_min_[prev] + tau + ef);
            q_cell = std::min({q_cell, pf_min_[prev] + tau + e + ta, q_min_[prev] + 2 * tau + e});
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
      const double inner = inner_[h2 * k1 + k_];
      for (int a2 = h2 == 0 ? 0 : l_ - 1; a2 >= (h2 == 0 ? 0 : 1); --a2) {
        const double w = t_.weight_bytes(a2, l_);
        if (w * (2 + k_opt_) + t_.stash_bytes(a2, l_) > mem_min) break;
        const double ta = g > 1 ? 2.0 * (g - 1) / g * w * 8 / 1e3 / inner : 0.0;
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
        const double tau =
            h2 > 0 ? b_ * t_.out_bytes(a2 - 1) * 8 / 1e3 / cross_[idx3(h2 - 1, h2, k_)] : 0.0;
        best = std::min({best, pf_min_[prev] + tau + m_ * e + ta, q_min_[prev] + 2 * tau + m_ * e});
      }
    }
    return best;
  }

  bool prune(const PrefixBound& p, double v, double a) const {
    return over(p.pf + v + a, *incumbent_) || over(p.pe + v, *incumbent_);
  }

  // Extends every suffix that starts at layer a with devices [i, k) by one
  // more stage in front of it. a == l_ && i == k_ is the empty suffix.
  void process(int a, int i) {
    const bool empty = (a == l_);
    std::vector<Alive> alive;
    if (empty) {
      alive.push_back({0, 0, 0, 0, {}});
    } else {
      const int nc = static_cast<int>(class_rep_[i].size());
      for (int c = 0; c < nc; ++c) {
        const PrefixBound pb = prefix_bound(a, i, class_rep_[i][c]);
        for (int q = 1; q <= qdim_; ++q) {
          std::vector<int>& f = fronts_[state(a, i, c, q)];
          if (f.empty()) continue;
          Alive al{c, q, kInf, 0, {}};
          if (!over(pb.t, *incumbent_))
            for (int id : f) {
              const Entry& e = arena_[id];
              if (prune(pb, e.v, e.a) || too_many_stages(e.stages + min_stages(a, i))) continue;
              al.entries.push_back(id);
              al.min_v = std::min(al.min_v, e.v);
            }
          std::vector<int>().swap(f);  // processed once; free the memory
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
    struct PerK {
      bool ok;
      double ef, eb, peak;
    };
    std::vector<PerK> per_k(need_list.size());
    const bool monotone = t_.monotone();

    for (int h = i - 1; h >= 0 && i - h <= max_group_; --h) {
      const int g = i - h;
      if (g > b_) break;
      if (g < min_group_) continue;
      const int* grp = &dev_[h];
      const double* mem = &mem_[h];
      // Transfers from [h, i) into each alive suffix; the cheapest suffix
      // continuation bounds every entry this group can make.
      double min_tail = 0;
      if (!empty) {
        min_tail = kInf;
        for (Alive& al : alive) {
          al.tau = b_ * t_.out_bytes(a - 1) * 8 / 1e3 / cross_[idx3(h, i, class_rep_[i][al.c])];
          min_tail = std::min(min_tail, 2 * al.tau + al.min_v);
        }
      }
      if (h > 0 && too_many_stages(fewest_stages + 2)) continue;
      const int a_hi = (h == 0) ? 0 : a - 1;
      const int a_lo = (h == 0) ? 0 : 1;
      for (int a2 = a_hi; a2 >= a_lo; --a2) {
        if (h > 0 && too_many_stages(fewest_stages + 1 + min_stages(a2, h))) continue;
        const PrefixBound pb = prefix_bound(a2, h, i);
        if (over(pb.t, *incumbent_) || over(pb.pe + min_tail, *incumbent_)) continue;
        const double w = t_.weight_bytes(a2, a);
        const double fixed = w * (2 + k_opt_);
        const double stash = t_.stash_bytes(a2, a);
        // T >= M E_s + Ta_s for every stage s, and both grow with the range.
        const double ta = g > 1 ? 2.0 * (g - 1) / g * w * 8 / 1e3 / inner_[h * (k_ + 1) + i] : 0.0;
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
        }
        // The smallest K does not fit in memory: neither does any longer range.
        if (smallest_k_fails) break;
        if (!any) continue;
        for (const Alive& al : alive) {
          const int inflight = std::min(m_, al.q + 1);
          const size_t kk = std::lower_bound(need_list.begin(), need_list.end(), inflight) - need_list.begin();
          const PerK& pk = per_k[kk];
          if (!pk.ok) continue;
          const double e = pk.ef + pk.eb;
          Entry n{0, 0, 0, 0, -1, a2, a, h, i, inflight};
          if (empty) {
            n.v = m_ * e;
            n.a = ta;
            n.stages = 1;
            n.peak = pk.peak;
            if (prune(pb, n.v, n.a)) continue;
            if (h == 0) complete(n);
            else insert(fronts_[state(a2, h, class_of_[h * (k_ + 1) + i], 1)], n, min_stages(a2, h));
            continue;
          }
          const double tau = al.tau;
          if (over(pb.pe + e + 2 * tau + al.min_v, *incumbent_)) continue;
          const int q2 = std::min(qdim_, al.q + 1);
          const int prefix_stages = h > 0 ? min_stages(a2, h) : 0;
          std::vector<int>* front = h > 0 ? &fronts_[state(a2, h, class_of_[h * (k_ + 1) + i], q2)] : nullptr;
          for (int id : al.entries) {
            const Entry& s = arena_[id];
            n.v = std::max({m_ * e, e + m_ * (2 * tau), e + 2 * tau + s.v});
            n.a = std::max(ta, s.a - pk.eb - tau);
            if (prune(pb, n.v, n.a)) continue;
            n.stages = s.stages + 1;
            n.peak = std::max(s.peak, pk.peak);
            n.parent = id;
            if (h == 0) complete(n);
            else insert(*front, n, prefix_stages);
          }
        }
      }
    }
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
  std::vector<int>& min_stages_;
  std::vector<double> rate_prefix_f_;
  int qdim_ = 1;

  std::vector<double> rl_, rfl_, rate_prefix_, cross_, inner_, mem_;
  std::vector<int> class_of_, class_offset_;
  std::vector<std::vector<int>> class_rep_;
  int classes_total_ = 0;
  std::vector<std::vector<int>> fronts_;
  std::vector<Entry> arena_;
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

std::vector<int> microbatch_choices(const TrainingConfig& c) {
  if (c.batch < 1) throw std::invalid_argument("batch must be >= 1, got " + std::to_string(c.batch));
  if (c.search_microbatches) return divisors(c.batch);
  if (c.microbatches < 1)
    throw std::invalid_argument("microbatches must be >= 1, got " + std::to_string(c.microbatches));
  if (c.batch % c.microbatches != 0)
    throw std::invalid_argument("batch " + std::to_string(c.batch) +
                                " is not divisible by microbatches " +
                                std::to_string(c.microbatches));
  return {c.microbatches};
}

struct Chosen {
  Outcome outcome;
  int k = 0, m = 0;
};

PlanResult finish(const ProfileTables& t, const TrainingConfig& config, Strategy strategy,
                  const Chosen& best, const std::vector<int>& used, double ms, SearchStats stats,
                  const std::string& why) {
  PlanResult r;
  r.stats = stats;
  r.planning_ms = ms;
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
  p.stages = best.outcome.plan_stages;
  for (int d : t.sorted_order())
    if (std::find(used.begin(), used.end(), d) == used.end()) p.idle_devices.push_back(t.id(d));
  EvalOptions eo;
  eo.optimizer = config.optimizer;
  r.evaluation = evaluate(p, t, eo);
  p.predicted_round_ms = r.evaluation.round_ms;
  r.feasible = r.evaluation.feasible;
  r.why = r.evaluation.infeasible_reason;
  return r;
}

double elapsed_ms(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
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
  auto search = [&](size_t mi, int k, SuffixSearch::Keep keep, bool count_skip,
                    int max_stages = std::numeric_limits<int>::max(), double peak_below = kInf) {
    std::vector<int> dev = t.fastest(k);
    SuffixSearch s(t, rates[mi], dev, ms[mi], config.batch / ms[mi], k_opt, min_group, max_group,
                   &incumbent, &stats, keep, &bounds[{mi, k}]);
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
  for (size_t mi = 0; mi < ms.size(); ++mi)
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
      Outcome o = search(mi, k, SuffixSearch::Keep::value, true);
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
      best = Chosen{tie.outcome, tie.k, ms[tie.mi]};
  const bool tie_break_needed = ties.size() > 1 || (!ties.empty() && best.outcome.stages > 1);
  for (const Tie& tie : tie_break_needed ? ties : std::vector<Tie>{}) {
    for (bool fewer_stages : {true, false}) {
      for (;;) {
        const int max_stages = best.outcome.stages - (fewer_stages ? 1 : 0);
        if (max_stages < 1) break;
        const double peak_below = fewer_stages ? kInf : best.outcome.peak;
        Outcome o = search(tie.mi, tie.k, SuffixSearch::Keep::staged, false, max_stages, peak_below);
        if (!o.found || !same_round(o.round, best_round) || !outcome_better(o, best.outcome)) break;
        best = Chosen{std::move(o), tie.k, ms[tie.mi]};
      }
    }
  }
  if (best.outcome.found) best_used = t.fastest(best.k);
  stats.tie_break_ms = elapsed_ms(start) - stats.seed_ms - stats.exact_ms;
  return finish(t, config, strategy, best, best_used, elapsed_ms(start), stats, "");
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

Strategy parse_strategy(const std::string& name) {
  if (name == "hpp") return Strategy::hpp;
  if (name == "dp") return Strategy::dp;
  if (name == "pp") return Strategy::pp;
  throw std::invalid_argument("unknown strategy \"" + name + "\" (expected hpp, dp or pp)");
}

const char* strategy_name(Strategy s) {
  switch (s) {
    case Strategy::hpp: return "hpp";
    case Strategy::dp: return "dp";
    case Strategy::pp: return "pp";
  }
  return "hpp";
}

Optimizer parse_optimizer(const std::string& name) {
  if (name == "sgd") return Optimizer::sgd;
  if (name == "momentum") return Optimizer::momentum;
  if (name == "adam") return Optimizer::adam;
  throw std::invalid_argument("unknown optimizer \"" + name + "\" (expected sgd, momentum or adam)");
}

const char* optimizer_name(Optimizer o) {
  switch (o) {
    case Optimizer::sgd: return "sgd";
    case Optimizer::momentum: return "momentum";
    case Optimizer::adam: return "adam";
  }
  return "sgd";
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

PlanResult plan_dp(const ProfileTables& t, const TrainingConfig& config) {
  auto start = std::chrono::steady_clock::now();
  const int n = t.device_count();
  PlanResult best;
  bool have = false;
  for (int m : microbatch_choices(config)) {
    const int b = config.batch / m;
    PlanResult r;
    if (n > b) {
      r.why = "dp gives every device at least one sample: " + std::to_string(n) +
              " devices but micro-batches of " + std::to_string(b);
    } else {
      Plan& p = r.plan;
      p.strategy = "dp";
      p.batch = config.batch;
      p.microbatches = m;
      p.microbatch_size = b;
      Stage st;
      st.begin = 0;
      st.end = t.layer_count();
      int x = 0;
      for (int d : t.sorted_order()) {
        st.devices.push_back({t.id(d), b / n + (x < b % n ? 1 : 0)});
        ++x;
      }
      p.stages.push_back(std::move(st));
      EvalOptions eo;
      eo.optimizer = config.optimizer;
      r.evaluation = evaluate(p, t, eo);
      p.predicted_round_ms = r.evaluation.round_ms;
      r.feasible = r.evaluation.feasible;
      r.why = r.evaluation.infeasible_reason;
    }
    bool take = !have;
    if (have && r.feasible != best.feasible) take = r.feasible;
    else if (have && r.feasible && best.feasible)
      take = better_plan(r.evaluation.round_ms, 1, r.evaluation.peak_memory_fraction,
                         best.evaluation.round_ms, 1, best.evaluation.peak_memory_fraction);
    if (take) {
      best = std::move(r);
      have = true;
    }
  }
  best.planning_ms = elapsed_ms(start);
  return best;
}

PlanResult make_plan(const ProfileTables& t, const TrainingConfig& config, Strategy strategy) {
  switch (strategy) {
    case Strategy::hpp: return plan_hpp(t, config);
    case Strategy::dp: return plan_dp(t, config);
    case Strategy::pp: return plan_pp(t, config);
  }
  return plan_hpp(t, config);
}

}  // namespace asteroid::planner
