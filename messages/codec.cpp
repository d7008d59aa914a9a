#include "messages/codec.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>
#include <kj/io.h>

#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "messages/asteroid.capnp.h"

namespace asteroid::messages {
namespace {

// ---------------------------------------------------------------- encoding

void put_tensor(wire::Tensor::Builder out, const TensorBlob& blob) {
  out.setDtype(static_cast<wire::Tensor::DType>(blob.dtype));
  auto shape = out.initShape(static_cast<unsigned>(blob.shape.size()));
  for (size_t i = 0; i < blob.shape.size(); ++i) shape.set(static_cast<unsigned>(i), blob.shape[i]);
  auto data = out.initData(static_cast<unsigned>(blob.bytes));
  if (blob.bytes > 0) std::memcpy(data.begin(), blob.data, blob.bytes);
  // The block travels even when there are no scales (a tensor of no
  // values): the reader validates it for every int8Block/int4Block tensor.
  const auto codec = codec_of(blob.dtype);
  if (codec && wire_codec::has_scales(*codec)) out.setBlockSize(blob.block);
  if (blob.scale_bytes > 0) {
    auto scales = out.initScales(static_cast<unsigned>(blob.scale_bytes));
    std::memcpy(scales.begin(), blob.scales, blob.scale_bytes);
  }
}

void put_range(wire::SampleRange::Builder out, const SampleRange& r) {
  out.setBegin(r.begin);
  out.setEnd(r.end);
}

void put_members(capnp::List<wire::GroupMember>::Builder out, const std::vector<GroupMember>& in) {
  for (size_t i = 0; i < in.size(); ++i) {
    out[static_cast<unsigned>(i)].setDeviceId(in[i].device_id);
    out[static_cast<unsigned>(i)].setSamples(in[i].samples);
  }
}

// A list of texts or numbers, as the schema's List(Text) / List(UInt32).
template <typename ListBuilder, typename T>
void put_list(ListBuilder out, const std::vector<T>& in) {
  for (size_t i = 0; i < in.size(); ++i) out.set(static_cast<unsigned>(i), in[i]);
}

// The fields an Activation and a Gradient share (the same names in both structs).
template <typename Builder, typename Slice>
void put_slice(Builder o, const Slice& m) {
  o.setRound(m.round);
  o.setMicrobatch(m.microbatch);
  put_range(o.initSamples(), m.samples);
  o.setFromStage(m.from_stage);
  o.setFromMember(m.from_member);
  put_tensor(o.initTensor(), m.tensor);
  o.setDeployment(m.deployment);
}

wire::WireCodec to_wire(wire_codec::Codec c) { return static_cast<wire::WireCodec>(c); }

void put_state(wire::StageState::Builder out, const StageState& s) {
  out.setRound(s.round);
  out.setLayerBegin(s.layer_begin);
  out.setLayerEnd(s.layer_end);
  put_tensor(out.initWeights(), s.weights);
  put_tensor(out.initOptimizerState(), s.optimizer_state);
  out.setOptimizerSteps(s.optimizer_steps);
  out.setJobId(s.job_id);
}

struct Encoder {
  wire::Envelope::Builder env;

