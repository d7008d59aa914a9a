// Round trips of every message kind, and hostile input: truncated, corrupted,
// oversized and inconsistent bytes must give an error value, never a crash.
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>

#include "messages/asteroid.capnp.h"
#include "messages/codec.h"

namespace asteroid::messages {
namespace {

TensorBlob floats(std::vector<int64_t> shape, float first) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  std::vector<float> values(n);
  for (int64_t i = 0; i < n; ++i) values[i] = first + 0.5f * static_cast<float>(i);
  return TensorBlob::copy_of(DType::float32, std::move(shape), values.data(), values.size() * sizeof(float));
}

TensorBlob longs(std::vector<int64_t> values) {
  return TensorBlob::copy_of(DType::int64, {static_cast<int64_t>(values.size())}, values.data(),
                             values.size() * sizeof(int64_t));
}

// `shape` filled with values of both signs and several magnitudes, encoded
// by the wire codec as the runtime sends it: one row per shape[0] (one row
// for rank < 2). The blob owns the encoded bytes.
TensorBlob compressed(wire_codec::Codec codec, std::vector<int64_t> shape, float first, uint32_t block = 4) {
  uint64_t n = 1;
  for (auto d : shape) n *= static_cast<uint64_t>(d);
  const uint64_t rows = shape.size() >= 2 ? static_cast<uint64_t>(shape[0]) : 1;
  const uint64_t length = rows == 0 ? 0 : n / rows;
  std::vector<float> values(n);
  for (uint64_t i = 0; i < n; ++i) {
    values[i] = (first + 0.37f * static_cast<float>(i)) * (i % 3 == 0 ? -1.0f : 1.0f) * (i % 5 == 0 ? 100.0f : 1.0f);
  }
  auto encoded =
      std::make_shared<wire_codec::Encoded>(wire_codec::encode(codec, values.data(), rows, length, block));
  TensorBlob blob;
  blob.dtype = dtype_of(codec);
  blob.shape = std::move(shape);
  blob.data = reinterpret_cast<const char*>(encoded->data.data());
  blob.bytes = encoded->data.size();
  if (wire_codec::has_scales(codec)) {
    blob.block = encoded->block;
    blob.scales = reinterpret_cast<const char*>(encoded->scales.data());
    blob.scale_bytes = encoded->scales.size() * sizeof(float);
  }
  blob.owner = std::move(encoded);
  return blob;
}

// The float32 values of a blob of a float dtype.
std::vector<float> values_of(const TensorBlob& blob) {
  std::vector<float> out(static_cast<size_t>(blob.elements()));
  const auto view = blob.codec_view();
  EXPECT_EQ(wire_codec::validate(view), "");
  wire_codec::decode(view, out.data());
  return out;
}

bool same_bytes(const char* a, const char* b, size_t n) { return n == 0 || std::memcmp(a, b, n) == 0; }

void expect_same_blob(const TensorBlob& decoded, const TensorBlob& original) {
  EXPECT_EQ(decoded.dtype, original.dtype);
  EXPECT_EQ(decoded.shape, original.shape);
  ASSERT_EQ(decoded.bytes, original.bytes);
  EXPECT_TRUE(same_bytes(decoded.data, original.data, decoded.bytes));
  EXPECT_EQ(decoded.block, original.block);
  ASSERT_EQ(decoded.scale_bytes, original.scale_bytes);
  EXPECT_TRUE(same_bytes(decoded.scales, original.scales, decoded.scale_bytes));
  if (codec_of(original.dtype)) {
    const auto a = values_of(decoded), b = values_of(original);
    ASSERT_EQ(a.size(), b.size());
    EXPECT_TRUE(same_bytes(reinterpret_cast<const char*>(a.data()), reinterpret_cast<const char*>(b.data()),
                           a.size() * sizeof(float)));
  }
}

StageState sample_state() {
  StageState s;
  s.round = 41;
  s.layer_begin = 2;
  s.layer_end = 5;
  s.weights = floats({10}, 1.0f);
  s.optimizer_state = floats({10}, -3.0f);
  s.optimizer_steps = 42;
  s.job_id = "job-7";
  return s;
}

// One message of every kind, every field set to a non-default value.
ModelFile sample_model_file() {
  return {"chain@0123456789ab", "0123456789ab" + std::string(52, 'f'), std::vector<char>(300, 'm'), {"0", "1", "fc"},
          false, {1, 28, 28}, 10, "tensors:/data/train.pt|/data/test.pt"};
}

std::vector<Message> one_of_each_kind() {
  Activation a{7, 3, {4, 9}, 1, 2, floats({5, 2, 3}, 0.25f), longs({1, 2, 3, 4, 5}), 5};
  Gradient g{7, 3, {4, 9}, 2, 0, floats({5, 6}, -1.0f), 6};
  ReduceChunk r{8, 1, 2, 1, floats({33}, 2.0f), 3, 7};
  StageAssignment s;
  s.job_id = "job-1";
  s.model = "fmnist-cnn";
  s.stage = 1;
  s.stage_count = 3;
  s.layer_begin = 2;
  s.layer_end = 5;
  s.member = 1;
  s.group = {{"tx2-0", 10}, {"nano-1", 6}};
  s.prev_group = {{"nx-0", 16}};
  s.next_group = {{"nano-2", 9}, {"nano-3", 7}};
  s.batch = 64;
  s.microbatches = 4;
  s.microbatch_size = 16;
  s.optimizer = {OptimizerKind::adam, 0.001, 0.5, 0.8, 0.99, 1e-6, 1e-4};
  s.seed = 7;
  s.data_seed = 8;
  s.first_round = 12;
  s.initial_state = sample_state();
  s.trace = true;
  s.required_memory_bytes = 4ull << 30;
  s.replicate_every = 1;
  s.central_every = 10;
  s.codec_to_next = wire_codec::Codec::int8;
  s.codec_from_prev = wire_codec::Codec::bf16;
  s.codec_all_reduce = wire_codec::Codec::int4;
  s.codec_block = 32;
  s.deployment = 9;
  RoundControl c{ControlKind::done, 12, 3.5, 16, 11, 2, 1};
  Heartbeat h{"nano-0", 99, 1700000000123456, {"tx2-1"}};
  NodeInfo n{"nx-0", 4242, 8ull << 30, 0.75, 1700000000000001, {"fmnist-cnn", "bert-small"}, 123456789, 3};
  Metrics m{2, 1, 12,
            {{TraceKind::backward, 2, 1, 12, 3, 100, 250, 4096},
             {TraceKind::send, 2, 1, 12, 3, 250, 260, 8, wire_codec::Codec::int8}},
            123456789, 98765};
  Error e{ErrorCode::out_of_memory, "stage needs 5 GiB, node has 4 GiB"};
  ProfileRequest pr{"fmnist-resnet", {1, 2, 4, 64}, 5};
  ProfileResult res{"{\"model\":\"x\"}"};
  PlanRequest plan{"{\"devices\":[]}", "{\"layers\":[]}", "pp", 64, 4, OptimizerKind::sgd, "{}", {"nano-1"}, {"tx2-9"},
                   true, "int8", 32, "simulated", 0.05};
  PlanResult plan_result{"{\"stages\":[]}", "no plan fits", "| stage |", "{\"stages\":[1]}"};
  LinkProbe probe{std::vector<char>(1000, 'x')};
  ReplicaRequest replica{"job-7", 2, 5, 41};
  Peers peers{{{"nx-0", "10.213.1.1", 7100, std::string(32, '\x07')}, {"nano-2", "10.213.1.6", 7100, ""}}};
  Release release{"job-7", {{0, 3}, {3, 9}}};
  return {a,   g,   r,           s,          sample_state(), c,     h,     n,       m,
          e,   pr,  res,         Hello{},    StateRequest{77}, plan, plan_result, probe, replica,
          peers, release, KeptRequest{"job-7"}, KeptList{{{0, 3, 41, true}, {3, 6, 40, false}}}, sample_model_file()};
}

// Activations, gradients and all-reduce chunks of every lossy encoding.
std::vector<Message> compressed_messages() {
  std::vector<Message> out;
  for (auto codec : {wire_codec::Codec::fp16, wire_codec::Codec::bf16, wire_codec::Codec::int8,
                     wire_codec::Codec::int4}) {
    // 5 rows of 6 values in blocks of 4 (a partial block per row); an odd
    // number of int4 values; rank 1.
    out.push_back(Activation{7, 3, {4, 9}, 1, 2, compressed(codec, {5, 2, 3}, 0.25f), longs({1, 2, 3, 4, 5})});
    out.push_back(Gradient{7, 3, {4, 9}, 2, 0, compressed(codec, {5, 3}, -1.0f)});
    out.push_back(ReduceChunk{8, 1, 2, 1, compressed(codec, {33}, 2.0f, 8)});
  }
  return out;
}

// What the truncation and corruption loops start from.
std::vector<Message> seeds() {
  auto out = one_of_each_kind();
  for (auto codec : {wire_codec::Codec::bf16, wire_codec::Codec::int8, wire_codec::Codec::int4}) {
    out.push_back(Activation{7, 3, {4, 9}, 1, 2, compressed(codec, {5, 2, 3}, 0.25f), longs({1, 2, 3, 4, 5})});
  }
  return out;
}

// The tensor of an activation, gradient or all-reduce chunk; null otherwise.
const TensorBlob* tensor_of(const Message& message) {
  if (auto* a = std::get_if<Activation>(&message)) return &a->tensor;
  if (auto* g = std::get_if<Gradient>(&message)) return &g->tensor;
  if (auto* r = std::get_if<ReduceChunk>(&message)) return &r->tensor;
  return nullptr;
}

TEST(Codec, EveryKindRoundTripsByteForByte) {
  const auto messages = one_of_each_kind();
  ASSERT_EQ(messages.size(), std::variant_size_v<Message>) << "a message kind has no round-trip case";
  for (const Message& message : messages) {
    SCOPED_TRACE(kind_name(message));
    const auto bytes = encode(message);
    ASSERT_EQ(bytes.size() % 8, 0u);
    auto decoded = decode_copy(bytes.data(), bytes.size());
    ASSERT_TRUE(decoded.ok()) << decoded.error;
    EXPECT_EQ(decoded.message->index(), message.index());
    EXPECT_EQ(encode(*decoded.message), bytes);
    // Seeds for the fuzzer (README, "Fuzzing the codec").
    if (const char* corpus = std::getenv("ASTEROID_FUZZ_CORPUS")) {
      std::ofstream(std::string(corpus) + "/" + kind_name(message) + ".bin", std::ios::binary)
          .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    }
  }
}

TEST(Codec, DecodedFieldsEqualTheOriginal) {
  const auto messages = one_of_each_kind();
  auto decoded = decode_copy(encode(messages[0]).data(), encode(messages[0]).size());
  ASSERT_TRUE(decoded.ok()) << decoded.error;
  const auto& a = std::get<Activation>(*decoded.message);
  EXPECT_EQ(a.round, 7u);
  EXPECT_EQ(a.microbatch, 3u);
  EXPECT_EQ(a.samples, (SampleRange{4, 9}));
  EXPECT_EQ(a.from_stage, 1u);
  EXPECT_EQ(a.from_member, 2u);
  EXPECT_EQ(a.deployment, 5u);
  EXPECT_EQ(a.tensor.shape, (std::vector<int64_t>{5, 2, 3}));
  ASSERT_EQ(a.tensor.bytes, 30 * sizeof(float));
  float f29;
  std::memcpy(&f29, a.tensor.data + 29 * sizeof(float), sizeof(float));
  EXPECT_FLOAT_EQ(f29, 0.25f + 0.5f * 29);
  const auto r_bytes = encode(messages[2]);
  auto r_decoded = decode_copy(r_bytes.data(), r_bytes.size());
  ASSERT_TRUE(r_decoded.ok()) << r_decoded.error;
  const auto& r = std::get<ReduceChunk>(*r_decoded.message);
  EXPECT_EQ(r.bucket, 3u);
  EXPECT_EQ(r.step, 1u);
  EXPECT_EQ(r.chunk, 2u);
  EXPECT_EQ(r.deployment, 7u);
  const auto g_bytes = encode(messages[1]);
  auto g_decoded = decode_copy(g_bytes.data(), g_bytes.size());
  ASSERT_TRUE(g_decoded.ok()) << g_decoded.error;
  EXPECT_EQ(std::get<Gradient>(*g_decoded.message).deployment, 6u);
  ASSERT_EQ(a.labels.dtype, DType::int64);
  int64_t label4;
  std::memcpy(&label4, a.labels.data + 4 * sizeof(int64_t), sizeof(int64_t));
  EXPECT_EQ(label4, 5);

  const auto s_bytes = encode(messages[3]);
  auto s_decoded = decode_copy(s_bytes.data(), s_bytes.size());
  ASSERT_TRUE(s_decoded.ok()) << s_decoded.error;
  const auto& s = std::get<StageAssignment>(*s_decoded.message);
  EXPECT_EQ(s.model, "fmnist-cnn");
  ASSERT_EQ(s.next_group.size(), 2u);
  EXPECT_EQ(s.next_group[1].device_id, "nano-3");
  EXPECT_EQ(s.next_group[1].samples, 7u);
  EXPECT_EQ(s.optimizer.kind, OptimizerKind::adam);
  EXPECT_DOUBLE_EQ(s.optimizer.weight_decay, 1e-4);
  EXPECT_EQ(s.initial_state.optimizer_steps, 42u);
  EXPECT_EQ(s.required_memory_bytes, 4ull << 30);
  EXPECT_EQ(s.codec_to_next, wire_codec::Codec::int8);
  EXPECT_EQ(s.codec_from_prev, wire_codec::Codec::bf16);
  EXPECT_EQ(s.codec_all_reduce, wire_codec::Codec::int4);
  EXPECT_EQ(s.codec_block, 32u);
  EXPECT_EQ(s.deployment, 9u);
  EXPECT_FALSE(s.resume_from_kept);
}

TEST(Codec, AnAssignmentResumesFromTheKeptStateOnlyAfterRoundZeroAndWithoutAState) {
  StageAssignment s = std::get<StageAssignment>(one_of_each_kind()[3]);
  s.resume_from_kept = true;
  s.initial_state = {};
  const auto ok = encode(s);
  auto decoded = decode_copy(ok.data(), ok.size());
  ASSERT_TRUE(decoded.ok()) << decoded.error;
  EXPECT_TRUE(std::get<StageAssignment>(*decoded.message).resume_from_kept);
  s.first_round = 0;
  const auto at_zero = encode(s);
  auto refused = decode_copy(at_zero.data(), at_zero.size());
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error.find("assignment.resumeFromKept"), std::string::npos) << refused.error;
  s.first_round = 12;
  s.initial_state = sample_state();
  const auto both = encode(s);
  EXPECT_FALSE(decode_copy(both.data(), both.size()).ok());
}

