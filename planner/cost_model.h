// The HPP cost model of COST_MODEL.md applied to a given plan: per-step
// forward/backward/all-reduce times, the dominant step, the waiting and
// execution phases, T_round, throughput and per-device memory. A plan that
// does not fit in memory is still timed; `feasible` is false and the reason
// names the device and the bytes it is short by.
//
// Beyond COST_MODEL.md (off by default): EvalOptions::count_replica_bytes
// adds to a device the replica it holds for a single-device stage (weights
// and optimizer state, W (1 + k_opt)); see replica_holder() and docs/planner.md.
//
// Compressed wire (docs/planner.md "Compressed wire"): each boundary
// (Stage::to_next) and each group's all-reduce (Stage::allreduce) has a
// codec. A transfer or all-reduce is charged the encoded bytes over the link
// plus the encode and decode time of the devices on both ends, at the speeds
// of the profile. fp32 is exactly COST_MODEL.md's formula. A device without
// the plan's codec in the profile is charged no codec time, and the
// Evaluation says so in `warnings`.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "planner/profile_tables.h"
#include "planner/types.h"

namespace asteroid::planner {

struct EvalOptions {
  OptimizerKind optimizer = OptimizerKind::sgd;
  bool count_replica_bytes = false;
};

enum class StepKind { compute, transfer };

// One of the S = 2P - 1 pipeline steps. For a transfer step, `stage` is the
// stage before it (the transfer carries stage -> stage + 1).
struct StepTime {
  StepKind kind = StepKind::compute;
  int stage = 0;
  double ef_ms = 0, eb_ms = 0;  // E_i = ef + eb
  double ta_ms = 0;             // all-reduce after the last backward
  double tw_ms = 0;             // waiting phase Tw_s
  double te_ms = 0;             // execution phase Te_s
  double bandwidth_mbps = 0;    // transfer: bwmin between the groups; compute: within the group (0 if one device)
  Codec codec = Codec::fp32;    // transfer: the boundary's codec; compute: the group's all-reduce codec
  double wire_bytes = 0;        // transfer: bytes of one sample on the wire; compute: bytes of W as encoded (0 if one device)
  double codec_ef_ms = 0, codec_eb_ms = 0;  // transfer: encode + decode time inside ef_ms / eb_ms
  double codec_ta_ms = 0;       // compute: encode + decode time inside ta_ms
};

struct DeviceMemory {
  std::string id;
  int stage = 0;
  double state_bytes = 0;       // W (2 + k_opt): weights, gradients, optimizer state
  double activation_bytes = 0;  // K_p * y_d * stash
  double replica_bytes = 0;     // replicas held for other stages (option)
  double capacity_bytes = 0;
  double used_bytes() const { return state_bytes + activation_bytes + replica_bytes; }
  double fraction() const { return used_bytes() / capacity_bytes; }
  bool fits() const { return used_bytes() <= capacity_bytes; }
};

struct Evaluation {
  bool feasible = true;
  std::string infeasible_reason;  // first device that does not fit, and by how many bytes
  std::vector<StepTime> steps;    // 2P - 1
  int dominant_step = 0;          // dm
  double round_ms = 0;            // T_round
  double throughput = 0;          // samples per ms: batch / T_round
  std::vector<DeviceMemory> memory;  // one per device of the plan, stage order
  double peak_memory_fraction = 0;
  // Per-device time of its stage at its y_d (same order as `memory`).
  std::vector<double> device_fwd_ms, device_bwd_ms;
  // What the evaluation could not charge: a plan's codec that a device has
  // no speed for in the profile ("stage 0 -> 1: int8 not profiled on nano0:
  // no codec time charged for it").
  std::vector<std::string> warnings;
};

// ---- The wire terms, shared by the evaluator, the search, the simulator ----
// (One definition, so that all of them do the same arithmetic.)

// Bytes on the wire of `bytes` bytes of float32 values sent as one row:
// `bytes` itself for fp32, else encoded_bytes(c, 1, ceil(bytes / 4), block).
double wire_bytes(Codec c, double bytes, uint32_t block);
// Time to encode or decode `bytes` bytes of float32 at `mb_s` MB/s, ms.
inline double codec_ms(double bytes, double mb_s) { return bytes / 1e6 / mb_s * 1e3; }
// Link time of a ring all-reduce of `w` bytes over n devices whose slowest
// link is `inner` Mbit/s: 2 (n - 1) / n * wire_bytes * 8 / 1e3 / inner.
double ring_allreduce_ms(Codec c, double w, int n, double inner, uint32_t block);
// One member's codec time in that all-reduce: n chunk encodes of W / n and
// the decode of 2 (n - 1) / n W, at its speeds.
inline double allreduce_codec_ms(double w, int n, double encode_mb_s, double decode_mb_s) {
  return codec_ms(w, encode_mb_s) + codec_ms(2.0 * (n - 1) / n * w, decode_mb_s);
}

// The transfer step between two consecutive stages (`from` sends
// activations, `to` sends their gradients back) in codec c with the
// samples written in the stages: Ef = B wire_bytes(c, out) 8 / 1e3 / bwmin
// + the slowest encode in `from` + the slowest decode in `to`; Eb the same
// with the roles swapped. Devices without c in the profile cost no codec
// time and are listed in `unprofiled`.
struct TransferTime {
  double ef_ms = 0, eb_ms = 0;
  double bandwidth_mbps = 0;
  double bytes_per_sample = 0;
  double codec_ef_ms = 0, codec_eb_ms = 0;
  std::vector<std::string> unprofiled;
};
TransferTime transfer_time(const ProfileTables& tables, const Stage& from, const Stage& to, Codec codec,
                           uint32_t block, int microbatch_size);
// The all-reduce of a stage's group in codec c: ring_allreduce_ms + the
// largest allreduce_codec_ms over the members (0 for a group of one).
struct AllReduceTime {
  double ta_ms = 0;
  double bandwidth_mbps = 0;
  double bytes = 0;
  double codec_ms = 0;
  std::vector<std::string> unprofiled;
};
AllReduceTime allreduce_time(const ProfileTables& tables, const Stage& stage, Codec codec, uint32_t block);

// REQUIRES nothing: throws std::invalid_argument naming the problem when the
// plan is not a valid plan for these tables (unknown device, samples not
// adding up to microbatch_size, layer ranges not covering the model...).
Evaluation evaluate(const Plan& plan, const ProfileTables& tables, const EvalOptions& options = {});
Evaluation evaluate(const Plan& plan, const Cluster& cluster, const Profile& profile,
                    const EvalOptions& options = {});

// T_round of COST_MODEL.md from the per-step times, computed literally
// (dominant step, Tw, Te). Fills tw/te/dominant when given.
double round_latency(const std::vector<double>& ef, const std::vector<double>& eb,
                     const std::vector<double>& ta, int microbatches, int* dominant = nullptr,
                     std::vector<double>* tw = nullptr, std::vector<double>* te = nullptr);

// The same number by the identity the search relies on:
// T_round = max_c (M E_c + sum_{i<c} E_i) + max_s (Ta_s - sum_{i<s} Eb_i).
double round_latency_closed_form(const std::vector<double>& ef, const std::vector<double>& eb,
                                 const std::vector<double>& ta, int microbatches);

// Topology-driven replication: for a stage whose group is a single device,
// the device that keeps its replica: the first device of the next stage's
// group; the last stage's replica goes to the first device of the first
// stage. nullopt for a multi-device group (its members are replicas of each
// other) or a one-stage plan.
std::optional<std::string> replica_holder(const Plan& plan, int stage);

// Bytes of a stage's replica: weights and optimizer state, W (1 + k_opt).
double replica_bytes(const ProfileTables& tables, const Stage& stage, OptimizerKind optimizer);

// Throws std::invalid_argument when the plan is not valid for the tables.
void validate_plan(const Plan& plan, const ProfileTables& tables);

}  // namespace asteroid::planner
