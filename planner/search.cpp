#include "planner/search.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
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

// The exact search for one chosen set (devices `dev`, in sorted order) and
// one M. `incumbent` is the best T_round known (shared across sets and M).
class SuffixSearch {
 public:
  SuffixSearch(const ProfileTables& t, const Rates& rates, const std::vector<int>& dev, int m,
               int b, int k_opt, int min_group, int max_group, double* incumbent,
               SearchStats* stats)
      : t_(t), rates_(rates), dev_(dev), k_(static_cast<int>(dev.size())), l_(t.layer_count()),
        m_(m), b_(b), k_opt_(k_opt), min_group_(min_group), max_group_(max_group),
        incumbent_(incumbent), stats_(stats) {
    qdim_ = std::min(m_, k_);
    prepare();
  }

  // Fluid lower bound of T_round for any plan on this set.
  double set_lower_bound() const { return m_ * b_ * rl_[idx_rl(l_, k_)] / k_; }

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
    for (int x = 0; x < k_; ++x)
      for (int a = 0; a < l_; ++a)
        rate_prefix_[x * (l_ + 1) + a + 1] = rate_prefix_[x * (l_ + 1) + a] + rates_.both[dev_[x]][a];
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

  void insert(std::vector<int>& front, const Entry& n) {
    for (int id : front) {
      const Entry& e = arena_[id];
      if (e.v <= n.v && e.a <= n.a && e.stages <= n.stages && e.peak <= n.peak) return;
    }
    front.erase(std::remove_if(front.begin(), front.end(),
                               [&](int id) {
                                 const Entry& e = arena_[id];
                                 return n.v <= e.v && n.a <= e.a && n.stages <= e.stages &&
                                        n.peak <= e.peak;
                               }),
                front.end());
    arena_.push_back(n);
    front.push_back(static_cast<int>(arena_.size()) - 1);
    ++stats_->entries;
  }

  void complete(const Entry& n) {
    ++stats_->complete_plans;
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
    std::vector<int> entries;
  };