TEST(Codec, DefaultAssignmentCodecsRoundTrip) {
  StageAssignment s = std::get<StageAssignment>(one_of_each_kind()[3]);
  s.codec_to_next = s.codec_from_prev = s.codec_all_reduce = wire_codec::Codec::fp32;
  for (uint32_t block : {1u, wire_codec::kDefaultBlock, wire_codec::kMaxBlock}) {
    s.codec_block = block;
    const auto bytes = encode(s);
    auto decoded = decode_copy(bytes.data(), bytes.size());
    ASSERT_TRUE(decoded.ok()) << decoded.error;
    const auto& d = std::get<StageAssignment>(*decoded.message);
    EXPECT_EQ(d.codec_to_next, wire_codec::Codec::fp32);
    EXPECT_EQ(d.codec_from_prev, wire_codec::Codec::fp32);
    EXPECT_EQ(d.codec_all_reduce, wire_codec::Codec::fp32);
    EXPECT_EQ(d.codec_block, block);
  }
}

TEST(Codec, CompressedTensorsRoundTripByteForByte) {
  for (const Message& message : compressed_messages()) {
    const TensorBlob& original = *tensor_of(message);
    SCOPED_TRACE(std::string(kind_name(message)) + " " + to_string(original.dtype));
    const auto bytes = encode(message);
    auto decoded = decode_copy(bytes.data(), bytes.size());
    ASSERT_TRUE(decoded.ok()) << decoded.error;
    ASSERT_EQ(decoded.message->index(), message.index());
    EXPECT_EQ(encode(*decoded.message), bytes);
    expect_same_blob(*tensor_of(*decoded.message), original);
    if (auto* a = std::get_if<Activation>(&*decoded.message)) {
      expect_same_blob(a->labels, std::get<Activation>(message).labels);
    }
    if (const char* corpus = std::getenv("ASTEROID_FUZZ_CORPUS")) {
      std::ofstream(std::string(corpus) + "/" + kind_name(message) + "-" + to_string(original.dtype) + ".bin",
                    std::ios::binary)
          .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    }
  }
}

