#include "planner/allocation.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

namespace asteroid::planner {

double stage_memory_bytes(const ProfileTables& t, int begin, int end, int y, int inflight,
                          int k_opt) {
  return t.weight_bytes(begin, end) * (2 + k_opt) +
         static_cast<double>(inflight) * y * t.stash_bytes(begin, end);
}

int sample_capacity(const ProfileTables& t, int d, int begin, int end, int inflight, int k_opt,
                    int max_y) {
  const double cap = t.memory_bytes(d);
  auto fits = [&](int y) { return stage_memory_bytes(t, begin, end, y, inflight, k_opt) <= cap; };
  if (!fits(0)) return -1;
  const double per = static_cast<double>(inflight) * t.stash_bytes(begin, end);
  if (per <= 0 || fits(max_y)) return max_y;
  double room = cap - t.weight_bytes(begin, end) * (2 + k_opt);
  int y = static_cast<int>(std::min<double>(max_y, std::floor(room / per)));
  y = std::max(y, 0);
  // Settle on the exact inequality the evaluator uses.
  while (y > 0 && !fits(y)) --y;
  while (y < max_y && fits(y + 1)) ++y;
  return y;
}

bool greedy_split(const ProfileTables& t, const int* group, int g, int begin, int end,
                  int samples, const int* caps, int* y_out) {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  // next[i]: device i's fwd+bwd stage time after one more sample (inf: full).
  double next_small[64];
  std::vector<double> next_big;
  double* next = next_small;
  if (g > 64) {
    next_big.resize(g);
    next = next_big.data();
  }
  auto after_gift = [&](int i) {
    int y = y_out[i] + 1;
    if (caps && y > caps[i]) return kInf;
    double f, b;
    t.times(group[i], begin, end, y, &f, &b);
    return f + b;
  };
  if (g == 1) {  // every sample goes to the one device, as far as it fits
    y_out[0] = caps ? std::min(samples, caps[0]) : samples;
    return y_out[0] == samples;
  }
  for (int i = 0; i < g; ++i) y_out[i] = 1;
  for (int i = 0; i < g; ++i) next[i] = after_gift(i);
  for (int r = samples - g; r > 0; --r) {
    int best = -1;
    double best_t = kInf;
    for (int i = 0; i < g; ++i)
      if (next[i] < best_t) {
        best_t = next[i];
        best = i;
      }
    if (best < 0) return false;
    ++y_out[best];
    next[best] = after_gift(best);
  }
  return true;
}

void stage_times(const ProfileTables& t, const int* group, int g, const int* y, int begin,
                 int end, double* ef_ms, double* eb_ms) {
  double ef = 0, eb = 0;
  for (int i = 0; i < g; ++i) {
    double f, b;
    t.times(group[i], begin, end, y[i], &f, &b);
    ef = std::max(ef, f);
    eb = std::max(eb, b);
  }
  *ef_ms = ef;
  *eb_ms = eb;
}

StageAllocation allocate_samples(const ProfileTables& t, const std::vector<int>& group, int begin,
                                 int end, int microbatch_size, int inflight, int k_opt) {
  StageAllocation out;
  const int g = static_cast<int>(group.size());
  if (g == 0 || g > microbatch_size) {
    out.why = "a group of " + std::to_string(g) + " devices cannot split " +
              std::to_string(microbatch_size) + " samples with at least one each";
    return out;
  }
  std::vector<int> caps(g);
  for (int i = 0; i < g; ++i) {
    int d = group[i];
    caps[i] = sample_capacity(t, d, begin, end, inflight, k_opt, microbatch_size);
    if (caps[i] < 1) {
      double need = stage_memory_bytes(t, begin, end, 1, inflight, k_opt);
      std::ostringstream s;
      s.precision(15);
      s << "device " << t.id(d) << " needs " << need << " bytes for layers [" << begin << ", "
        << end << ") with one sample, has " << t.memory_bytes(d) << ": short by "
        << need - t.memory_bytes(d) << " bytes";
      out.why = s.str();
      return out;
    }
  }
  out.samples.assign(g, 0);
  if (!greedy_split(t, group.data(), g, begin, end, microbatch_size, caps.data(),
                    out.samples.data())) {
    int placed = 0;
    for (int y : out.samples) placed += y;
    // The device closest to taking one more sample says how far off we are.
    double short_by = std::numeric_limits<double>::infinity();
    int who = group[0];
    for (int i = 0; i < g; ++i) {
      double s = stage_memory_bytes(t, begin, end, out.samples[i] + 1, inflight, k_opt) -
                 t.memory_bytes(group[i]);
      if (s < short_by) {
        short_by = s;
        who = group[i];
      }
    }
    std::ostringstream s;
    s.precision(15);
    s << "layers [" << begin << ", " << end << "): only " << placed << " of " << microbatch_size
      << " samples fit; device " << t.id(who) << " is short by " << short_by
      << " bytes for one more";
    out.why = s.str();
    out.samples.clear();
    return out;
  }
  stage_times(t, group.data(), g, out.samples.data(), begin, end, &out.ef_ms, &out.eb_ms);
  for (int i = 0; i < g; ++i)
    out.peak_fraction =
        std::max(out.peak_fraction,
                 stage_memory_bytes(t, begin, end, out.samples[i], inflight, k_opt) /
                     t.memory_bytes(group[i]));
  out.feasible = true;
  return out;
}

}  // namespace asteroid::planner
