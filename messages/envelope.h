// Plain C++ mirrors of the message kinds of asteroid.capnp, one struct per
// kind and `Message`, the variant of them all. Actors build and read these;
// codec.h turns them into Cap'n Proto bytes and back. Tensor payloads are
// TensorBlob views that can share the received buffer, so decoding does not
// copy tensor bytes (tensor_codec.h turns them into at::Tensor).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "messages/optimizer_kind.h"
#include "messages/wire_codec.h"

namespace asteroid::messages {

// float16, bfloat16, int8_block and int4_block are the lossy encodings of
// the wire codec (wire_codec.h), in the order of its Codec after fp32.
enum class DType : uint8_t { float32, int64, float16, bfloat16, int8_block, int4_block };
const char* to_string(DType dtype);
// The wire codec a float dtype encodes (float32: fp32); nullopt for int64.
std::optional<wire_codec::Codec> codec_of(DType dtype);
DType dtype_of(wire_codec::Codec codec);

// A dense row-major tensor. `data` points at `bytes` bytes that `owner`
// keeps alive (the received buffer, or the tensor it was taken from); for
// int8_block/int4_block, `scales` points at `scale_bytes` more (one float32
// per block of `block` values of a row).
struct TensorBlob {
  DType dtype = DType::float32;
  std::vector<int64_t> shape;
  std::shared_ptr<const void> owner;
  const char* data = nullptr;
  size_t bytes = 0;
  uint32_t block = 0;
  const char* scales = nullptr;
  size_t scale_bytes = 0;