TEST(Codec, CompressedTensorsOfNoValuesKeepTheirBlock) {
  // A micro-batch share of zero samples still says how it is encoded.
  for (auto codec : {wire_codec::Codec::int8, wire_codec::Codec::int4}) {
    for (std::vector<int64_t> shape : {std::vector<int64_t>{0}, std::vector<int64_t>{0, 8}, std::vector<int64_t>{3, 0}}) {
      SCOPED_TRACE(std::string(wire_codec::codec_name(codec)) + " rank " + std::to_string(shape.size()));
      Gradient g{7, 3, {4, 4}, 2, 0, compressed(codec, shape, 1.0f, 64)};
      ASSERT_EQ(g.tensor.bytes, 0u);
      ASSERT_EQ(g.tensor.block, 64u);
      const auto bytes = encode(g);
      auto decoded = decode_copy(bytes.data(), bytes.size());
      ASSERT_TRUE(decoded.ok()) << decoded.error;
      expect_same_blob(std::get<Gradient>(*decoded.message).tensor, g.tensor);
      EXPECT_EQ(encode(*decoded.message), bytes);
    }
  }
}

TEST(Codec, DecodedCompressedTensorsShareTheReceivedBuffer) {
  const auto bytes = std::make_shared<const std::vector<char>>(
      encode(Gradient{7, 3, {4, 9}, 2, 0, compressed(wire_codec::Codec::int4, {5, 3}, -1.0f)}));
  auto decoded = decode(bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.error;
  const auto& g = std::get<Gradient>(*decoded.message);
  EXPECT_GE(g.tensor.data, bytes->data());
  EXPECT_LE(g.tensor.data + g.tensor.bytes, bytes->data() + bytes->size());
  EXPECT_GE(g.tensor.scales, bytes->data());
  EXPECT_LE(g.tensor.scales + g.tensor.scale_bytes, bytes->data() + bytes->size());
}

TEST(Codec, DecodedTensorsShareTheReceivedBuffer) {
  const auto bytes = std::make_shared<const std::vector<char>>(encode(one_of_each_kind()[1]));
  auto decoded = decode(bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.error;
  const auto& g = std::get<Gradient>(*decoded.message);
  EXPECT_GE(g.tensor.data, bytes->data());
  EXPECT_LE(g.tensor.data + g.tensor.bytes, bytes->data() + bytes->size());
}

TEST(Codec, EveryTruncationIsAnErrorNotACrash) {
  for (const Message& message : seeds()) {
    SCOPED_TRACE(kind_name(message));
    const auto bytes = encode(message);
    for (size_t size = 0; size < bytes.size(); ++size) {
      auto decoded = decode_copy(bytes.data(), size);
      EXPECT_FALSE(decoded.ok()) << "a prefix of " << size << " of " << bytes.size() << " bytes decoded";
      EXPECT_FALSE(decoded.error.empty());
    }
  }
}

TEST(Codec, RandomCorruptionNeverCrashesAndAnyDecodedMessageIsValid) {
  std::mt19937_64 rng(12345);
  int rejected = 0, total = 0;
  for (const Message& message : seeds()) {
    const auto bytes = encode(message);
    for (int trial = 0; trial < 300; ++trial) {
      auto corrupted = bytes;
      const int flips = 1 + static_cast<int>(rng() % 8);
      for (int i = 0; i < flips; ++i) corrupted[rng() % corrupted.size()] ^= static_cast<char>(1 + rng() % 255);
      auto decoded = decode_copy(corrupted.data(), corrupted.size());
      ++total;
      if (!decoded.ok()) {
        ++rejected;
        EXPECT_FALSE(decoded.error.empty());
      } else {
        // Whatever decoded must be self-consistent enough to encode again.
        auto again = encode(*decoded.message);
        EXPECT_TRUE(decode_copy(again.data(), again.size()).ok());
        // ... and a decoded tensor of a float dtype decodes to its values.
        const TensorBlob* t = tensor_of(*decoded.message);
        if (t && codec_of(t->dtype)) values_of(*t);
      }
    }
  }
  EXPECT_GT(rejected, 0) << "no corruption out of " << total << " was detected";
}

TEST(Codec, OversizedMessageIsRejectedBeforeParsing) {
  const auto bytes = encode(one_of_each_kind()[0]);
  DecodeLimits limits;
  limits.max_message_bytes = bytes.size() - 8;
  auto decoded = decode_copy(bytes.data(), bytes.size(), limits);
  ASSERT_FALSE(decoded.ok());
  EXPECT_NE(decoded.error.find("exceeds the limit"), std::string::npos) << decoded.error;
}

TEST(Codec, NotAWholeNumberOfWordsIsNamed) {
  const auto bytes = encode(Hello{});
  auto decoded = decode_copy(bytes.data(), bytes.size() - 3);
  ASSERT_FALSE(decoded.ok());
  EXPECT_NE(decoded.error.find("8-byte words"), std::string::npos) << decoded.error;
}

TEST(Codec, TrailingBytesAreRejected) {
  auto bytes = encode(Hello{});
  bytes.resize(bytes.size() + 16, 0);
  auto decoded = decode_copy(bytes.data(), bytes.size());
  ASSERT_FALSE(decoded.ok());
  EXPECT_NE(decoded.error.find("trailing"), std::string::npos) << decoded.error;
}

// Builds an envelope by hand, bypassing encode()'s well-formed output.
template <typename Fill>
std::vector<char> handmade(Fill fill) {
  capnp::MallocMessageBuilder builder;
  fill(builder.initRoot<wire::Envelope>());
  auto words = capnp::messageToFlatArray(builder);
  auto chars = words.asChars();
  return std::vector<char>(chars.begin(), chars.end());
}

TEST(Codec, TensorWhoseDataDoesNotMatchItsShapeIsNamed) {
  auto bytes = handmade([](wire::Envelope::Builder env) {
    auto t = env.initGradient().initTensor();
    t.setDtype(wire::Tensor::DType::FLOAT32);
    auto shape = t.initShape(2);
    shape.set(0, 4);
    shape.set(1, 4);
    t.initData(60);  // 16 floats need 64 bytes
  });
  auto decoded = decode_copy(bytes.data(), bytes.size());
  ASSERT_FALSE(decoded.ok());
  EXPECT_NE(decoded.error.find("gradient.tensor"), std::string::npos) << decoded.error;
  EXPECT_NE(decoded.error.find("64 bytes expected"), std::string::npos) << decoded.error;
}

TEST(Codec, HostileShapesAreRejected) {
  auto negative = handmade([](wire::Envelope::Builder env) {
    auto t = env.initActivation().initTensor();
    auto shape = t.initShape(1);
    shape.set(0, -4);
  });
  auto decoded = decode_copy(negative.data(), negative.size());
  ASSERT_FALSE(decoded.ok());
  EXPECT_NE(decoded.error.find("negative dimension"), std::string::npos) << decoded.error;

  auto overflow = handmade([](wire::Envelope::Builder env) {
    auto t = env.initActivation().initTensor();
    auto shape = t.initShape(3);
    for (unsigned i = 0; i < 3; ++i) shape.set(i, int64_t{1} << 40);
  });
  decoded = decode_copy(overflow.data(), overflow.size());
  ASSERT_FALSE(decoded.ok());
  EXPECT_NE(decoded.error.find("overflow"), std::string::npos) << decoded.error;

  // Element count x 8 bytes wraps around to 8: an int64 tensor of 2^61 + 1
  // elements "carried" in 8 data bytes.
  auto wraps = handmade([](wire::Envelope::Builder env) {
    auto t = env.initActivation().initLabels();
    t.setDtype(wire::Tensor::DType::INT64);
    t.initShape(1).set(0, (int64_t{1} << 61) + 1);
    t.initData(8);
  });
  decoded = decode_copy(wraps.data(), wraps.size());
  ASSERT_FALSE(decoded.ok()) << "a wrapped-around size decoded as valid";
  EXPECT_NE(decoded.error.find("activation.labels"), std::string::npos) << decoded.error;
  EXPECT_NE(decoded.error.find("overflow"), std::string::npos) << decoded.error;

  auto deep = handmade([](wire::Envelope::Builder env) { env.initReduceChunk().initTensor().initShape(9); });
  decoded = decode_copy(deep.data(), deep.size());
  ASSERT_FALSE(decoded.ok());
  EXPECT_NE(decoded.error.find("rank 9"), std::string::npos) << decoded.error;
}

TEST(Codec, UnknownEnumValuesAreRejected) {
  auto bytes = handmade([](wire::Envelope::Builder env) {
    env.initControl().setKind(static_cast<wire::RoundControl::Kind>(9));
  });
  auto decoded = decode_copy(bytes.data(), bytes.size());
  ASSERT_FALSE(decoded.ok());
  EXPECT_NE(decoded.error.find("control.kind"), std::string::npos) << decoded.error;
}

TEST(Codec, InconsistentAssignmentIsRejected) {
  auto s = std::get<StageAssignment>(one_of_each_kind()[3]);
  s.group[0].samples = 11;  // 11 + 6 != 16
  auto bytes = encode(s);
  auto decoded = decode_copy(bytes.data(), bytes.size());
  ASSERT_FALSE(decoded.ok());
  EXPECT_NE(decoded.error.find("add up to 17"), std::string::npos) << decoded.error;
}

TEST(Codec, OverlongListIsRejectedByItsLength) {
  // A list longer than max_list_length is rejected by its length, before
  // anything walks or copies it.
  auto bytes = handmade([](wire::Envelope::Builder env) { env.initMetrics().initEvents(5000); });
  DecodeLimits limits;
  limits.max_list_length = 1000;
  auto decoded = decode_copy(bytes.data(), bytes.size(), limits);
  ASSERT_FALSE(decoded.ok());
  EXPECT_NE(decoded.error.find("metrics.events"), std::string::npos) << decoded.error;
}

TEST(Codec, ATraceEventWithAnUnknownCodecIsRejected) {
  auto bytes = handmade([](wire::Envelope::Builder env) { env.initMetrics().initEvents(1)[0].setCodec(9); });
  auto decoded = decode_copy(bytes.data(), bytes.size(), DecodeLimits{});
  ASSERT_FALSE(decoded.ok());
  EXPECT_NE(decoded.error.find("metrics.events.codec"), std::string::npos) << decoded.error;
}

// A tensor written by hand: `data_bytes` zero bytes, then `scales` when
// there are any.
void fill_tensor(wire::Tensor::Builder t, wire::Tensor::DType dtype, std::vector<int64_t> shape, size_t data_bytes,
                 uint32_t block = 0, std::vector<float> scales = {}) {
  t.setDtype(dtype);
  auto s = t.initShape(static_cast<unsigned>(shape.size()));
  for (size_t i = 0; i < shape.size(); ++i) s.set(static_cast<unsigned>(i), shape[i]);
  t.initData(static_cast<unsigned>(data_bytes));
  t.setBlockSize(block);
  if (!scales.empty()) {
    auto out = t.initScales(static_cast<unsigned>(scales.size() * sizeof(float)));
    std::memcpy(out.begin(), scales.data(), scales.size() * sizeof(float));
  }
}

// The error decoding `bytes` gives; fails the test if they decode.
std::string rejection(const std::vector<char>& bytes) {
  auto decoded = decode_copy(bytes.data(), bytes.size());
  EXPECT_FALSE(decoded.ok()) << "decoded a " << kind_name(*decoded.message);
  return decoded.error;
}

std::string rejection(const Message& message) { return rejection(encode(message)); }

#define EXPECT_MENTIONS(error, part) EXPECT_NE((error).find(part), std::string::npos) << (error)

constexpr auto kInt8 = wire::Tensor::DType::INT8_BLOCK;
constexpr auto kInt4 = wire::Tensor::DType::INT4_BLOCK;

TEST(Codec, HandmadeCompressedTensorIsAccepted) {
  // The baseline the hostile variants below depart from: 2 rows of 8 int8
  // values in blocks of 4, so 4 scales.
  auto bytes = handmade([](wire::Envelope::Builder env) {
    fill_tensor(env.initActivation().initTensor(), kInt8, {2, 8}, 16, 4, {1, 0, 0.5f, 2});
  });
  auto decoded = decode_copy(bytes.data(), bytes.size());
  ASSERT_TRUE(decoded.ok()) << decoded.error;
  EXPECT_EQ(std::get<Activation>(*decoded.message).tensor.dtype, DType::int8_block);
  EXPECT_EQ(std::get<Activation>(*decoded.message).tensor.scale_bytes, 16u);
}

TEST(Codec, WrongNumberOfScalesIsNamed) {
  auto error = rejection(handmade([](wire::Envelope::Builder env) {
    fill_tensor(env.initActivation().initTensor(), kInt8, {2, 8}, 16, 4, {1, 1, 1});
  }));
  EXPECT_MENTIONS(error, "activation.tensor");
  EXPECT_MENTIONS(error, "12 scale bytes");
  EXPECT_MENTIONS(error, "16 expected");

  error = rejection(handmade([](wire::Envelope::Builder env) {
    fill_tensor(env.initGradient().initTensor(), kInt8, {2, 8}, 16, 4, {1, 1, 1, 1, 1});
  }));
  EXPECT_MENTIONS(error, "gradient.tensor");
  EXPECT_MENTIONS(error, "20 scale bytes");
  EXPECT_MENTIONS(error, "16 expected");

  // No scales at all for values that need them.
  error = rejection(handmade([](wire::Envelope::Builder env) {
    fill_tensor(env.initReduceChunk().initTensor(), kInt4, {8}, 4, 4);
  }));
  EXPECT_MENTIONS(error, "reduceChunk.tensor");
  EXPECT_MENTIONS(error, "0 scale bytes");
}

TEST(Codec, NonFiniteOrNegativeScaleIsNamed) {
  auto error = rejection(handmade([](wire::Envelope::Builder env) {
    fill_tensor(env.initActivation().initTensor(), kInt8, {2, 8}, 16, 4,
                {1, std::numeric_limits<float>::quiet_NaN(), 1, 1});
  }));
  EXPECT_MENTIONS(error, "activation.tensor");
  EXPECT_MENTIONS(error, "scale 1 is not finite");

  error = rejection(handmade([](wire::Envelope::Builder env) {
    fill_tensor(env.initActivation().initTensor(), kInt4, {2, 8}, 8, 4,
                {1, 1, std::numeric_limits<float>::infinity(), 1});
  }));
  EXPECT_MENTIONS(error, "scale 2 is not finite");

  error = rejection(handmade([](wire::Envelope::Builder env) {
    fill_tensor(env.initGradient().initTensor(), kInt8, {2, 8}, 16, 4, {1, 1, -0.5f, 1});
  }));
  EXPECT_MENTIONS(error, "gradient.tensor");
  EXPECT_MENTIONS(error, "scale 2 is negative");
}

TEST(Codec, BlockSizeOutOfRangeIsNamed) {
  auto error = rejection(handmade([](wire::Envelope::Builder env) {
    fill_tensor(env.initActivation().initTensor(), kInt8, {2, 8}, 16, 0, {1, 1, 1, 1});
  }));
  EXPECT_MENTIONS(error, "activation.tensor");
  EXPECT_MENTIONS(error, "block size 0");

  error = rejection(handmade([](wire::Envelope::Builder env) {
    fill_tensor(env.initReduceChunk().initTensor(), kInt4, {2, 8}, 8, wire_codec::kMaxBlock + 1, {1, 1});
  }));
  EXPECT_MENTIONS(error, "reduceChunk.tensor");
  EXPECT_MENTIONS(error, "block size " + std::to_string(wire_codec::kMaxBlock + 1) + " exceeds");

  // kMaxBlock itself is fine: one scale per row.
  auto bytes = handmade([](wire::Envelope::Builder env) {
    fill_tensor(env.initReduceChunk().initTensor(), kInt4, {2, 8}, 8, wire_codec::kMaxBlock, {1, 1});
  });
  auto decoded = decode_copy(bytes.data(), bytes.size());
  EXPECT_TRUE(decoded.ok()) << decoded.error;
}

TEST(Codec, Int4TensorOfTheWrongSizeIsNamed) {
  // 9 int4 values take 5 bytes (two per byte, the last one alone).
  auto error = rejection(handmade([](wire::Envelope::Builder env) {
    fill_tensor(env.initGradient().initTensor(), kInt4, {3, 3}, 9, 4, {1, 1, 1});
  }));
  EXPECT_MENTIONS(error, "gradient.tensor");
  EXPECT_MENTIONS(error, "9 data bytes");
  EXPECT_MENTIONS(error, "5 bytes expected");

  error = rejection(handmade([](wire::Envelope::Builder env) {
    fill_tensor(env.initActivation().initTensor(), kInt4, {8}, 3, 8, {1});
  }));
  EXPECT_MENTIONS(error, "activation.tensor");
  EXPECT_MENTIONS(error, "4 bytes expected");
}

TEST(Codec, ScalesOnALosslessOrHalfTensorAreRejected) {
  auto error = rejection(handmade([](wire::Envelope::Builder env) {
    fill_tensor(env.initReduceChunk().initTensor(), wire::Tensor::DType::FLOAT32, {4}, 16, 4, {1});
  }));
  EXPECT_MENTIONS(error, "reduceChunk.tensor");
  EXPECT_MENTIONS(error, "4 scale bytes on a float32 tensor");

  error = rejection(handmade([](wire::Envelope::Builder env) {
    fill_tensor(env.initActivation().initTensor(), wire::Tensor::DType::BFLOAT16, {4}, 8, 4, {1});
  }));
  EXPECT_MENTIONS(error, "activation.tensor");
  EXPECT_MENTIONS(error, "bfloat16");

  error = rejection(handmade([](wire::Envelope::Builder env) {
    fill_tensor(env.initActivation().initLabels(), wire::Tensor::DType::INT64, {2}, 16, 4, {1});
  }));
  EXPECT_MENTIONS(error, "activation.labels");
  EXPECT_MENTIONS(error, "int64");
}

TEST(Codec, UnknownDtypeIsNamed) {
  auto error = rejection(handmade([](wire::Envelope::Builder env) {
    fill_tensor(env.initActivation().initTensor(), static_cast<wire::Tensor::DType>(6), {4}, 4, 4, {1});
  }));
  EXPECT_MENTIONS(error, "activation.tensor");
  EXPECT_MENTIONS(error, "unknown dtype 6");
}

TEST(Codec, CompressedStatesAreRejected) {
  auto error = rejection(handmade([](wire::Envelope::Builder env) {
    auto s = env.initStageState();
    s.setLayerEnd(1);
    fill_tensor(s.initWeights(), kInt8, {8}, 8, 4, {1, 1});
  }));
  EXPECT_MENTIONS(error, "stageState.weights");
  EXPECT_MENTIONS(error, "int8Block");
  EXPECT_MENTIONS(error, "states travel as float32");

  // Through encode(): a replica or checkpoint of lossy bytes never decodes.
  StageState s = sample_state();
  s.optimizer_state = compressed(wire_codec::Codec::bf16, {10}, 1.0f);
  error = rejection(s);
  EXPECT_MENTIONS(error, "stageState.optimizerState");
  EXPECT_MENTIONS(error, "states travel as float32");

  auto assignment = std::get<StageAssignment>(one_of_each_kind()[3]);
  assignment.initial_state.weights = compressed(wire_codec::Codec::int4, {10}, 1.0f);
  error = rejection(assignment);
  EXPECT_MENTIONS(error, "stageState.weights");
  EXPECT_MENTIONS(error, "states travel as float32");
}

TEST(Codec, UnknownOrOutOfRangeAssignmentCodecsAreRejected) {
  const auto valid = std::get<StageAssignment>(one_of_each_kind()[3]);

  auto s = valid;
  s.codec_to_next = static_cast<wire_codec::Codec>(9);
  auto error = rejection(s);
  EXPECT_MENTIONS(error, "assignment.codecToNext");
  EXPECT_MENTIONS(error, "unknown value 9");

  s = valid;
  s.codec_from_prev = static_cast<wire_codec::Codec>(5);
  error = rejection(s);
  EXPECT_MENTIONS(error, "assignment.codecFromPrev");
  EXPECT_MENTIONS(error, "unknown value 5");

  s = valid;
  s.codec_all_reduce = static_cast<wire_codec::Codec>(200);
  error = rejection(s);
  EXPECT_MENTIONS(error, "assignment.codecAllReduce");
  EXPECT_MENTIONS(error, "unknown value 200");

  s = valid;
  s.codec_block = 0;
  error = rejection(s);
  EXPECT_MENTIONS(error, "assignment.codecBlock");
  EXPECT_MENTIONS(error, "0 is not in [1, " + std::to_string(wire_codec::kMaxBlock) + "]");

  s = valid;
  s.codec_block = wire_codec::kMaxBlock + 1;
  error = rejection(s);
  EXPECT_MENTIONS(error, "assignment.codecBlock");

  // The same by hand: the enum as the schema writes it.
  error = rejection(handmade([](wire::Envelope::Builder env) {
    auto a = env.initAssignment();
    a.setCodecBlock(64);
    a.setCodecToNext(static_cast<wire::WireCodec>(9));
  }));
  EXPECT_MENTIONS(error, "assignment.codecToNext");
  EXPECT_MENTIONS(error, "unknown value 9");
}

TEST(Codec, APlanRequestsMinimumGainIsAFractionBelowOne) {
  for (double bad : {-0.1, 1.0, 7.0, std::nan("")}) {
    PlanRequest request;
    request.rank = "simulated";
    request.min_gain = bad;
    const std::string error = rejection(request);
    EXPECT_MENTIONS(error, "planRequest.minGain");
    EXPECT_MENTIONS(error, "is not in [0, 1)");
  }
  PlanRequest fine;
  fine.min_gain = 0.05;
  EXPECT_TRUE(decode_copy(encode(fine).data(), encode(fine).size()).ok());
}

TEST(Codec, AReleaseKeepsItsRangesAndAnEmptyRangeIsRejected) {
  const Release release{"job-7", {{0, 3}, {3, 9}}};
  auto decoded = decode_copy(encode(release).data(), encode(release).size());
  ASSERT_TRUE(decoded.ok()) << decoded.error;
  const auto& r = std::get<Release>(*decoded.message);
  EXPECT_EQ(r.job_id, "job-7");
  EXPECT_EQ(r.keep, (std::vector<LayerRange>{{0, 3}, {3, 9}}));
  const Release finished{"job-8", {}};
  decoded = decode_copy(encode(finished).data(), encode(finished).size());
  ASSERT_TRUE(decoded.ok()) << decoded.error;
  EXPECT_TRUE(std::get<Release>(*decoded.message).keep.empty());
  EXPECT_MENTIONS(rejection(Release{"job-7", {{4, 4}}}), "release.keep: layer range [4, 4) is empty");
}

TEST(Codec, AModelFileKeepsItsFieldsAndABadShapeOrClassCountIsRejected) {
  const ModelFile model = sample_model_file();
  auto decoded = decode_copy(encode(model).data(), encode(model).size());
  ASSERT_TRUE(decoded.ok()) << decoded.error;
  const auto& m = std::get<ModelFile>(*decoded.message);
  EXPECT_EQ(m.name, model.name);
  EXPECT_EQ(m.sha256, model.sha256);
  EXPECT_EQ(m.bytes, model.bytes);
  EXPECT_EQ(m.layer_names, model.layer_names);
  EXPECT_EQ(m.sample_shape, model.sample_shape);
  EXPECT_EQ(m.num_classes, 10);
  EXPECT_EQ(m.dataset, model.dataset);
  ModelFile bad_shape = model;
  bad_shape.sample_shape = {1, 0, 28};
  EXPECT_MENTIONS(rejection(bad_shape), "modelFile.sampleShape: a dimension of 0");
  ModelFile no_classes = model;
  no_classes.num_classes = 0;
  EXPECT_MENTIONS(rejection(no_classes), "modelFile.numClasses: 0");
}

}  // namespace
}  // namespace asteroid::messages
