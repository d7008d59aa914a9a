#include <ATen/ATen.h>
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "messages/asteroid.capnp.h"
#include "messages/codec.h"
#include "messages/tensor_codec.h"

namespace asteroid::messages {
namespace {

at::Tensor through_the_wire(const at::Tensor& t) {
  Gradient g;
  g.tensor = to_blob(t);
  auto bytes = encode(g);
  auto decoded = decode_copy(bytes.data(), bytes.size());
  EXPECT_TRUE(decoded.ok()) << decoded.error;
  return to_tensor(std::get<Gradient>(*decoded.message).tensor);
}

TEST(TensorCodec, FloatLongAndHalfTensorsSurviveTheWire) {
  at::manual_seed(3);
  for (const at::Tensor& t : {at::randn({3, 4, 5}), at::randint(0, 1000, {17}, at::kLong),
                              at::randn({2, 8}).to(at::kHalf), at::randn({1})}) {
    at::Tensor back = through_the_wire(t);
    EXPECT_EQ(back.scalar_type(), t.scalar_type());
    EXPECT_EQ(back.sizes(), t.sizes());
    EXPECT_TRUE(at::equal(back, t));
  }
}

TEST(TensorCodec, NonContiguousTensorsAreSentInLogicalOrder) {
  at::Tensor t = at::arange(12, at::kFloat).reshape({3, 4}).t();
  ASSERT_FALSE(t.is_contiguous());
  EXPECT_TRUE(at::equal(through_the_wire(t), t));
}

TEST(TensorCodec, UndefinedTensorIsAnEmptyBlob) {
  EXPECT_TRUE(to_blob(at::Tensor()).empty());
  EXPECT_FALSE(to_tensor(TensorBlob{}).defined());
  EXPECT_FALSE(through_the_wire(at::Tensor()).defined());
}

TEST(TensorCodec, ReceivedTensorOutlivesTheDecodedMessage) {
  at::Tensor kept;
  {
    Gradient g;
    g.tensor = to_blob(at::full({1000}, 2.5f));
    auto bytes = encode(g);
    auto decoded = decode_copy(bytes.data(), bytes.size());
    ASSERT_TRUE(decoded.ok());
    kept = to_tensor(std::get<Gradient>(*decoded.message).tensor);
  }
  EXPECT_FLOAT_EQ(kept.sum().item<float>(), 2500.0f);
}

using wire_codec::Codec;

// The largest error the codec may make on each value of `t` (float32),
// encoded with one row per t.size(0) (one row for rank < 2) in blocks of
// `block`: none for fp32, half a unit in the last place for fp16 (plus half
// its smallest subnormal) and bf16, half a quantisation step of the value's
// block for int8 and int4.
std::vector<float> bounds(const at::Tensor& t, Codec codec, uint32_t block) {
  const at::Tensor c = t.contiguous();
  const float* v = c.data_ptr<float>();
  const int64_t n = c.numel();
  const int64_t rows = c.dim() >= 2 ? c.size(0) : 1;
  const int64_t length = rows == 0 ? 0 : n / rows;
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const float x = std::fabs(v[i]);
    switch (codec) {
      case Codec::fp32: out[i] = 0.0f; break;
      case Codec::fp16: out[i] = x * 0x1p-11f + 0x1p-25f; break;
      case Codec::bf16: out[i] = x * 0x1p-8f; break;
      case Codec::int8:
      case Codec::int4: {
        const int64_t row = i / length, start = row * length + (i % length) / block * block;
        const int64_t end = std::min(start + static_cast<int64_t>(block), (row + 1) * length);
        float absmax = 0.0f;
        for (int64_t j = start; j < end; ++j) absmax = std::max(absmax, std::fabs(v[j]));
        const float qmax = codec == Codec::int8 ? 127.0f : 7.0f;
        out[i] = absmax / qmax / 2.0f * 1.0001f + 1e-30f;
        break;
      }
    }
  }
  return out;
}

void expect_within_bound(const at::Tensor& decoded, const at::Tensor& original, Codec codec, uint32_t block) {
  ASSERT_EQ(decoded.scalar_type(), at::kFloat);
  ASSERT_EQ(decoded.sizes(), original.sizes());
  const at::Tensor d = decoded.contiguous(), o = original.contiguous();
  const auto bound = bounds(o, codec, block);
  const float* dv = d.data_ptr<float>();
  const float* ov = o.data_ptr<float>();
  int failures = 0;
  for (size_t i = 0; i < bound.size() && failures < 5; ++i) {
    if (!(std::fabs(dv[i] - ov[i]) <= bound[i])) {
      ++failures;
      ADD_FAILURE() << wire_codec::codec_name(codec) << " value " << i << ": " << ov[i] << " decoded as " << dv[i]
                    << " (bound " << bound[i] << ")";
    }
  }
}

at::Tensor decoded_through_the_wire(const TensorBlob& blob) {
  Activation a;
  a.tensor = blob;
  a.labels = to_blob(at::arange(3, at::kLong));
  auto bytes = encode(a);
  auto decoded = decode_copy(bytes.data(), bytes.size());
  EXPECT_TRUE(decoded.ok()) << decoded.error;
  if (!decoded.ok()) return {};
  const TensorBlob& received = std::get<Activation>(*decoded.message).tensor;
  EXPECT_EQ(received.dtype, blob.dtype);
  EXPECT_EQ(received.shape, blob.shape);
  EXPECT_EQ(received.block, blob.block);
  return to_float_tensor(received);
}

TEST(TensorCodec, EveryCodecDecodesWithinItsBound) {
  at::manual_seed(5);
  // Rows of 100 values (a partial last block of 64), rank 1, rank 4, a scalar.
  const std::vector<at::Tensor> tensors = {at::randn({8, 100}), at::randn({130}) * 30, at::randn({3, 2, 5, 7}),
                                           at::randn({}), at::randn({2, 3}) * 1e-3};
  for (Codec codec : wire_codec::kAllCodecs) {
    for (const at::Tensor& t : tensors) {
      SCOPED_TRACE(std::string(wire_codec::codec_name(codec)) + " rank " + std::to_string(t.dim()));
      const TensorBlob blob = to_blob(t, codec, 64);
      EXPECT_EQ(blob.dtype, dtype_of(codec));
      EXPECT_EQ(blob.shape, std::vector<int64_t>(t.sizes().begin(), t.sizes().end()));
      EXPECT_EQ(blob.block, wire_codec::has_scales(codec) ? 64u : 0u);
      EXPECT_EQ(wire_codec::validate(blob.codec_view()), "");
      const uint64_t rows = t.dim() >= 2 ? t.size(0) : 1;
      EXPECT_EQ(blob.bytes + blob.scale_bytes,
                wire_codec::encoded_bytes(codec, rows, t.numel() / rows, 64));
      const at::Tensor back = to_float_tensor(blob);
      expect_within_bound(back, t, codec, 64);
      if (codec == Codec::fp32) {
        EXPECT_TRUE(at::equal(back, t));
      } else if (t.numel() > 1) {
        EXPECT_FALSE(at::equal(back, t)) << "a lossy codec was exact: was it applied?";
      }
      // What the receiver decodes is what the sender would.
      const at::Tensor received = decoded_through_the_wire(blob);
      ASSERT_TRUE(received.defined());
      EXPECT_TRUE(at::equal(received, back));
    }
  }
}

TEST(TensorCodec, Fp32SharesLikeTheLosslessPathAndLossyCodecsCopy) {
  at::Tensor t = at::randn({4, 16});
  const TensorBlob blob = to_blob(t, Codec::fp32, 64);
  // fp32 is to_blob(tensor): no copy of a contiguous tensor, no scales.
  EXPECT_EQ(blob.dtype, DType::float32);
  EXPECT_EQ(blob.data, static_cast<const char*>(t.data_ptr()));
  EXPECT_EQ(blob.block, 0u);
  EXPECT_EQ(blob.scale_bytes, 0u);
  at::Tensor back = to_float_tensor(blob);
  EXPECT_EQ(back.data_ptr(), t.data_ptr());
  // A lossy blob owns its bytes, and decodes into a tensor of its own.
  for (Codec codec : {Codec::fp16, Codec::bf16, Codec::int8, Codec::int4}) {
    SCOPED_TRACE(wire_codec::codec_name(codec));
    at::Tensor source = at::randn({4, 16});
    const TensorBlob lossy = to_blob(source, codec, 64);
    const at::Tensor decoded = to_float_tensor(lossy);
    source.fill_(1e6f);  // the blob does not alias the source
    EXPECT_TRUE(at::equal(to_float_tensor(lossy), decoded));
    EXPECT_NE(decoded.data_ptr(), static_cast<const void*>(lossy.data));
    EXPECT_LT(decoded.abs().max().item<float>(), 100.0f);
  }
}

TEST(TensorCodec, Fp16MatchesTorchHalf) {
  at::manual_seed(9);
  at::Tensor t = at::cat({at::randn({200}), at::randn({50}) * 1e-6f, at::randn({50}) * 1e4f});
  const TensorBlob ours = to_blob(t, Codec::fp16, 64);
  const TensorBlob torch_half = to_blob(t.to(at::kHalf));
  ASSERT_EQ(ours.dtype, torch_half.dtype);
  ASSERT_EQ(ours.bytes, torch_half.bytes);
  EXPECT_EQ(std::memcmp(ours.data, torch_half.data, ours.bytes), 0);
  EXPECT_TRUE(at::equal(to_float_tensor(torch_half), t.to(at::kHalf).to(at::kFloat)));
  EXPECT_TRUE(at::equal(to_float_tensor(ours), to_float_tensor(torch_half)));
}

TEST(TensorCodec, BlocksNeverSpanSamples) {
  // A micro-batch encoded whole decodes to what its samples encoded alone
  // decode to: how it is split between group members changes nothing.
  at::manual_seed(11);
  at::Tensor t = at::randn({6, 3, 5, 7});
  t[2].mul_(1000.0f);  // one loud sample does not coarsen its neighbours
  for (Codec codec : wire_codec::kAllCodecs) {
    SCOPED_TRACE(wire_codec::codec_name(codec));
    const at::Tensor whole = to_float_tensor(to_blob(t, codec, 64));
    for (int64_t begin : {0, 1, 3}) {
      const at::Tensor part = to_float_tensor(to_blob(t.narrow(0, begin, 3), codec, 64));
      EXPECT_TRUE(at::equal(part, whole.narrow(0, begin, 3))) << "samples from " << begin;
    }
  }
}

TEST(TensorCodec, NarrowedSlicesAreEncodedInLogicalOrder) {
  at::manual_seed(13);
  at::Tensor base = at::randn({6, 130});
  const at::Tensor columns = base.narrow(1, 3, 100);  // strided rows
  const at::Tensor samples = base.narrow(0, 2, 3);    // contiguous, offset storage
  ASSERT_FALSE(columns.is_contiguous());
  for (Codec codec : wire_codec::kAllCodecs) {
    for (const at::Tensor& t : {columns, samples}) {
      SCOPED_TRACE(std::string(wire_codec::codec_name(codec)) + " " + std::to_string(t.size(1)) + " columns");
      const TensorBlob blob = to_blob(t, codec, 64);
      EXPECT_EQ(blob.shape, std::vector<int64_t>(t.sizes().begin(), t.sizes().end()));
      const at::Tensor back = to_float_tensor(blob);
      expect_within_bound(back, t, codec, 64);
      // The same as encoding a contiguous copy.
      EXPECT_TRUE(at::equal(back, to_float_tensor(to_blob(t.contiguous(), codec, 64))));
      EXPECT_TRUE(at::equal(decoded_through_the_wire(blob), back));
    }
  }
}

TEST(TensorCodec, EmptyAndUndefinedTensors) {
  for (Codec codec : wire_codec::kAllCodecs) {
    SCOPED_TRACE(wire_codec::codec_name(codec));
    const TensorBlob none = to_blob(at::Tensor(), codec, 64);
    EXPECT_TRUE(none.empty());
    EXPECT_FALSE(to_float_tensor(none).defined());
    for (const at::Tensor& t : {at::zeros({0}), at::zeros({0, 8}), at::zeros({4, 0}), at::zeros({2, 0, 3})}) {
      SCOPED_TRACE("rank " + std::to_string(t.dim()) + ", " + std::to_string(t.size(0)) + " rows");
      const TensorBlob blob = to_blob(t, codec, 64);
      EXPECT_EQ(blob.shape, std::vector<int64_t>(t.sizes().begin(), t.sizes().end()));
      EXPECT_EQ(blob.bytes, 0u);
      EXPECT_EQ(blob.scale_bytes, 0u);
      EXPECT_EQ(wire_codec::validate(blob.codec_view()), "");
      const at::Tensor back = to_float_tensor(blob);
      ASSERT_TRUE(back.defined());
      EXPECT_EQ(back.sizes(), t.sizes());
      EXPECT_EQ(back.scalar_type(), at::kFloat);
      const at::Tensor received = decoded_through_the_wire(blob);
      ASSERT_TRUE(received.defined());
      EXPECT_EQ(received.sizes(), t.sizes());
    }
  }
}

TEST(TensorCodec, ReceivedTensorOfNoValuesWithHugeDimensionsIsHarmless) {
  // A zero first dimension makes every later one unchecked by the shape's
  // overflow test (the product stays 0): decoding it must still not crash
  // nor allocate.
  for (auto dtype : {wire::Tensor::DType::FLOAT32, wire::Tensor::DType::BFLOAT16, wire::Tensor::DType::INT8_BLOCK,
                     wire::Tensor::DType::INT4_BLOCK}) {
    SCOPED_TRACE(static_cast<int>(dtype));
    capnp::MallocMessageBuilder builder;
    auto t = builder.initRoot<wire::Envelope>().initActivation().initTensor();
    t.setDtype(dtype);
    auto shape = t.initShape(3);
    shape.set(0, 0);
    shape.set(1, int64_t{1} << 40);
    shape.set(2, int64_t{3} << 40);
    t.setBlockSize(64);
    auto words = capnp::messageToFlatArray(builder);
    auto decoded = decode_copy(words.asChars().begin(), words.asChars().size());
    if (!decoded.ok()) continue;  // rejecting it is fine too
    const TensorBlob& blob = std::get<Activation>(*decoded.message).tensor;
    try {
      const at::Tensor back = to_float_tensor(blob);
      EXPECT_EQ(back.numel(), 0);
    } catch (const std::exception& e) {
      // Torch refusing the shape is an error, not a crash.
      SUCCEED() << e.what();
    }
  }
}

TEST(TensorCodec, DecodedEnvelopeGivesTheSameValuesAsTheSentBlob) {
  at::manual_seed(17);
  for (Codec codec : wire_codec::kAllCodecs) {
    SCOPED_TRACE(wire_codec::codec_name(codec));
    at::Tensor activations = at::randn({4, 3, 33});
    at::Tensor gradients = at::randn({4, 99}) * 1e-4f;
    at::Tensor chunk = at::randn({257});
    const Activation a{1, 0, {0, 4}, 0, 0, to_blob(activations, codec, 64), to_blob(at::arange(4, at::kLong))};
    const Gradient g{1, 0, {0, 4}, 1, 0, to_blob(gradients, codec, 32)};
    const ReduceChunk r{1, 2, 3, 0, to_blob(chunk, codec, 128)};
    for (const Message& message : {Message{a}, Message{g}, Message{r}}) {
      SCOPED_TRACE(kind_name(message));
      const auto bytes = encode(message);
      auto decoded = decode_copy(bytes.data(), bytes.size());
      ASSERT_TRUE(decoded.ok()) << decoded.error;
      const TensorBlob* sent = nullptr;
      const TensorBlob* received = nullptr;
      if (auto* m = std::get_if<Activation>(&message)) {
        sent = &m->tensor;
        received = &std::get<Activation>(*decoded.message).tensor;
        EXPECT_TRUE(at::equal(to_tensor(std::get<Activation>(*decoded.message).labels), at::arange(4, at::kLong)));
      } else if (auto* m = std::get_if<Gradient>(&message)) {
        sent = &m->tensor;
        received = &std::get<Gradient>(*decoded.message).tensor;
      } else {
        sent = &std::get<ReduceChunk>(message).tensor;
        received = &std::get<ReduceChunk>(*decoded.message).tensor;
      }
      EXPECT_EQ(received->dtype, sent->dtype);
      EXPECT_EQ(received->block, sent->block);
      EXPECT_EQ(received->scale_bytes, sent->scale_bytes);
      const at::Tensor got = to_float_tensor(*received);
      EXPECT_TRUE(at::equal(got, to_float_tensor(*sent)));
      EXPECT_EQ(got.sizes(), at::IntArrayRef(sent->shape));
    }
  }
}

TEST(TensorCodec, CompressedBlobsAreNotRawTensors) {
  const TensorBlob blob = to_blob(at::randn({2, 8}), Codec::int8, 64);
  try {
    to_tensor(blob);
    FAIL() << "an int8Block blob read as a tensor";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("int8Block"), std::string::npos) << e.what();
  }
  EXPECT_THROW(to_blob(at::randn({2, 8}).to(at::kDouble), Codec::int4, 64), std::invalid_argument);
  EXPECT_THROW(to_float_tensor(to_blob(at::arange(3, at::kLong))), std::invalid_argument);
}

TEST(TensorCodec, UnsupportedDtypeIsAClearError) {
  try {
    to_blob(at::zeros({2}, at::kDouble));
    FAIL() << "double tensor accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("Double"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace asteroid::messages