  int64_t elements() const;
  bool empty() const { return shape.empty() && bytes == 0; }
  // Rows as the wire codec counts them: shape[0] for rank >= 2, else one.
  uint64_t rows() const;
  uint64_t row_length() const;
  // The blob as the wire codec reads it. REQUIRES: a float dtype.
  wire_codec::EncodedView codec_view() const;
  // A blob owning a copy of `size` bytes.
  static TensorBlob copy_of(DType dtype, std::vector<int64_t> shape, const void* data, size_t size);
};

struct SampleRange {
  uint32_t begin = 0, end = 0;
  uint32_t size() const { return end - begin; }
  bool operator==(const SampleRange& o) const { return begin == o.begin && end == o.end; }
};

struct Activation {
  uint64_t round = 0;
  uint32_t microbatch = 0;
  SampleRange samples;
  uint32_t from_stage = 0, from_member = 0;
  TensorBlob tensor;
  TensorBlob labels;
  uint64_t deployment = 0;  // the sender's StageAssignment::deployment
};

struct Gradient {
  uint64_t round = 0;
  uint32_t microbatch = 0;
  SampleRange samples;
  uint32_t from_stage = 0, from_member = 0;
  TensorBlob tensor;
  uint64_t deployment = 0;
};

struct ReduceChunk {
  uint64_t round = 0;
  uint32_t step = 0, chunk = 0, from_member = 0;
  TensorBlob tensor;
  uint32_t bucket = 0;  // the all-reduce bucket (actors/all_reduce.h)
  uint64_t deployment = 0;
};

using asteroid::OptimizerKind;

using OptimizerSpec = asteroid::OptimizerSettings;  // messages/optimizer_kind.h

struct GroupMember {
  std::string device_id;
  uint32_t samples = 0;
};

struct StageState {
  uint64_t round = 0;
  uint32_t layer_begin = 0, layer_end = 0;
  TensorBlob weights;
  TensorBlob optimizer_state;
  uint64_t optimizer_steps = 0;
  std::string job_id;  // set on replicas
  // A state of some layers (a default one stands for "none"); the layers
  // may have no parameters (a ReLU, a pooling), and then no bytes.
  bool present() const { return layer_end > layer_begin; }
};

struct StageAssignment {
  std::string job_id, model;
  uint32_t stage = 0, stage_count = 1;
  uint32_t layer_begin = 0, layer_end = 0;
  uint32_t member = 0;
  std::vector<GroupMember> group, prev_group, next_group;
  uint32_t batch = 0, microbatches = 1, microbatch_size = 0;
  OptimizerSpec optimizer;
  uint64_t seed = 0, data_seed = 0, first_round = 0;
  StageState initial_state;  // weights empty: initialise from seed
  bool trace = false;
  uint64_t required_memory_bytes = 0;
  uint32_t replicate_every = 0, central_every = 0;
  wire_codec::Codec codec_to_next = wire_codec::Codec::fp32;
  wire_codec::Codec codec_from_prev = wire_codec::Codec::fp32;
  wire_codec::Codec codec_all_reduce = wire_codec::Codec::fp32;
  uint32_t codec_block = wire_codec::kDefaultBlock;
  uint64_t deployment = 0;  // stamps this member's data (asteroid.capnp)
  bool resume_from_kept = false;  // load the node's kept committed state of round first_round - 1
};

enum class ControlKind : uint8_t { start, done, commit, abort, replicated, replicate, restarted };

struct RoundControl {
  ControlKind kind = ControlKind::start;
  uint64_t round = 0;
  double loss_sum = 0;
  uint32_t samples = 0, correct = 0;
  uint32_t stage = 0, member = 0;
};

struct Heartbeat {
  std::string node_id;
  uint64_t sequence = 0;
  int64_t sent_us = 0;
  std::vector<std::string> unreachable;  // a node's reply: peers it has not heard from
};

struct NodeInfo {
  std::string node_id;
  uint32_t pid = 0;
  uint64_t memory_budget_bytes = 0;
  double cpu_share = 0;
  int64_t clock_us = 0;
  std::vector<std::string> models;
  uint64_t kept_bytes = 0;   // replicas and committed states kept for jobs
  uint32_t kept_states = 0;
  uint64_t refused_control = 0;      // control messages and spawns refused (docs/security.md)
  uint64_t refused_connections = 0;  // TLS handshakes refused
};

enum class TraceKind : uint8_t { forward, backward, send, receive, all_reduce, optimizer_step, idle };
const char* to_string(TraceKind kind);

struct TraceEvent {
  TraceKind kind = TraceKind::forward;
  uint32_t stage = 0, member = 0;
  uint64_t round = 0;
  uint32_t microbatch = 0;
  int64_t start_us = 0, end_us = 0;
  uint64_t bytes = 0;
  wire_codec::Codec codec = wire_codec::Codec::fp32;  // send: how its tensor was encoded
};

struct Metrics {
  uint32_t stage = 0, member = 0;
  uint64_t round = 0;
  std::vector<TraceEvent> events;
  uint64_t peak_memory_bytes = 0;
  uint64_t compute_us = 0;  // wall time of the member's forwards and backwards in the round
};

enum class ErrorCode : uint8_t { invalid_message, invalid_request, out_of_memory, internal, disconnected };
const char* to_string(ErrorCode code);

struct Error {
  ErrorCode code = ErrorCode::internal;
  std::string message;
};

struct ProfileRequest {
  std::string model;
  std::vector<uint32_t> batches;
  uint32_t repeats = 0;
};

struct ProfileResult {
  std::string json;
};

struct PlanRequest {
  std::string cluster_json, profile_json, strategy = "hpp";
  uint32_t batch = 0, microbatches = 0;
  OptimizerKind optimizer = OptimizerKind::momentum;
  std::string running_plan_json;
  std::vector<std::string> lost_devices, added_devices;
  bool heavy = false;
  std::string wire;  // wire policy; empty: exact
  uint32_t codec_block = wire_codec::kDefaultBlock;
  // A job's first plan ranked among the search's candidates (planner/rank.h:
  // "model" or "simulated", with min_gain); empty: the strategy's plan.
  std::string rank;
  double min_gain = 0;
};

struct PlanResult {
  std::string plan_json, reason, explanation;
  std::string single_plan_json;  // with a rank: the best device alone, when it fits
};

struct Hello {};

struct ReplicaRequest {
  std::string job_id;
  uint32_t layer_begin = 0, layer_end = 0;
  uint64_t round = 0;
};

struct LayerRange {
  uint32_t begin = 0, end = 0;
  bool operator<(const LayerRange& o) const { return begin != o.begin ? begin < o.begin : end < o.end; }
  bool operator==(const LayerRange& o) const { return begin == o.begin && end == o.end; }
};

// Of job `job_id`, only the layer ranges in `keep` are still needed on a
// node (empty: the job finished). See the schema.
struct Release {
  std::string job_id;
  std::vector<LayerRange> keep;
};

struct KeptRequest {
  std::string job_id;
};

struct KeptEntry {
  uint32_t layer_begin = 0, layer_end = 0;
  uint64_t round = 0;
  bool committed = false;  // a stage's committed state (else a replica)
  bool operator==(const KeptEntry& o) const {
    return layer_begin == o.layer_begin && layer_end == o.layer_end && round == o.round && committed == o.committed;
  }
};

struct KeptList {
  std::vector<KeptEntry> entries;
};

struct Peer {
  std::string device_id, host;
  uint16_t port = 0;
  std::string heartbeat_key;  // with TLS: the MAC key of the job's peer heartbeats
};

struct Peers {
  std::vector<Peer> peers;
};

// Bytes that only measure a link.
struct LinkProbe {
  std::vector<char> payload;
};

struct StateRequest {
  uint64_t round = 0;
};

// A TorchScript model for a node that does not have it (see the schema).
struct ModelFile {
  std::string name, sha256;
  std::vector<char> bytes;
  std::vector<std::string> layer_names;
  bool tokens = false;
  std::vector<int64_t> sample_shape;
  int64_t num_classes = 0;
  std::string dataset;
};

using Message = std::variant<Activation, Gradient, ReduceChunk, StageAssignment, StageState,
                             RoundControl, Heartbeat, NodeInfo, Metrics, Error, ProfileRequest,
                             ProfileResult, Hello, StateRequest, PlanRequest, PlanResult, LinkProbe, ReplicaRequest, Peers, Release,
                             KeptRequest, KeptList, ModelFile>;

// The wall clock in microseconds since the epoch, as messages carry it
// (Heartbeat.sent_us, NodeInfo.clock_us, TraceEvent times).
int64_t now_us();

// The schema's name of the kind a message holds ("activation", ...).
const char* kind_name(const Message& message);

}  // namespace asteroid::messages