  void operator()(const Activation& m) {
    auto o = env.initActivation();
    put_slice(o, m);
    put_tensor(o.initLabels(), m.labels);
  }
  void operator()(const Gradient& m) { put_slice(env.initGradient(), m); }
  void operator()(const ReduceChunk& m) {
    auto o = env.initReduceChunk();
    o.setRound(m.round);
    o.setBucket(m.bucket);
    o.setStep(m.step);
    o.setChunk(m.chunk);
    o.setFromMember(m.from_member);
    put_tensor(o.initTensor(), m.tensor);
    o.setDeployment(m.deployment);
  }
  void operator()(const StageAssignment& m) {
    auto o = env.initAssignment();
    o.setJobId(m.job_id);
    o.setModel(m.model);
    o.setStage(m.stage);
    o.setStageCount(m.stage_count);
    o.setLayerBegin(m.layer_begin);
    o.setLayerEnd(m.layer_end);
    o.setMember(m.member);
    put_members(o.initGroup(static_cast<unsigned>(m.group.size())), m.group);
    put_members(o.initPrevGroup(static_cast<unsigned>(m.prev_group.size())), m.prev_group);
    put_members(o.initNextGroup(static_cast<unsigned>(m.next_group.size())), m.next_group);
    o.setBatch(m.batch);
    o.setMicrobatches(m.microbatches);
    o.setMicrobatchSize(m.microbatch_size);
    auto opt = o.initOptimizer();
    opt.setKind(static_cast<wire::OptimizerSpec::Kind>(m.optimizer.kind));
    opt.setLr(m.optimizer.lr);
    opt.setMomentum(m.optimizer.momentum);
    opt.setBeta1(m.optimizer.beta1);
    opt.setBeta2(m.optimizer.beta2);
    opt.setEps(m.optimizer.eps);
    opt.setWeightDecay(m.optimizer.weight_decay);
    o.setSeed(m.seed);
    o.setDataSeed(m.data_seed);
    o.setFirstRound(m.first_round);
    put_state(o.initInitialState(), m.initial_state);
    o.setTrace(m.trace);
    o.setRequiredMemoryBytes(m.required_memory_bytes);
    o.setReplicateEvery(m.replicate_every);
    o.setCentralEvery(m.central_every);
    o.setCodecToNext(to_wire(m.codec_to_next));
    o.setCodecFromPrev(to_wire(m.codec_from_prev));
    o.setCodecAllReduce(to_wire(m.codec_all_reduce));
    o.setCodecBlock(m.codec_block);
    o.setDeployment(m.deployment);
    o.setResumeFromKept(m.resume_from_kept);
  }
  void operator()(const StageState& m) { put_state(env.initStageState(), m); }
  void operator()(const RoundControl& m) {
    auto o = env.initControl();
    o.setKind(static_cast<wire::RoundControl::Kind>(m.kind));
    o.setRound(m.round);
    o.setLossSum(m.loss_sum);
    o.setSamples(m.samples);
    o.setCorrect(m.correct);
    o.setStage(m.stage);
    o.setMember(m.member);
  }
  void operator()(const Heartbeat& m) {
    auto o = env.initHeartbeat();
    o.setNodeId(m.node_id);
    o.setSequence(m.sequence);
    o.setSentUs(m.sent_us);
    put_list(o.initUnreachable(static_cast<unsigned>(m.unreachable.size())), m.unreachable);
  }
  void operator()(const NodeInfo& m) {
    auto o = env.initNodeInfo();
    o.setNodeId(m.node_id);
    o.setPid(m.pid);
    o.setMemoryBudgetBytes(m.memory_budget_bytes);
    o.setCpuShare(m.cpu_share);
    o.setClockUs(m.clock_us);
    put_list(o.initModels(static_cast<unsigned>(m.models.size())), m.models);
    o.setKeptBytes(m.kept_bytes);
    o.setKeptStates(m.kept_states);
    o.setRefusedControl(m.refused_control);
    o.setRefusedConnections(m.refused_connections);
  }
  void operator()(const Metrics& m) {
    auto o = env.initMetrics();
    o.setStage(m.stage);
    o.setMember(m.member);
    o.setRound(m.round);
    o.setPeakMemoryBytes(m.peak_memory_bytes);
    o.setComputeUs(m.compute_us);
    auto events = o.initEvents(static_cast<unsigned>(m.events.size()));
    for (size_t i = 0; i < m.events.size(); ++i) {
      const TraceEvent& e = m.events[i];
      auto b = events[static_cast<unsigned>(i)];
      b.setKind(static_cast<wire::TraceEvent::Kind>(e.kind));
      b.setStage(e.stage);
      b.setMember(e.member);
      b.setRound(e.round);
      b.setMicrobatch(e.microbatch);
      b.setStartUs(e.start_us);
      b.setEndUs(e.end_us);
      b.setBytes(e.bytes);
      b.setCodec(static_cast<uint8_t>(e.codec));
    }
  }
  void operator()(const Error& m) {
    auto o = env.initError();
    o.setCode(static_cast<wire::Error::Code>(m.code));
    o.setMessage(m.message);
  }
  void operator()(const ProfileRequest& m) {
    auto o = env.initProfileRequest();
    o.setModel(m.model);
    put_list(o.initBatches(static_cast<unsigned>(m.batches.size())), m.batches);
    o.setRepeats(m.repeats);
  }
  void operator()(const ProfileResult& m) { env.initProfileResult().setJson(m.json); }
  void operator()(const PlanRequest& m) {
    auto o = env.initPlanRequest();
    o.setClusterJson(m.cluster_json);
    o.setProfileJson(m.profile_json);
    o.setStrategy(m.strategy);
    o.setBatch(m.batch);
    o.setMicrobatches(m.microbatches);
    o.setOptimizer(static_cast<wire::OptimizerSpec::Kind>(m.optimizer));
    o.setRunningPlanJson(m.running_plan_json);
    put_list(o.initLostDevices(static_cast<unsigned>(m.lost_devices.size())), m.lost_devices);
    put_list(o.initAddedDevices(static_cast<unsigned>(m.added_devices.size())), m.added_devices);
    o.setHeavy(m.heavy);
    o.setWire(m.wire);
    o.setCodecBlock(m.codec_block);
    o.setRank(m.rank);
    o.setMinGain(m.min_gain);
  }
  void operator()(const PlanResult& m) {
    auto o = env.initPlanResult();
    o.setPlanJson(m.plan_json);
    o.setReason(m.reason);
    o.setExplanation(m.explanation);
    o.setSinglePlanJson(m.single_plan_json);
  }
  void operator()(const Hello&) { env.setHello(); }
  void operator()(const Peers& m) {
    auto list = env.initPeers(static_cast<unsigned>(m.peers.size()));
    for (size_t i = 0; i < m.peers.size(); ++i) {
      list[static_cast<unsigned>(i)].setDeviceId(m.peers[i].device_id);
      list[static_cast<unsigned>(i)].setHost(m.peers[i].host);
      list[static_cast<unsigned>(i)].setPort(m.peers[i].port);
      const std::string& key = m.peers[i].heartbeat_key;
      if (!key.empty())
        list[static_cast<unsigned>(i)].setHeartbeatKey(
            kj::arrayPtr(reinterpret_cast<const kj::byte*>(key.data()), key.size()));
    }
  }
  void operator()(const ReplicaRequest& m) {
    auto o = env.initReplicaRequest();
    o.setJobId(m.job_id);
    o.setLayerBegin(m.layer_begin);
    o.setLayerEnd(m.layer_end);
    o.setRound(m.round);
  }
  void operator()(const Release& m) {
    auto o = env.initRelease();
    o.setJobId(m.job_id);
    auto keep = o.initKeep(static_cast<unsigned>(m.keep.size()));
    for (size_t i = 0; i < m.keep.size(); ++i) {
      keep[static_cast<unsigned>(i)].setBegin(m.keep[i].begin);
      keep[static_cast<unsigned>(i)].setEnd(m.keep[i].end);
    }
  }
  void operator()(const KeptRequest& m) { env.setKeptRequest(m.job_id); }
  void operator()(const ModelFile& m) {
    auto o = env.initModelFile();
    o.setName(m.name);
    o.setSha256(m.sha256);
    auto bytes = o.initBytes(static_cast<unsigned>(m.bytes.size()));
    if (!m.bytes.empty()) std::memcpy(bytes.begin(), m.bytes.data(), m.bytes.size());
    put_list(o.initLayerNames(static_cast<unsigned>(m.layer_names.size())), m.layer_names);
    o.setTokens(m.tokens);
    auto shape = o.initSampleShape(static_cast<unsigned>(m.sample_shape.size()));
    for (size_t i = 0; i < m.sample_shape.size(); ++i) shape.set(static_cast<unsigned>(i), m.sample_shape[i]);
    o.setNumClasses(m.num_classes);
    o.setDataset(m.dataset);
  }
  void operator()(const KeptList& m) {
    auto list = env.initKeptList(static_cast<unsigned>(m.entries.size()));
    for (size_t i = 0; i < m.entries.size(); ++i) {
      auto e = list[static_cast<unsigned>(i)];
      e.setLayerBegin(m.entries[i].layer_begin);
      e.setLayerEnd(m.entries[i].layer_end);
      e.setRound(m.entries[i].round);
      e.setCommitted(m.entries[i].committed);
    }
  }
  void operator()(const LinkProbe& m) {
    auto data = env.initLinkProbe(static_cast<unsigned>(m.payload.size()));
    if (!m.payload.empty()) std::memcpy(data.begin(), m.payload.data(), m.payload.size());
  }
  void operator()(const StateRequest& m) { env.setStateRequest(m.round); }
};

// A message builder whose first segment is a buffer the caller owns (and
// keeps: unlike MallocMessageBuilder, it does not zero that buffer when it
// goes away). Further segments, if the first fills up, are its own.
class FirstSegmentBuilder : public capnp::MessageBuilder {
 public:
  explicit FirstSegmentBuilder(kj::ArrayPtr<capnp::word> first) : first_(first) {}

