// Round trips of every message kind, and hostile input: truncated, corrupted,
// oversized and inconsistent bytes must give an error value, never a crash.
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
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
std::vector<Message> one_of_each_kind() {
  Activation a{7, 3, {4, 9}, 1, 2, floats({5, 2, 3}, 0.25f), longs({1, 2, 3, 4, 5})};
  Gradient g{7, 3, {4, 9}, 2, 0, floats({5, 6}, -1.0f)};
  ReduceChunk r{8, 1, 2, 1, floats({33}, 2.0f)};
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
  RoundControl c{ControlKind::done, 12, 3.5, 16, 11, 2, 1};
  Heartbeat h{"nano-0", 99, 1700000000123456};
  NodeInfo n{"nx-0", 4242, 8ull << 30, 0.75, 1700000000000001, {"fmnist-cnn", "bert-small"}};
  Metrics m{2, 1, 12, {{TraceKind::backward, 2, 1, 12, 3, 100, 250, 4096}, {TraceKind::send, 2, 1, 12, 3, 250, 260, 8}},
            123456789};
  Error e{ErrorCode::out_of_memory, "stage needs 5 GiB, node has 4 GiB"};
  ProfileRequest pr{"fmnist-resnet", {1, 2, 4, 64}, 5};
  ProfileResult res{"{\"model\":\"x\"}"};
  PlanRequest plan{"{\"devices\":[]}", "{\"layers\":[]}", "pp", 64, 4, OptimizerKind::sgd, "{}", {"nano-1"}, {"tx2-9"},
                   true};
  PlanResult plan_result{"{\"stages\":[]}", "no plan fits", "| stage |"};
  LinkProbe probe{std::vector<char>(1000, 'x')};
  ReplicaRequest replica{"job-7", 2, 5, 41};
  Peers peers{{{"nx-0", "10.213.1.1", 7100}, {"nano-2", "10.213.1.6", 7100}}};
  return {a,   g,   r,           s,          sample_state(), c,     h,     n,       m,
          e,   pr,  res,         Hello{},    StateRequest{77}, plan, plan_result, probe, replica,
          peers};
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
  EXPECT_EQ(a.tensor.shape, (std::vector<int64_t>{5, 2, 3}));
  ASSERT_EQ(a.tensor.bytes, 30 * sizeof(float));
  float f29;
  std::memcpy(&f29, a.tensor.data + 29 * sizeof(float), sizeof(float));
  EXPECT_FLOAT_EQ(f29, 0.25f + 0.5f * 29);
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
  for (const Message& message : one_of_each_kind()) {
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
  for (const Message& message : one_of_each_kind()) {
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

}  // namespace
}  // namespace asteroid::messages
