#include "planner/cost_model.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <sstream>
#include <stdexcept>

#include "planner/allocation.h"

namespace asteroid::planner {

void validate_plan(const Plan& plan, const ProfileTables& t) {
  auto fail = [](const std::string& m) { throw std::invalid_argument("invalid plan: " + m); };
  if (plan.microbatches < 1) fail("microbatches must be >= 1");
  if (plan.microbatch_size < 1) fail("microbatch_size must be >= 1");
  if (plan.batch != plan.microbatches * plan.microbatch_size)
    fail("batch " + std::to_string(plan.batch) + " != microbatches " +
         std::to_string(plan.microbatches) + " x microbatch_size " +
         std::to_string(plan.microbatch_size));
  if (plan.stages.empty()) fail("no stages");
  std::set<std::string> seen;
  int next = 0;
  for (size_t s = 0; s < plan.stages.size(); ++s) {
    const Stage& st = plan.stages[s];
    std::string where = "stages[" + std::to_string(s) + "]";
    if (st.begin != next || st.end <= st.begin)
      fail(where + ".layers [" + std::to_string(st.begin) + ", " + std::to_string(st.end) +
           ") does not continue at layer " + std::to_string(next));
    next = st.end;
    if (st.devices.empty()) fail(where + " has no devices");
    int sum = 0;
    for (const StageDevice& d : st.devices) {
      if (t.cluster().index_of(d.id) < 0) fail(where + ": unknown device \"" + d.id + "\"");
      if (!seen.insert(d.id).second) fail(where + ": device \"" + d.id + "\" used twice");
      if (d.samples < 1) fail(where + ": device \"" + d.id + "\" has samples < 1");
      sum += d.samples;
    }
    if (sum != plan.microbatch_size)
      fail(where + ": samples add up to " + std::to_string(sum) + ", not microbatch_size " +
           std::to_string(plan.microbatch_size));
  }
  if (next != t.layer_count())
    fail("stages end at layer " + std::to_string(next) + ", the model has " +
         std::to_string(t.layer_count()));
  if (plan.stages.back().to_next != Codec::fp32)
    fail("the last stage sends nothing, yet its to_next codec is " +
         std::string(wire_codec::codec_name(plan.stages.back().to_next)));
  if (plan.codec_block < 1 || plan.codec_block > wire_codec::kMaxBlock)
    fail("codec_block " + std::to_string(plan.codec_block) + " is not in [1, " +
         std::to_string(wire_codec::kMaxBlock) + "]");
}

double wire_bytes(Codec c, double bytes, uint32_t block) {
  if (c == Codec::fp32) return bytes;
  const uint64_t values = static_cast<uint64_t>(std::ceil(bytes / 4));
  return static_cast<double>(wire_codec::encoded_bytes(c, 1, values, block));
}

double ring_allreduce_ms(Codec c, double w, int n, double inner, uint32_t block) {
  return 2.0 * (n - 1) / n * wire_bytes(c, w, block) * 8 / 1e3 / inner;
}

TransferTime transfer_time(const ProfileTables& t, const Stage& from, const Stage& to, Codec codec,
                           uint32_t block, int microbatch_size) {
  TransferTime x;
  double cross = std::numeric_limits<double>::infinity();
  for (const StageDevice& a : from.devices)
    for (const StageDevice& c : to.devices) cross = std::min(cross, t.bandwidth(t.index(a.id), t.index(c.id)));
  x.bandwidth_mbps = cross;
  const double out = t.out_bytes(from.end - 1);
  x.bytes_per_sample = wire_bytes(codec, out, block);
  const double base = microbatch_size * x.bytes_per_sample * 8 / 1e3 / cross;
  x.ef_ms = x.eb_ms = base;
  if (codec == Codec::fp32) return x;
  // The slowest encoder / decoder of a group, each device on its own samples.
  auto slowest = [&](const Stage& st, bool encode) {
    double worst = 0;
    for (const StageDevice& d : st.devices) {
      const int i = t.index(d.id);
      if (!t.has_codec(i, codec)) {
        if (std::find(x.unprofiled.begin(), x.unprofiled.end(), d.id) == x.unprofiled.end())
          x.unprofiled.push_back(d.id);
        continue;
      }
      worst = std::max(worst, codec_ms(d.samples * out, encode ? t.encode_mb_s(i, codec) : t.decode_mb_s(i, codec)));
    }
    return worst;
  };
  const double enc_f = slowest(from, true), dec_f = slowest(to, false);
  const double enc_b = slowest(to, true), dec_b = slowest(from, false);
  x.ef_ms = base + enc_f + dec_f;
  x.eb_ms = base + enc_b + dec_b;
  x.codec_ef_ms = enc_f + dec_f;
  x.codec_eb_ms = enc_b + dec_b;
  return x;
}

AllReduceTime allreduce_time(const ProfileTables& t, const Stage& stage, Codec codec, uint32_t block) {
  AllReduceTime r;
  const int n = static_cast<int>(stage.devices.size());
  if (n < 2) return r;
  std::vector<int> g;
  for (const StageDevice& d : stage.devices) g.push_back(t.index(d.id));
  double inner = std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < g.size(); ++i)
    for (size_t j = i + 1; j < g.size(); ++j) inner = std::min(inner, t.bandwidth(g[i], g[j]));
  r.bandwidth_mbps = inner;
  const double w = t.weight_bytes(stage.begin, stage.end);
  r.bytes = wire_bytes(codec, w, block);
  r.ta_ms = ring_allreduce_ms(codec, w, n, inner, block);
  if (codec == Codec::fp32) return r;
  double worst = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    if (!t.has_codec(g[i], codec)) {
      r.unprofiled.push_back(stage.devices[i].id);
      continue;
    }
    worst = std::max(worst, allreduce_codec_ms(w, n, t.encode_mb_s(g[i], codec), t.decode_mb_s(g[i], codec)));
  }
  r.codec_ms = worst;
  r.ta_ms += worst;
  return r;
}