  kj::ArrayPtr<capnp::word> allocateSegment(unsigned minimum_size) override {
    if (!first_used_ && minimum_size <= first_.size()) {
      first_used_ = true;
      return first_;
    }
    auto segment = kj::heapArray<capnp::word>(std::max(minimum_size, 8192u));
    std::memset(segment.begin(), 0, segment.size() * sizeof(capnp::word));
    auto view = segment.asPtr();
    more_.push_back(std::move(segment));
    return view;
  }

 private:
  kj::ArrayPtr<capnp::word> first_;
  bool first_used_ = false;
  std::vector<kj::Array<capnp::word>> more_;
};

size_t payload_bytes(const Message& message) {
  struct {
    size_t operator()(const Activation& m) const {
      return m.tensor.bytes + m.tensor.scale_bytes + m.labels.bytes + m.labels.scale_bytes;
    }
    size_t operator()(const Gradient& m) const { return m.tensor.bytes + m.tensor.scale_bytes; }
    size_t operator()(const ReduceChunk& m) const { return m.tensor.bytes + m.tensor.scale_bytes; }
    size_t operator()(const StageAssignment& m) const {
      return m.initial_state.weights.bytes + m.initial_state.optimizer_state.bytes;
    }
    size_t operator()(const StageState& m) const { return m.weights.bytes + m.optimizer_state.bytes; }
    size_t operator()(const Metrics& m) const { return m.events.size() * 64; }
    size_t operator()(const ProfileResult& m) const { return m.json.size(); }
    size_t operator()(const Error& m) const { return m.message.size(); }
    size_t operator()(const NodeInfo& m) const { return m.models.size() * 32; }
    size_t operator()(const Heartbeat&) const { return 0; }
    size_t operator()(const RoundControl&) const { return 0; }
    size_t operator()(const ProfileRequest& m) const { return m.batches.size() * 4; }
    size_t operator()(const PlanRequest& m) const {
      return m.cluster_json.size() + m.profile_json.size() + m.running_plan_json.size();
    }
    size_t operator()(const PlanResult& m) const {
      return m.plan_json.size() + m.explanation.size() + m.single_plan_json.size();
    }
    size_t operator()(const Hello&) const { return 0; }
    size_t operator()(const ReplicaRequest& m) const { return m.job_id.size(); }
    size_t operator()(const Peers& m) const { return m.peers.size() * 64; }
    size_t operator()(const Release& m) const { return m.job_id.size() + m.keep.size() * 8; }
    size_t operator()(const KeptRequest& m) const { return m.job_id.size(); }
    size_t operator()(const ModelFile& m) const {
      return m.bytes.size() + m.layer_names.size() * 32 + m.sample_shape.size() * 8 + m.dataset.size() + 128;
    }
    size_t operator()(const KeptList& m) const { return m.entries.size() * 24; }
    size_t operator()(const LinkProbe& m) const { return m.payload.size(); }
    size_t operator()(const StateRequest&) const { return 0; }
  } visitor;
  return std::visit(visitor, message);
}

// ---------------------------------------------------------------- decoding

// Thrown (and caught inside decode) when a field breaks a rule the schema
// cannot express.
struct Invalid : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// `begin` of a layer range [begin, end) that must not be empty.
uint32_t layer_range(uint32_t begin, uint32_t end, const char* field) {
  if (begin >= end) {
    throw Invalid(std::string(field) + ": layer range [" + std::to_string(begin) + ", " + std::to_string(end) +
                  ") is empty");
  }
  return begin;
}

class Reader {
 public:
  Reader(std::shared_ptr<const void> owner, const DecodeLimits& limits)
      : owner_(std::move(owner)), limits_(limits) {}

