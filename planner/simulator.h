// A discrete-event simulation of one training round as the runtime runs it
// (ARCHITECTURE.md), not of the closed formula of COST_MODEL.md:
//   - every device of a stage runs its own y_d samples of each micro-batch;
//   - every member runs the stage actors' 1F1B rule (planner/schedule.h):
//     stage p admits at most K_p = min(M, P - p) forward micro-batches that
//     have not come back, in the canonical order;
//   - activations and gradients are re-split between groups by sample index:
//     each piece travels over its own link (a -> b), one transfer at a time
//     per direction of a link, in the order they were sent; in the
//     boundary's codec, a piece holds the link for its sender's encode, its
//     encoded bytes and its receiver's decode;
//   - after its M-th backward a group all-reduces its gradients (Ta_s of
//     the cost model in the group's codec, starting when the group's last
//     member is done);
//   - then every member applies its optimizer update (profile.json
//     "update_ms" of EvalOptions::optimizer; none when not profiled), its
//     last work of the round.
// Deterministic; pure (no clock, no threads).
#pragma once

#include <string>
#include <vector>

#include "planner/cost_model.h"
#include "planner/profile_tables.h"
#include "planner/types.h"

namespace asteroid::planner {

// One compute operation of one device.
struct SimOp {
  int stage = 0;
  int member = 0;      // index in the stage's device list
  char kind = 'F';     // 'F' forward, 'B' backward
  int microbatch = 0;
  double start_ms = 0, end_ms = 0;
};

struct SimTransfer {
  std::string from, to;
  bool forward = true;  // activation (true) or gradient (false)
  int boundary = 0;     // between stage boundary and boundary + 1
  int microbatch = 0;
  double bytes = 0;             // on the wire, encoded
  Codec codec = Codec::fp32;
  double codec_ms = 0;          // encode at the sender + decode at the receiver
  double start_ms = 0, end_ms = 0;
};

struct SimDevice {
  std::string id;
  int stage = 0;
  double busy_ms = 0;       // computing (and the optimizer update)
  double allreduce_ms = 0;  // in the group's all-reduce
  double idle_ms = 0;       // round - busy - allreduce
  double finish_ms = 0;     // end of its optimizer update
};

struct Simulation {
  double round_ms = 0;
  double bubble_fraction = 0;  // 1 - sum(busy) / (devices x round)
  std::vector<SimOp> ops;      // in start order
  std::vector<SimTransfer> transfers;
  std::vector<SimDevice> devices;  // plan order
};

// Throws std::invalid_argument for a plan that is not valid for the tables,
// std::logic_error if the rules deadlock (a bug: they cannot).
Simulation simulate(const Plan& plan, const ProfileTables& tables, const EvalOptions& options = {});

// The step x stage grid: one column per distinct start time of a stage's
// operation, one row per stage; a cell is "2F0" for stage 2 forward of
// micro-batch 0 (for a group, the time its first member starts).
std::string format_grid(const Plan& plan, const Simulation& sim);

// Chrome / Perfetto trace (JSON): one track per device, compute and transfers.
std::string chrome_trace(const Plan& plan, const Simulation& sim);

}  // namespace asteroid::planner
