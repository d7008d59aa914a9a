#include "planner/replan.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>

#include "planner/allocation.h"

namespace asteroid::planner {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// A plan under construction: layer ranges and groups (device indices in the
// planner's sorted order); samples come from Algorithm 1.
struct Draft {
  std::vector<int> begin, end;
  std::vector<std::vector<int>> groups;
};

struct Scored {
  int failing = 0;  // stages whose group cannot hold its layers
  double round = kInf;
  std::string why;
  Plan plan;
};

bool better(const Scored& a, const Scored& b) {
  if (a.failing != b.failing) return a.failing < b.failing;
  return a.round < b.round && !same_round(a.round, b.round);
}

Scored score(const Draft& d, const Plan& running, const ProfileTables& t, OptimizerKind opt, WirePolicy wire) {
  Scored sc;
  Plan& plan = sc.plan;
  plan.strategy = "custom";
  plan.batch = running.batch;
  plan.microbatches = running.microbatches;
  plan.microbatch_size = running.microbatch_size;
  plan.codec_block = running.codec_block;
  const int p = static_cast<int>(d.groups.size());
  const int b = running.microbatch_size;
  for (int s = 0; s < p; ++s) {
    Stage st;
    st.begin = d.begin[s];
    st.end = d.end[s];
    const std::vector<int>& g = d.groups[s];
    StageAllocation a =
        allocate_samples(t, g, st.begin, st.end, b, std::min(plan.microbatches, p - s), optimizer_state_factor(opt));
    if (!a.feasible) {
      ++sc.failing;
      if (sc.why.empty()) sc.why = "stage " + std::to_string(s) + ": " + a.why;
      // An equal split, so that the plan can still be timed and shown.
      a.samples.assign(g.size(), 0);
      for (size_t i = 0; i < g.size(); ++i) a.samples[i] = b / static_cast<int>(g.size()) + (static_cast<int>(i) < b % static_cast<int>(g.size()) ? 1 : 0);
    }
    for (size_t i = 0; i < g.size(); ++i) st.devices.push_back({t.id(g[i]), a.samples[i]});
    plan.stages.push_back(std::move(st));
  }
  for (const Stage& st : plan.stages)
    for (const StageDevice& sd : st.devices)
      if (sd.samples < 1) {
        sc.failing = std::max(sc.failing, 1);
        sc.round = kInf;
        if (sc.why.empty()) sc.why = "a group has more devices than samples";
        return sc;
      }
  EvalOptions eo;
  eo.optimizer = opt;
  // The new groups' codecs: usable by every device on both ends, chosen
  // for these groups (choose_codecs). The wire is part of the job's
  // mathematics, so a boundary the running plan has too (the same last
  // layer) keeps its codec, and a stage with the same layers keeps its
  // all-reduce codec: a replay then computes what the fault-free run did.
  choose_codecs(plan, t, wire, eo);
  for (Stage& st : plan.stages) {
    for (size_t r = 0; r < running.stages.size(); ++r) {
      const Stage& old = running.stages[r];
      if (old.end == st.end && r + 1 < running.stages.size() && &st != &plan.stages.back()) st.to_next = old.to_next;
      if (old.begin == st.begin && old.end == st.end && st.devices.size() > 1) st.allreduce = old.allreduce;
    }
  }
  sc.round = evaluate(plan, t, eo).round_ms;
  return sc;
}

void sort_group(std::vector<int>& g, const ProfileTables& t) {
  std::sort(g.begin(), g.end(), [&](int a, int b) { return t.rank(a) < t.rank(b); });
}

std::set<std::string> check_ids(const Plan& running, const ProfileTables& t, const std::vector<std::string>& lost,
                                const std::vector<std::string>& added) {
  std::set<std::string> in_plan;
  for (const Stage& s : running.stages)
    for (const StageDevice& d : s.devices) in_plan.insert(d.id);
  std::set<std::string> known = in_plan;
  for (const std::string& id : running.idle_devices) known.insert(id);
  std::set<std::string> lost_set;
  for (const std::string& id : lost) {
    if (!known.count(id)) throw std::invalid_argument("lost device \"" + id + "\" is not in the running plan");
    lost_set.insert(id);
  }
  for (const std::string& id : added) {
    if (t.cluster().index_of(id) < 0) throw std::invalid_argument("added device \"" + id + "\" is not in the cluster");
    if (in_plan.count(id)) throw std::invalid_argument("added device \"" + id + "\" already runs a stage");
    if (lost_set.count(id)) throw std::invalid_argument("device \"" + id + "\" is both lost and added");
  }
  return lost_set;
}

// Steps 1-2: each stage with survivors keeps its layers on them; a stage
// without survivors joins the next stage that has some (the holder of its
// replica), or the one before it when none follows. `survivors` holds, per
// stage of `running`, its members that are left (at least one stage has some).
Draft merge_orphans(const Plan& running, const std::vector<std::vector<int>>& survivors) {
  const int p = static_cast<int>(running.stages.size());
  std::vector<int> target(p, -1);
  for (int s = 0; s < p; ++s) {
    if (!survivors[s].empty()) {
      target[s] = s;
      continue;
    }
    for (int x = s + 1; x < p && target[s] < 0; ++x)
      if (!survivors[x].empty()) target[s] = x;
    for (int x = s - 1; x >= 0 && target[s] < 0; --x)
      if (!survivors[x].empty()) target[s] = x;
  }
  Draft d;
  for (int s = 0; s < p; ++s) {
    if (target[s] != s) continue;
    int b = running.stages[s].begin, e = running.stages[s].end;
    for (int x = 0; x < p; ++x)
      if (target[x] == s) {
        b = std::min(b, running.stages[x].begin);
        e = std::max(e, running.stages[x].end);
      }
    d.begin.push_back(b);
    d.end.push_back(e);
    d.groups.push_back(survivors[s]);
  }
  return d;
}

void finish_moves(ReplanResult& r, const Plan& running, const ProfileTables& t, OptimizerKind opt,
                  const std::vector<std::string>& lost) {
  r.moves = layer_moves(running, r.plan, t, opt, lost);
  r.layers_moved = 0;
  r.bytes_moved = 0;
  for (const LayerMove& m : r.moves)
    if (!m.local) {
      r.layers_moved += m.end - m.begin;
      r.bytes_moved += m.bytes;
    }
}

double ms_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

std::vector<LayerMove> layer_moves(const Plan& before, const Plan& after, const ProfileTables& t,
                                   OptimizerKind optimizer, const std::vector<std::string>& lost) {
  const std::set<std::string> gone(lost.begin(), lost.end());
  const double factor = 1 + optimizer_state_factor(optimizer);
  std::map<std::string, std::pair<int, int>> held;
  for (const Stage& s : before.stages)
    for (const StageDevice& d : s.devices)
      if (!gone.count(d.id)) held[d.id] = {s.begin, s.end};
  // Who can send the layers of each old stage.
  std::vector<std::string> source(before.stages.size(), "checkpoint");
  for (size_t s = 0; s < before.stages.size(); ++s) {
    for (const StageDevice& d : before.stages[s].devices)
      if (!gone.count(d.id)) {
        source[s] = d.id;
        break;
      }
    if (source[s] == "checkpoint") {
      std::optional<std::string> holder = replica_holder(before, static_cast<int>(s));
      if (holder && !gone.count(*holder)) source[s] = *holder;
    }
  }
  std::vector<LayerMove> moves;
  for (const Stage& st : after.stages)
    for (const StageDevice& d : st.devices) {
      std::vector<std::pair<int, int>> missing;
      auto it = held.find(d.id);
      if (it == held.end()) {
        missing.push_back({st.begin, st.end});
      } else {
        auto [hb, he] = it->second;
        if (st.begin < std::min(hb, st.end)) missing.push_back({st.begin, std::min(hb, st.end)});
        if (std::max(he, st.begin) < st.end) missing.push_back({std::max(he, st.begin), st.end});
        if (he <= st.begin || hb >= st.end) missing = {{st.begin, st.end}};
      }
      for (auto [x, y] : missing)
        for (size_t s = 0; s < before.stages.size(); ++s) {
          int lo = std::max(x, before.stages[s].begin), hi = std::min(y, before.stages[s].end);
          if (lo >= hi) continue;
          LayerMove m;
          m.device = d.id;
          m.begin = lo;
          m.end = hi;
          m.bytes = t.weight_bytes(lo, hi) * factor;
          m.source = source[s];
          m.local = m.source == d.id;
          moves.push_back(m);
        }
    }
  return moves;
}

ReplanResult replan_heavy(const Plan& running, const Cluster& cluster, const Profile& profile,
                          const TrainingConfig& config, const std::vector<std::string>& lost,
                          const std::vector<std::string>& added) {
  auto start = std::chrono::steady_clock::now();
  ProfileTables t(cluster, profile);
  validate_plan(running, t);
  const std::set<std::string> gone = check_ids(running, t, lost, added);
  std::set<std::string> keep;
  for (const Stage& s : running.stages)
    for (const StageDevice& d : s.devices) keep.insert(d.id);
  for (const std::string& id : running.idle_devices) keep.insert(id);
  for (const std::string& id : added) keep.insert(id);
  for (const std::string& id : gone) keep.erase(id);
  ReplanResult r;
  if (keep.empty()) {
    r.why = "every device of the plan is lost";
    r.planning_ms = ms_since(start);
    return r;
  }
  Cluster sub;
  sub.default_bandwidth_mbps = cluster.default_bandwidth_mbps;
  for (const Device& d : cluster.devices)
    if (keep.count(d.id)) sub.devices.push_back(d);
  for (const Link& l : cluster.links)
    if (keep.count(l.a) && keep.count(l.b)) sub.links.push_back(l);
  ProfileTables ts(sub, profile);
  TrainingConfig c = config;
  c.batch = running.batch;
  c.microbatches = running.microbatches;
  c.codec_block = running.codec_block;
  PlanResult pr = plan_hpp(ts, c);
  r.feasible = pr.feasible;
  r.why = pr.why;
  if (!pr.plan.stages.empty()) {
    r.plan = pr.plan;
    EvalOptions eo;
    eo.optimizer = config.optimizer;
    r.evaluation = evaluate(r.plan, t, eo);
    r.plan.predicted_round_ms = r.evaluation.round_ms;
    finish_moves(r, running, t, config.optimizer, lost);
  }
  r.planning_ms = ms_since(start);
  return r;
}

ReplanResult replan_lightweight(const Plan& running, const Cluster& cluster, const Profile& profile,
                                const TrainingConfig& config, const std::vector<std::string>& lost,
                                const std::vector<std::string>& added, const ReplanOptions& options) {
  auto start = std::chrono::steady_clock::now();
  ProfileTables t(cluster, profile);
  validate_plan(running, t);
  const std::set<std::string> gone = check_ids(running, t, lost, added);
  const OptimizerKind opt = config.optimizer;
  ReplanResult r;

  // 1-2. Survivors keep their stages; orphaned stages join their neighbour.
  const int p = static_cast<int>(running.stages.size());
  std::vector<std::vector<int>> survivors(p);
  bool any = false;
  for (int s = 0; s < p; ++s) {
    for (const StageDevice& d : running.stages[s].devices)
      if (!gone.count(d.id)) survivors[s].push_back(t.index(d.id));
    sort_group(survivors[s], t);
    any = any || !survivors[s].empty();
  }
  // 5. (below) Whenever the local repair cannot fit, the heavy plan if it fits.
  auto fall_back = [&](ReplanResult& light) {
    if (options.fall_back_to_heavy) {
      ReplanResult heavy = replan_heavy(running, cluster, profile, config, lost, added);
      if (heavy.feasible) {
        heavy.fell_back_to_heavy = true;
        heavy.planning_ms = ms_since(start);
        return heavy;
      }
    }
    light.planning_ms = ms_since(start);
    return light;
  };
  if (!any) {
    r.why = "every device of the running plan's stages is lost";
    return fall_back(r);
  }
  Draft d = merge_orphans(running, survivors);
  Scored best = score(d, running, t, opt, config.wire);

  // 2b. Or one member of a neighbouring group of two or more steps out to
  // run an orphaned stage alone, where that lowers T_round.
  for (int s = 0; options.step_out && s < p; ++s) {
    if (!survivors[s].empty()) continue;
    std::vector<std::vector<int>> chosen;
    for (int nb : {s - 1, s + 1}) {
      if (nb < 0 || nb >= p || survivors[nb].size() < 2) continue;
      for (int member : survivors[nb]) {
        auto alt = survivors;
        alt[nb].erase(std::find(alt[nb].begin(), alt[nb].end(), member));
        alt[s] = {member};
        Draft x = merge_orphans(running, alt);
        Scored sc = score(x, running, t, opt, config.wire);
        if (better(sc, best)) {
          best = std::move(sc);
          d = std::move(x);
          chosen = std::move(alt);
        }
      }
    }
    if (!chosen.empty()) survivors = std::move(chosen);
  }

  // 3. Added devices join where they help most.
  std::vector<std::string> idle;
  for (const std::string& id : running.idle_devices)
    if (!gone.count(id)) idle.push_back(id);
  for (const std::string& id : added) {
    const int dev = t.index(id);
    int best_stage = -1;
    Scored with = best;
    for (size_t s = 0; s < d.groups.size(); ++s) {
      if (static_cast<int>(d.groups[s].size()) + 1 > running.microbatch_size) continue;
      Draft x = d;
      x.groups[s].push_back(dev);
      sort_group(x.groups[s], t);
      Scored sc = score(x, running, t, opt, config.wire);
      if (better(sc, with)) {
        with = sc;
        best_stage = static_cast<int>(s);
      }
    }
    if (best_stage >= 0) {
      d.groups[best_stage].push_back(dev);
      sort_group(d.groups[best_stage], t);
      best = with;
      idle.erase(std::remove(idle.begin(), idle.end(), id), idle.end());
    } else if (std::find(idle.begin(), idle.end(), id) == idle.end()) {
      idle.push_back(id);
    }
  }

  // 4. A few layers across each boundary while that helps.
  const int n = static_cast<int>(d.groups.size());
  if (options.max_shift > 0 && n > 1) {
    const std::vector<int> base(d.end.begin(), d.end.end() - 1);  // boundaries after the merge
    for (int round = 0; round < n * (2 * options.max_shift + 1); ++round) {
      Draft best_draft;
      Scored cand_best = best;
      bool improved = false;
      for (int bnd = 0; bnd + 1 < n; ++bnd)
        for (int off = -options.max_shift; off <= options.max_shift; ++off) {
          const int at = base[bnd] + off;
          if (at == d.end[bnd] || at <= d.begin[bnd] || at >= d.end[bnd + 1]) continue;
          Draft x = d;
          x.end[bnd] = at;
          x.begin[bnd + 1] = at;
          Scored sc = score(x, running, t, opt, config.wire);
          if (better(sc, cand_best)) {
            cand_best = sc;
            best_draft = x;
            improved = true;
          }
        }
      if (!improved) break;
      d = best_draft;
      best = cand_best;
    }
  }

  r.plan = best.plan;
  r.plan.idle_devices = idle;
  EvalOptions eo;
  eo.optimizer = opt;
  r.evaluation = evaluate(r.plan, t, eo);
  r.plan.predicted_round_ms = r.evaluation.round_ms;
  r.feasible = best.failing == 0 && r.evaluation.feasible;
  r.why = r.feasible ? "" : (best.why.empty() ? r.evaluation.infeasible_reason : best.why);
  finish_moves(r, running, t, opt, lost);

  if (!r.feasible) return fall_back(r);
  r.planning_ms = ms_since(start);
  return r;
}

}  // namespace asteroid::planner