  TensorBlob tensor(wire::Tensor::Reader in, const char* field) const {
    TensorBlob blob;
    const auto dtype = static_cast<uint16_t>(in.getDtype());
    if (dtype > static_cast<uint16_t>(DType::int4_block)) {
      throw Invalid(std::string(field) + ": unknown dtype " + std::to_string(dtype));
    }
    blob.dtype = static_cast<DType>(dtype);
    auto shape = in.getShape();
    if (shape.size() > limits_.max_tensor_rank) {
      throw Invalid(std::string(field) + ": rank " + std::to_string(shape.size()) + " exceeds " +
                    std::to_string(limits_.max_tensor_rank));
    }
    uint64_t elements = 1;
    for (int64_t dim : shape) {
      if (dim < 0) throw Invalid(std::string(field) + ": negative dimension " + std::to_string(dim));
      if (dim != 0 && elements > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(dim)) {
        throw Invalid(std::string(field) + ": shape overflows");
      }
      elements *= static_cast<uint64_t>(dim);
      blob.shape.push_back(dim);
    }
    auto data = in.getData();
    auto scales = in.getScales();
    const auto codec = codec_of(blob.dtype);
    if (codec && wire_codec::has_scales(*codec)) {
      blob.block = in.getBlockSize();
      blob.scales = reinterpret_cast<const char*>(scales.begin());
      blob.scale_bytes = scales.size();
    } else if (scales.size() > 0) {
      throw Invalid(std::string(field) + ": " + std::to_string(scales.size()) + " scale bytes on a " +
                    to_string(blob.dtype) + " tensor (none expected)");
    }
    blob.data = reinterpret_cast<const char*>(data.begin());
    blob.bytes = data.size();
    if (shape.size() == 0 && data.size() == 0) {
      if (scales.size() > 0) throw Invalid(std::string(field) + ": scales without a tensor");
      return blob;
    }
    if (elements > std::numeric_limits<uint64_t>::max() / 8) throw Invalid(std::string(field) + ": shape overflows");
    const uint64_t expected =
        codec ? wire_codec::data_bytes(*codec, blob.rows(), blob.row_length()) : elements * 8;
    if (data.size() != expected) {
      throw Invalid(std::string(field) + ": " + std::to_string(data.size()) + " data bytes for shape of " +
                    std::to_string(elements) + " " + to_string(blob.dtype) + " elements (" +
                    std::to_string(expected) + " bytes expected)");
    }
    if (codec) {
      const std::string why = wire_codec::validate(blob.codec_view());
      if (!why.empty()) throw Invalid(std::string(field) + " (" + to_string(blob.dtype) + "): " + why);
    }
    blob.owner = owner_;
    return blob;
  }

  static TensorBlob lossless(TensorBlob blob, const char* field) {
    if (!blob.empty() && blob.dtype != DType::float32) {
      throw Invalid(std::string(field) + ": " + to_string(blob.dtype) + ", but states travel as float32");
    }
    return blob;
  }

  SampleRange range(wire::SampleRange::Reader in, const char* field) const {
    SampleRange r{in.getBegin(), in.getEnd()};
    if (r.end < r.begin) {
      throw Invalid(std::string(field) + ": range [" + std::to_string(r.begin) + ", " + std::to_string(r.end) +
                    ") ends before it begins");
    }
    return r;
  }

  template <typename List>
  void check_length(const List& list, const char* field) const {
    if (list.size() > limits_.max_list_length) {
      throw Invalid(std::string(field) + ": " + std::to_string(list.size()) + " entries exceed the limit of " +
                    std::to_string(limits_.max_list_length));
    }
  }