double round_latency(const std::vector<double>& ef, const std::vector<double>& eb,
                     const std::vector<double>& ta, int m, int* dominant, std::vector<double>* tw,
                     std::vector<double>* te) {
  const size_t n = ef.size();
  std::vector<double> e(n);
  for (size_t i = 0; i < n; ++i) e[i] = ef[i] + eb[i];
  // Dominant step: first maximum of M E_c + sum_{i<c} E_i.
  size_t dm = 0;
  double best = -std::numeric_limits<double>::infinity(), prefix = 0;
  for (size_t c = 0; c < n; ++c) {
    double v = m * e[c] + prefix;
    if (v > best) {
      best = v;
      dm = c;
    }
    prefix += e[c];
  }
  double round = 0, wait = 0;
  std::vector<double> tws(n), tes(n);
  for (size_t s = 0; s < n; ++s) {
    double exec = m * e[dm];
    if (s < dm) {
      for (size_t i = s; i < dm; ++i) exec += e[i];
    } else if (s > dm) {
      for (size_t i = dm; i < s; ++i) exec -= e[i];
    }
    tws[s] = wait;
    tes[s] = exec;
    round = std::max(round, wait + exec + ta[s]);
    wait += ef[s];
  }
  if (dominant) *dominant = static_cast<int>(dm);
  if (tw) *tw = std::move(tws);
  if (te) *te = std::move(tes);
  return round;
}

double round_latency_closed_form(const std::vector<double>& ef, const std::vector<double>& eb,
                                 const std::vector<double>& ta, int m) {
  double v = -std::numeric_limits<double>::infinity(), a = -std::numeric_limits<double>::infinity();
  double pe = 0, pb = 0;
  for (size_t i = 0; i < ef.size(); ++i) {
    v = std::max(v, m * (ef[i] + eb[i]) + pe);
    a = std::max(a, ta[i] - pb);
    pe += ef[i] + eb[i];
    pb += eb[i];
  }
  return v + a;
}

std::optional<std::string> replica_holder(const Plan& plan, int stage) {
  const int p = static_cast<int>(plan.stages.size());
  if (stage < 0 || stage >= p || p < 2) return std::nullopt;
  if (plan.stages[stage].devices.size() != 1) return std::nullopt;
  const Stage& next = plan.stages[(stage + 1) % p];
  return next.devices.front().id;
}

double replica_bytes(const ProfileTables& t, const Stage& stage, OptimizerKind optimizer) {
  return t.weight_bytes(stage.begin, stage.end) * (1 + optimizer_state_factor(optimizer));
}

Evaluation evaluate(const Plan& plan, const Cluster& cluster, const Profile& profile,
                    const EvalOptions& options) {
  ProfileTables tables(cluster, profile);
  return evaluate(plan, tables, options);
}

