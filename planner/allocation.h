// Intra-stage allocation (the paper's Algorithm 1) exactly as COST_MODEL.md
// defines it: every device of the group starts with one sample; each further
// sample goes to the device whose fwd+bwd stage time after the gift is
// smallest among the devices that still fit in memory, ties to the device
// that comes first in the group (callers list groups in the planner's sorted
// device order). Deterministic; with non-decreasing profiles it reaches the
// minimum of max_d (fwd+bwd time at y_d).
#pragma once

#include <string>
#include <vector>

#include "planner/profile_tables.h"

namespace asteroid::planner {

struct StageAllocation {
  bool feasible = false;
  std::string why;           // when infeasible: the device and the bytes short
  std::vector<int> samples;  // y_d, in group order
  double ef_ms = 0;          // max over the group of forward time at y_d
  double eb_ms = 0;          // max over the group of backward time at y_d
  double peak_fraction = 0;  // max over the group of memory used / capacity
};

// Bytes device d needs to hold stage [begin, end) with y samples of each of
// `inflight` micro-batches in flight: W (2 + k_opt) + inflight * y * stash.
double stage_memory_bytes(const ProfileTables& t, int begin, int end, int y, int inflight,
                          int k_opt);

// Largest y (capped at max_y) such that device d fits; -1 when even the
// weights do not fit, 0 when one sample does not.
int sample_capacity(const ProfileTables& t, int d, int begin, int end, int inflight, int k_opt,
                    int max_y);

// The greedy split of `samples` over group[0..g) for layers [begin, end).
// caps[i] bounds y of group[i] (nullptr: no bound). Returns false when some
// sample cannot be placed; y_out receives the split. REQUIRES: g <= samples,
// every cap >= 1.
bool greedy_split(const ProfileTables& t, const int* group, int g, int begin, int end,
                  int samples, const int* caps, int* y_out);

// Algorithm 1 for one stage: `group` lists device indices in sorted order,
// `inflight` is K_p = min(M, P - p) of the stage.
StageAllocation allocate_samples(const ProfileTables& t, const std::vector<int>& group, int begin,
                                 int end, int microbatch_size, int inflight, int k_opt);

// Ef, Eb and peak fraction of a given split (no allocation).
void stage_times(const ProfileTables& t, const int* group, int g, const int* y, int begin,
                 int end, double* ef_ms, double* eb_ms);

}  // namespace asteroid::planner