  std::string text(capnp::Text::Reader in, const char* field) const {
    if (in.size() > limits_.max_text_bytes) {
      throw Invalid(std::string(field) + ": text of " + std::to_string(in.size()) + " bytes exceeds the limit");
    }
    return std::string(in.cStr(), in.size());
  }

  std::vector<std::string> texts(capnp::List<capnp::Text>::Reader in, const char* field) const {
    check_length(in, field);
    std::vector<std::string> out;
    out.reserve(in.size());
    for (auto t : in) out.push_back(text(t, field));
    return out;
  }

  std::vector<GroupMember> members(capnp::List<wire::GroupMember>::Reader in, const char* field) const {
    check_length(in, field);
    std::vector<GroupMember> out;
    out.reserve(in.size());
    for (auto m : in) out.push_back({text(m.getDeviceId(), field), m.getSamples()});
    return out;
  }

  StageState state(wire::StageState::Reader in) const {
    StageState s;
    s.round = in.getRound();
    s.layer_begin = in.getLayerBegin();
    s.layer_end = in.getLayerEnd();
    if (s.layer_end < s.layer_begin) throw Invalid("stageState.layerEnd: before layerBegin");
    // States are what replay restores bit for bit: never compressed.
    s.weights = lossless(tensor(in.getWeights(), "stageState.weights"), "stageState.weights");
    s.optimizer_state =
        lossless(tensor(in.getOptimizerState(), "stageState.optimizerState"), "stageState.optimizerState");
    s.optimizer_steps = in.getOptimizerSteps();
    s.job_id = text(in.getJobId(), "stageState.jobId");
    return s;
  }

  template <typename Enum>
  Enum enumeration(uint16_t raw, Enum last, const char* field) const {
    if (raw > static_cast<uint16_t>(last)) {
      throw Invalid(std::string(field) + ": unknown value " + std::to_string(raw));
    }
    return static_cast<Enum>(raw);
  }

  wire_codec::Codec codec(wire::WireCodec raw, const char* field) const {
    return enumeration(static_cast<uint16_t>(raw), wire_codec::Codec::int4, field);
  }

  uint32_t codec_block(uint32_t block, const char* field) const {
    if (block == 0 || block > wire_codec::kMaxBlock) {
      throw Invalid(std::string(field) + ": " + std::to_string(block) + " is not in [1, " +
                    std::to_string(wire_codec::kMaxBlock) + "]");
    }
    return block;
  }

  // The fields an Activation and a Gradient share; `kind` names the message.
  template <typename In, typename Slice>
  void slice(In in, Slice& m, const std::string& kind) const {
    m.round = in.getRound();
    m.microbatch = in.getMicrobatch();
    m.samples = range(in.getSamples(), (kind + ".samples").c_str());
    m.from_stage = in.getFromStage();
    m.from_member = in.getFromMember();
    m.tensor = tensor(in.getTensor(), (kind + ".tensor").c_str());
    m.deployment = in.getDeployment();
  }