Evaluation evaluate(const Plan& plan, const ProfileTables& t, const EvalOptions& options) {
  validate_plan(plan, t);
  const int p = static_cast<int>(plan.stages.size());
  const int m = plan.microbatches;
  const int b = plan.microbatch_size;
  const int k_opt = optimizer_state_factor(options.optimizer);

  Evaluation ev;
  std::vector<std::vector<int>> groups(p);
  for (int s = 0; s < p; ++s)
    for (const StageDevice& d : plan.stages[s].devices) groups[s].push_back(t.index(d.id));

  std::vector<double> ef, eb, ta;
  for (int s = 0; s < p; ++s) {
    const Stage& st = plan.stages[s];
    const std::vector<int>& g = groups[s];
    StepTime step;
    step.kind = StepKind::compute;
    step.stage = s;
    for (size_t i = 0; i < g.size(); ++i) {
      double f = t.fwd_ms(g[i], st.begin, st.end, st.devices[i].samples);
      double bw = t.bwd_ms(g[i], st.begin, st.end, st.devices[i].samples);
      ev.device_fwd_ms.push_back(f);
      ev.device_bwd_ms.push_back(bw);
      step.ef_ms = std::max(step.ef_ms, f);
      step.eb_ms = std::max(step.eb_ms, bw);
    }
    if (g.size() > 1) {
      AllReduceTime ar = allreduce_time(t, st, st.allreduce, plan.codec_block);
      step.ta_ms = ar.ta_ms;
      step.bandwidth_mbps = ar.bandwidth_mbps;
      step.codec = st.allreduce;
      step.wire_bytes = ar.bytes;
      step.codec_ta_ms = ar.codec_ms;
      for (const std::string& id : ar.unprofiled)
        ev.warnings.push_back("stage " + std::to_string(s) + " all-reduce: " + wire_codec::codec_name(st.allreduce) +
                              " not profiled on " + id + ": no codec time charged for it");
    }
    ev.steps.push_back(step);
    if (s + 1 < p) {
      StepTime tr;
      tr.kind = StepKind::transfer;
      tr.stage = s;
      TransferTime x = transfer_time(t, st, plan.stages[s + 1], st.to_next, plan.codec_block, b);
      tr.bandwidth_mbps = x.bandwidth_mbps;
      tr.ef_ms = x.ef_ms;
      tr.eb_ms = x.eb_ms;
      tr.codec = st.to_next;
      tr.wire_bytes = x.bytes_per_sample;
      tr.codec_ef_ms = x.codec_ef_ms;
      tr.codec_eb_ms = x.codec_eb_ms;
      for (const std::string& id : x.unprofiled)
        ev.warnings.push_back("stage " + std::to_string(s) + " -> " + std::to_string(s + 1) + ": " +
                              wire_codec::codec_name(st.to_next) + " not profiled on " + id + ": no codec time charged for it");
      ev.steps.push_back(tr);
    }
  }
  for (const StepTime& s : ev.steps) {
    ef.push_back(s.ef_ms);
    eb.push_back(s.eb_ms);
    ta.push_back(s.ta_ms);
  }
  std::vector<double> tw, te;
  ev.round_ms = round_latency(ef, eb, ta, m, &ev.dominant_step, &tw, &te);
  for (size_t i = 0; i < ev.steps.size(); ++i) {
    ev.steps[i].tw_ms = tw[i];
    ev.steps[i].te_ms = te[i];
  }
  ev.throughput = ev.round_ms > 0 ? plan.batch / ev.round_ms : 0;

  // Memory: W (2 + k_opt) + K_p y_d stash, K_p = min(M, P - p).
  for (int s = 0; s < p; ++s) {
    const Stage& st = plan.stages[s];
    const int inflight = std::min(m, p - s);
    for (size_t i = 0; i < st.devices.size(); ++i) {
      DeviceMemory mem;
      mem.id = st.devices[i].id;
      mem.stage = s;
      mem.state_bytes = t.weight_bytes(st.begin, st.end) * (2 + k_opt);
      mem.activation_bytes =
          static_cast<double>(inflight) * st.devices[i].samples * t.stash_bytes(st.begin, st.end);
      mem.capacity_bytes = t.memory_bytes(groups[s][i]);
      ev.memory.push_back(mem);
    }
  }
  if (options.count_replica_bytes) {
    for (int s = 0; s < p; ++s) {
      std::optional<std::string> holder = replica_holder(plan, s);
      if (!holder) continue;
      for (DeviceMemory& mem : ev.memory)
        if (mem.id == *holder) mem.replica_bytes += replica_bytes(t, plan.stages[s], options.optimizer);
    }
  }
  for (const DeviceMemory& mem : ev.memory) {
    ev.peak_memory_fraction = std::max(ev.peak_memory_fraction, mem.fraction());
    if (!mem.fits() && ev.feasible) {
      ev.feasible = false;
      std::ostringstream s;
      s.precision(15);
      s << "device " << mem.id << " (stage " << mem.stage << ") needs " << mem.used_bytes()
        << " bytes (state " << mem.state_bytes << " + activations " << mem.activation_bytes;
      if (mem.replica_bytes > 0) s << " + replicas " << mem.replica_bytes;
      s << "), has " << mem.capacity_bytes << ": short by " << mem.used_bytes() - mem.capacity_bytes
        << " bytes";
      ev.infeasible_reason = s.str();
    }
  }
  return ev;
}

}  // namespace asteroid::planner