  // Extends every suffix that starts at layer a with devices [i, k) by one
  // more stage in front of it. a == l_ && i == k_ is the empty suffix.
  void process(int a, int i) {
    const bool empty = (a == l_);
    std::vector<Alive> alive;
    double min_v = kInf;
    if (empty) {
      alive.push_back({0, 0, {}});
      min_v = 0;
    } else {
      double pre_f = b_ * rfl_[idx_rl(a, i)] / i;
      if (over(m_ * b_ * rl_[idx_rl(a, i)] / i, *incumbent_)) return;
      const int nc = static_cast<int>(class_rep_[i].size());
      for (int c = 0; c < nc; ++c)
        for (int q = 1; q <= qdim_; ++q) {
          std::vector<int>& f = fronts_[state(a, i, c, q)];
          if (f.empty()) continue;
          Alive al{c, q, {}};
          for (int id : f) {
            const Entry& e = arena_[id];
            if (over(e.v + e.a + pre_f, *incumbent_)) continue;
            al.entries.push_back(id);
            min_v = std::min(min_v, e.v);
          }
          std::vector<int>().swap(f);  // processed once; free the memory
          if (!al.entries.empty()) alive.push_back(std::move(al));
        }
      if (alive.empty()) return;
    }
    // Which K (in-flight micro-batches) the new stage may need.
    std::vector<int> need_list;
    for (const Alive& al : alive) need_list.push_back(std::min(m_, al.q + 1));
    std::sort(need_list.begin(), need_list.end());
    need_list.erase(std::unique(need_list.begin(), need_list.end()), need_list.end());
    const int min_k = need_list.front();

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
      const int a_hi = (h == 0) ? 0 : a - 1;
      const int a_lo = (h == 0) ? 0 : 1;
      for (int a2 = a_hi; a2 >= a_lo; --a2) {
        if (h > 0 && over(m_ * b_ * rl_[idx_rl(a2, h)] / h, *incumbent_)) continue;
        const double w = t_.weight_bytes(a2, a);
        const double fixed = w * (2 + k_opt_);
        const double stash = t_.stash_bytes(a2, a);
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
          if (over(m_ * fluid, *incumbent_) || over(fluid + min_v, *incumbent_)) break;
        }
        ++stats_->stage_allocations;
        greedy_split(t_, grp, g, a2, a, b_, nullptr, y0.data());
        double ef0 = 0, eb0 = 0, mm0 = 0;
        for (int x = 0; x < g; ++x) {
          double f = t_.fwd_ms(grp[x], a2, a, y0[x]);
          double bw = t_.bwd_ms(grp[x], a2, a, y0[x]);
          ef0 = std::max(ef0, f);
          eb0 = std::max(eb0, bw);
          mm0 = std::max(mm0, f + bw);
        }
        // With non-decreasing profiles, mm0 is the exact min-max, a lower
        // bound on E of this stage and of every longer one on this group.
        if (monotone && (over(m_ * mm0, *incumbent_) || over(mm0 + min_v, *incumbent_))) break;
        bool any = false;
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
          if (!pk.ok) continue;
          any = true;
          pk.peak = 0;
          for (int x = 0; x < g; ++x)
            pk.peak = std::max(pk.peak, (fixed + static_cast<double>(inflight) * ys[x] * stash) / mem[x]);
        }
        if (!any) {
          if (need_list.front() == min_k && !per_k.front().ok) break;  // monotone in the range
          continue;
        }
        const double ta = g > 1 ? 2.0 * (g - 1) / g * w * 8 / 1e3 / inner_[h * (k_ + 1) + i] : 0.0;
        const double pre_f = h > 0 ? b_ * rfl_[idx_rl(a2, h)] / h : 0.0;
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
            if (over(n.v + n.a + pre_f, *incumbent_)) continue;
            if (h == 0) complete(n);
            else insert(fronts_[state(a2, h, class_of_[h * (k_ + 1) + i], 1)], n);
            continue;
          }
          const double tau =
              b_ * t_.out_bytes(a - 1) * 8 / 1e3 / cross_[idx3(h, i, class_rep_[i][al.c])];
          const int q2 = std::min(qdim_, al.q + 1);
          for (int id : al.entries) {
            const Entry& s = arena_[id];
            n.v = std::max({m_ * e, e + m_ * (2 * tau), e + 2 * tau + s.v});
            n.a = std::max(ta, s.a - pk.eb - tau);
            n.stages = s.stages + 1;
            n.peak = std::max(s.peak, pk.peak);
            n.parent = id;
            if (over(n.v + n.a + pre_f, *incumbent_)) continue;
            if (h == 0) complete(n);
            else insert(fronts_[state(a2, h, class_of_[h * (k_ + 1) + i], q2)], n);
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
  for (int m : microbatch_choices(config)) {
    const int b = config.batch / m;
    Rates rates(t, b);
    for (int k : ks) {
      std::vector<int> dev = t.fastest(k);
      SuffixSearch search(t, rates, dev, m, b, k_opt, min_group, max_group, &incumbent, &stats);
      if (over(search.set_lower_bound(), incumbent)) {
        ++stats.chosen_sets_skipped;
        continue;
      }
      Chosen c{search.run(), k, m};
      if (!c.outcome.found) continue;
      bool take = !best.outcome.found || outcome_better(c.outcome, best.outcome);
      if (!take && !outcome_better(best.outcome, c.outcome)) {
        // Equal in T_round, stages and peak: fewer devices, then smaller M.
        take = c.k < best.k || (c.k == best.k && c.m < best.m);
      }
      if (take) {
        best = std::move(c);
        best_used = dev;
      }
    }
  }
  return finish(t, config, strategy, best, best_used, elapsed_ms(start), stats, "");
}

}  // namespace

bool same_round(double a, double b) {
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