  Message envelope(wire::Envelope::Reader env) const {
    switch (env.which()) {
      case wire::Envelope::ACTIVATION: {
        auto in = env.getActivation();
        Activation m;
        slice(in, m, "activation");
        m.labels = tensor(in.getLabels(), "activation.labels");
        if (!m.labels.empty() && m.labels.dtype != DType::int64) {
          throw Invalid(std::string("activation.labels: ") + to_string(m.labels.dtype) + ", but labels are int64");
        }
        return m;
      }
      case wire::Envelope::GRADIENT: {
        Gradient m;
        slice(env.getGradient(), m, "gradient");
        return m;
      }
      case wire::Envelope::REDUCE_CHUNK: {
        auto in = env.getReduceChunk();
        ReduceChunk m;
        m.round = in.getRound();
        m.bucket = in.getBucket();
        m.step = in.getStep();
        m.chunk = in.getChunk();
        m.from_member = in.getFromMember();
        m.tensor = tensor(in.getTensor(), "reduceChunk.tensor");
        m.deployment = in.getDeployment();
        return m;
      }
      case wire::Envelope::ASSIGNMENT: {
        auto in = env.getAssignment();
        StageAssignment m;
        m.job_id = text(in.getJobId(), "assignment.jobId");
        m.model = text(in.getModel(), "assignment.model");
        m.stage = in.getStage();
        m.stage_count = in.getStageCount();
        m.layer_begin = in.getLayerBegin();
        m.layer_end = in.getLayerEnd();
        m.member = in.getMember();
        m.group = members(in.getGroup(), "assignment.group");
        m.prev_group = members(in.getPrevGroup(), "assignment.prevGroup");
        m.next_group = members(in.getNextGroup(), "assignment.nextGroup");
        m.batch = in.getBatch();
        m.microbatches = in.getMicrobatches();
        m.microbatch_size = in.getMicrobatchSize();
        auto opt = in.getOptimizer();
        m.optimizer.kind = enumeration(static_cast<uint16_t>(opt.getKind()), OptimizerKind::adam,
                                       "assignment.optimizer.kind");
        m.optimizer.lr = opt.getLr();
        m.optimizer.momentum = opt.getMomentum();
        m.optimizer.beta1 = opt.getBeta1();
        m.optimizer.beta2 = opt.getBeta2();
        m.optimizer.eps = opt.getEps();
        m.optimizer.weight_decay = opt.getWeightDecay();
        m.seed = in.getSeed();
        m.data_seed = in.getDataSeed();
        m.first_round = in.getFirstRound();
        m.initial_state = state(in.getInitialState());
        m.trace = in.getTrace();
        m.required_memory_bytes = in.getRequiredMemoryBytes();
        m.replicate_every = in.getReplicateEvery();
        m.central_every = in.getCentralEvery();
        m.codec_to_next = codec(in.getCodecToNext(), "assignment.codecToNext");
        m.codec_from_prev = codec(in.getCodecFromPrev(), "assignment.codecFromPrev");
        m.codec_all_reduce = codec(in.getCodecAllReduce(), "assignment.codecAllReduce");
        m.codec_block = codec_block(in.getCodecBlock(), "assignment.codecBlock");
        m.deployment = in.getDeployment();
        m.resume_from_kept = in.getResumeFromKept();
        if (m.resume_from_kept && (m.first_round == 0 || !m.initial_state.weights.empty())) {
          throw Invalid("assignment.resumeFromKept: needs firstRound > 0 and no initialState");
        }
        if (m.stage >= m.stage_count) throw Invalid("assignment.stage: not below stageCount");
        if (m.layer_end <= m.layer_begin) throw Invalid("assignment.layerEnd: empty layer range");
        if (m.member >= m.group.size()) throw Invalid("assignment.member: not an index into group");
        if (m.microbatches == 0) throw Invalid("assignment.microbatches: zero");
        if (m.microbatch_size == 0 || static_cast<uint64_t>(m.microbatch_size) * m.microbatches != m.batch) {
          throw Invalid("assignment.microbatchSize: microbatches x microbatchSize != batch");
        }
        for (const auto* group : {&m.group, &m.prev_group, &m.next_group}) {
          uint64_t total = 0;
          for (const auto& member : *group) total += member.samples;
          if (!group->empty() && total != m.microbatch_size) {
            throw Invalid("assignment: a group's samples add up to " + std::to_string(total) + ", not microbatchSize " +
                          std::to_string(m.microbatch_size));
          }
        }
        return m;
      }
      case wire::Envelope::STAGE_STATE:
        return state(env.getStageState());
      case wire::Envelope::CONTROL: {
        auto in = env.getControl();
        RoundControl m;
        m.kind = enumeration(static_cast<uint16_t>(in.getKind()), ControlKind::restarted, "control.kind");
        m.round = in.getRound();
        m.loss_sum = in.getLossSum();
        m.samples = in.getSamples();
        m.correct = in.getCorrect();
        m.stage = in.getStage();
        m.member = in.getMember();
        return m;
      }
      case wire::Envelope::HEARTBEAT: {
        auto in = env.getHeartbeat();
        return Heartbeat{text(in.getNodeId(), "heartbeat.nodeId"), in.getSequence(), in.getSentUs(),
                         texts(in.getUnreachable(), "heartbeat.unreachable")};
      }
      case wire::Envelope::NODE_INFO: {
        auto in = env.getNodeInfo();
        NodeInfo m;
        m.node_id = text(in.getNodeId(), "nodeInfo.nodeId");
        m.pid = in.getPid();
        m.memory_budget_bytes = in.getMemoryBudgetBytes();
        m.cpu_share = in.getCpuShare();
        m.clock_us = in.getClockUs();
        m.models = texts(in.getModels(), "nodeInfo.models");
        m.kept_bytes = in.getKeptBytes();
        m.kept_states = in.getKeptStates();
        m.refused_control = in.getRefusedControl();
        m.refused_connections = in.getRefusedConnections();
        return m;
      }
      case wire::Envelope::METRICS: {
        auto in = env.getMetrics();
        Metrics m;
        m.stage = in.getStage();
        m.member = in.getMember();
        m.round = in.getRound();
        m.peak_memory_bytes = in.getPeakMemoryBytes();
        m.compute_us = in.getComputeUs();
        auto events = in.getEvents();
        check_length(events, "metrics.events");
        m.events.reserve(events.size());
        for (auto e : events) {
          TraceEvent t;
          t.kind = enumeration(static_cast<uint16_t>(e.getKind()), TraceKind::idle, "metrics.events.kind");
          t.stage = e.getStage();
          t.member = e.getMember();
          t.round = e.getRound();
          t.microbatch = e.getMicrobatch();
          t.start_us = e.getStartUs();
          t.end_us = e.getEndUs();
          t.bytes = e.getBytes();
          t.codec = enumeration(static_cast<uint16_t>(e.getCodec()), wire_codec::Codec::int4, "metrics.events.codec");
          m.events.push_back(t);
        }
        return m;
      }
      case wire::Envelope::ERROR: {
        auto in = env.getError();
        return Error{enumeration(static_cast<uint16_t>(in.getCode()), ErrorCode::disconnected, "error.code"),
                     text(in.getMessage(), "error.message")};
      }
      case wire::Envelope::PROFILE_REQUEST: {
        auto in = env.getProfileRequest();
        ProfileRequest m;
        m.model = text(in.getModel(), "profileRequest.model");
        auto batches = in.getBatches();
        check_length(batches, "profileRequest.batches");
        for (uint32_t b : batches) m.batches.push_back(b);
        m.repeats = in.getRepeats();
        return m;
      }
      case wire::Envelope::PROFILE_RESULT:
        return ProfileResult{text(env.getProfileResult().getJson(), "profileResult.json")};
      case wire::Envelope::PLAN_REQUEST: {
        auto in = env.getPlanRequest();
        PlanRequest m;
        m.cluster_json = text(in.getClusterJson(), "planRequest.clusterJson");
        m.profile_json = text(in.getProfileJson(), "planRequest.profileJson");
        m.strategy = text(in.getStrategy(), "planRequest.strategy");
        m.batch = in.getBatch();
        m.microbatches = in.getMicrobatches();
        m.optimizer = enumeration(static_cast<uint16_t>(in.getOptimizer()), OptimizerKind::adam,
                                  "planRequest.optimizer");
        m.running_plan_json = text(in.getRunningPlanJson(), "planRequest.runningPlanJson");
        m.lost_devices = texts(in.getLostDevices(), "planRequest.lostDevices");
        m.added_devices = texts(in.getAddedDevices(), "planRequest.addedDevices");
        m.heavy = in.getHeavy();
        m.wire = text(in.getWire(), "planRequest.wire");
        m.codec_block = codec_block(in.getCodecBlock(), "planRequest.codecBlock");
        m.rank = text(in.getRank(), "planRequest.rank");
        m.min_gain = in.getMinGain();
        if (!(m.min_gain >= 0 && m.min_gain < 1)) {
          throw Invalid("planRequest.minGain: " + std::to_string(m.min_gain) + " is not in [0, 1)");
        }
        return m;
      }
      case wire::Envelope::PLAN_RESULT: {
        auto in = env.getPlanResult();
        return PlanResult{text(in.getPlanJson(), "planResult.planJson"), text(in.getReason(), "planResult.reason"),
                          text(in.getExplanation(), "planResult.explanation"),
                          text(in.getSinglePlanJson(), "planResult.singlePlanJson")};
      }
      case wire::Envelope::HELLO:
        return Hello{};
      case wire::Envelope::PEERS: {
        auto in = env.getPeers();
        check_length(in, "peers");
        Peers m;
        for (auto p : in) {
          const auto key = p.getHeartbeatKey();
          if (key.size() > kMaxAuthorizationBytes) throw Invalid("peers.heartbeatKey of " + std::to_string(key.size()) + " bytes");
          m.peers.push_back({text(p.getDeviceId(), "peers.deviceId"), text(p.getHost(), "peers.host"), p.getPort(),
                             std::string(reinterpret_cast<const char*>(key.begin()), key.size())});
        }
        return m;
      }
      case wire::Envelope::REPLICA_REQUEST: {
        auto in = env.getReplicaRequest();
        return ReplicaRequest{text(in.getJobId(), "replicaRequest.jobId"), in.getLayerBegin(), in.getLayerEnd(),
                              in.getRound()};
      }
      case wire::Envelope::RELEASE: {
        auto in = env.getRelease();
        Release m{text(in.getJobId(), "release.jobId"), {}};
        auto keep = in.getKeep();
        check_length(keep, "release.keep");
        for (auto r : keep) m.keep.push_back({layer_range(r.getBegin(), r.getEnd(), "release.keep"), r.getEnd()});
        return m;
      }
      case wire::Envelope::KEPT_REQUEST:
        return KeptRequest{text(env.getKeptRequest(), "keptRequest")};
      case wire::Envelope::KEPT_LIST: {
        auto in = env.getKeptList();
        check_length(in, "keptList");
        KeptList m;
        for (auto e : in) {
          m.entries.push_back({layer_range(e.getLayerBegin(), e.getLayerEnd(), "keptList"), e.getLayerEnd(),
                               e.getRound(), e.getCommitted()});
        }
        return m;
      }
      case wire::Envelope::LINK_PROBE: {
        auto data = env.getLinkProbe();
        return LinkProbe{std::vector<char>(data.begin(), data.end())};
      }
      case wire::Envelope::STATE_REQUEST:
        return StateRequest{env.getStateRequest()};
      case wire::Envelope::MODEL_FILE: {
        auto in = env.getModelFile();
        ModelFile m;
        m.name = text(in.getName(), "modelFile.name");
        m.sha256 = text(in.getSha256(), "modelFile.sha256");
        auto bytes = in.getBytes();
        m.bytes.assign(bytes.begin(), bytes.end());
        m.layer_names = texts(in.getLayerNames(), "modelFile.layerNames");
        m.tokens = in.getTokens();
        auto shape = in.getSampleShape();
        if (shape.size() > limits_.max_tensor_rank) throw Invalid("modelFile.sampleShape: more dimensions than allowed");
        for (int64_t d : shape) {
          if (d <= 0) throw Invalid("modelFile.sampleShape: a dimension of " + std::to_string(d));
          m.sample_shape.push_back(d);
        }
        m.num_classes = in.getNumClasses();
        if (m.num_classes <= 0) throw Invalid("modelFile.numClasses: " + std::to_string(m.num_classes));
        m.dataset = text(in.getDataset(), "modelFile.dataset");
        return m;
      }
    }
    throw Invalid("envelope: unknown message kind " + std::to_string(static_cast<unsigned>(env.which())));
  }

 private:
  std::shared_ptr<const void> owner_;
  const DecodeLimits& limits_;
};

}  // namespace

std::vector<char> encode(const Message& message, const std::string& authorization) {
  // Build the message straight into the output buffer: its first segment
  // sits after the 8-byte segment table, sized for the payload plus the
  // structure around it, so tensor bytes are copied exactly once. Should the
  // estimate fall short, Cap'n Proto adds segments and the flat array is
  // written out with one more copy.
  const size_t words = payload_bytes(message) / sizeof(capnp::word) + 512;
  std::vector<char> bytes((words + 1) * sizeof(capnp::word));  // zeroed, as Cap'n Proto requires
  kj::ArrayPtr<capnp::word> first(reinterpret_cast<capnp::word*>(bytes.data() + sizeof(capnp::word)), words);
  FirstSegmentBuilder builder(first);
  auto root = builder.initRoot<wire::Envelope>();
  std::visit(Encoder{root}, message);
  if (!authorization.empty()) {
    root.setAuthorization(kj::arrayPtr(reinterpret_cast<const kj::byte*>(authorization.data()), authorization.size()));
  }
  auto segments = builder.getSegmentsForOutput();
  if (segments.size() == 1 && segments[0].begin() == first.begin()) {
    const uint32_t table[2] = {0, static_cast<uint32_t>(segments[0].size())};  // one segment, its size
    std::memcpy(bytes.data(), table, sizeof table);
    bytes.resize((segments[0].size() + 1) * sizeof(capnp::word));
    return bytes;
  }
  const size_t size = capnp::computeSerializedSizeInWords(builder) * sizeof(capnp::word);
  std::vector<char> spilled(size);
  kj::ArrayOutputStream out(kj::arrayPtr(reinterpret_cast<kj::byte*>(spilled.data()), size));
  capnp::writeMessage(out, builder);
  return spilled;
}

Decoded decode(std::shared_ptr<const std::vector<char>> bytes, const DecodeLimits& limits) {
  Decoded result;
  if (!bytes || bytes->empty()) {
    result.error = "empty message";
    return result;
  }
  const size_t size = bytes->size();
  if (size > limits.max_message_bytes) {
    result.error = "message of " + std::to_string(size) + " bytes exceeds the limit of " +
                   std::to_string(limits.max_message_bytes);
    return result;
  }
  if (size % sizeof(capnp::word) != 0) {
    result.error = "message of " + std::to_string(size) + " bytes is not a whole number of 8-byte words (truncated?)";
    return result;
  }
  if (reinterpret_cast<uintptr_t>(bytes->data()) % alignof(capnp::word) != 0) {
    bytes = std::make_shared<const std::vector<char>>(*bytes);  // new storage is suitably aligned
  }
  try {
    capnp::ReaderOptions options;
    // Every word may be read at most twice (far pointers); anything more is
    // an amplification attack.
    options.traversalLimitInWords = 2 * size / sizeof(capnp::word) + 64;
    options.nestingLimit = limits.nesting_limit;
    kj::ArrayPtr<const capnp::word> words(reinterpret_cast<const capnp::word*>(bytes->data()),
                                          size / sizeof(capnp::word));
    capnp::FlatArrayMessageReader reader(words, options);
    if (reader.getEnd() != words.end()) {
      result.error = "message has " + std::to_string((words.end() - reader.getEnd()) * sizeof(capnp::word)) +
                     " trailing bytes after the envelope";
      return result;
    }
    Reader decoder(bytes, limits);
    const auto root = reader.getRoot<wire::Envelope>();
    const auto authorization = root.getAuthorization();
    if (authorization.size() > kMaxAuthorizationBytes) {
      result.error = "invalid authorization of " + std::to_string(authorization.size()) + " bytes (at most " +
                     std::to_string(kMaxAuthorizationBytes) + ")";
      return result;
    }
    result.message = decoder.envelope(root);
    result.authorization.assign(reinterpret_cast<const char*>(authorization.begin()), authorization.size());
  } catch (const Invalid& e) {
    result.error = std::string("invalid ") + e.what();
  } catch (const kj::Exception& e) {
    result.error = std::string("malformed Cap'n Proto message: ") + e.getDescription().cStr();
  } catch (const std::exception& e) {
    result.error = std::string("malformed message: ") + e.what();
  }
  return result;
}

Decoded decode_copy(const void* data, size_t size, const DecodeLimits& limits) {
  const char* begin = static_cast<const char*>(data);
  return decode(std::make_shared<const std::vector<char>>(begin, begin + size), limits);
}

}  // namespace asteroid::messages
