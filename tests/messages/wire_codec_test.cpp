// The wire codecs: round trips with error bounds, exact sizes, rounding at
// the edges (ties, subnormals, saturation, NaN), blocks that never span rows
// (what lets the runtime split a micro-batch between group members), hostile
// views that must give an error naming the fault and never a crash, and
// error feedback.
#include "messages/wire_codec.h"

#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace asteroid::wire_codec {
namespace {

constexpr uint64_t kMax64 = std::numeric_limits<uint64_t>::max();
const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

std::vector<float> normal_values(size_t n, uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, sigma);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

std::vector<float> decoded(const Encoded& e) {
  std::vector<float> out(e.rows * e.row_length);
  EXPECT_EQ(validate(e.view()), "");
  decode(e.view(), out.data());
  return out;
}

uint32_t bits(float f) {
  uint32_t w;
  std::memcpy(&w, &f, 4);
  return w;
}

float from_bits(uint32_t w) {
  float f;
  std::memcpy(&f, &w, 4);
  return f;
}

// The 2-byte code of one value.
uint16_t code16(Codec codec, float x) {
  const Encoded e = encode(codec, &x, 1, 1, 0);
  return static_cast<uint16_t>(e.data[0] | (e.data[1] << 8));
}

float decode16(Codec codec, uint16_t h) {
  const uint8_t data[2] = {static_cast<uint8_t>(h & 0xFF), static_cast<uint8_t>(h >> 8)};
  EncodedView v;
  v.codec = codec;
  v.rows = 1;
  v.row_length = 1;
  v.data = data;
  v.data_size = 2;
  EXPECT_EQ(validate(v), "");
  float out = 0;
  decode(v, &out);
  return out;
}

// binary16 by its definition.
double fp16_reference(uint16_t h) {
  const int exponent = (h >> 10) & 0x1F, mantissa = h & 0x3FF;
  const double magnitude =
      exponent == 0 ? std::ldexp(mantissa, -24) : std::ldexp(1024 + mantissa, exponent - 25);
  return (h & 0x8000) ? -magnitude : magnitude;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

// The int4 codes of a blob, one per value.
std::vector<int> nibbles(const Encoded& e) {
  std::vector<int> q;
  for (uint64_t i = 0; i < e.rows * e.row_length; ++i) {
    const int nibble = (e.data[i / 2] >> (4 * (i % 2))) & 0xF;
    q.push_back(nibble >= 8 ? nibble - 16 : nibble);
  }
  return q;
}

// ---------------------------------------------------------------- names and sizes

TEST(WireCodec, NamesRoundTrip) {
  for (Codec c : kAllCodecs) EXPECT_EQ(parse_codec(codec_name(c)), c);
  EXPECT_FALSE(parse_codec("int2"));
  EXPECT_FALSE(parse_codec(""));
  EXPECT_STREQ(codec_name(static_cast<Codec>(9)), "unknown");
  EXPECT_TRUE(is_lossless(Codec::fp32));
  EXPECT_FALSE(is_lossless(Codec::fp16));
  EXPECT_FALSE(is_lossless(Codec::int4));
  EXPECT_TRUE(has_scales(Codec::int8));
  EXPECT_TRUE(has_scales(Codec::int4));
  EXPECT_FALSE(has_scales(Codec::bf16));
}

TEST(WireCodec, SizesLiteral) {
  // 3 rows of 7 values, blocks of 4: 2 blocks per row (4 + 3).
  EXPECT_EQ(data_bytes(Codec::fp32, 3, 7), 84u);
  EXPECT_EQ(data_bytes(Codec::fp16, 3, 7), 42u);
  EXPECT_EQ(data_bytes(Codec::bf16, 3, 7), 42u);
  EXPECT_EQ(data_bytes(Codec::int8, 3, 7), 21u);
  EXPECT_EQ(data_bytes(Codec::int4, 3, 7), 11u);
  EXPECT_EQ(data_bytes(Codec::int4, 1, 1), 1u);
  EXPECT_EQ(data_bytes(Codec::int4, 1, 2), 1u);
  EXPECT_EQ(data_bytes(Codec::int4, 5, 1), 3u);
  EXPECT_EQ(scale_count(Codec::int8, 3, 7, 4), 6u);
  EXPECT_EQ(scale_count(Codec::int4, 3, 7, 7), 3u);
  EXPECT_EQ(scale_count(Codec::int4, 3, 7, 64), 3u);
  EXPECT_EQ(scale_count(Codec::int8, 3, 7, 1), 21u);
  EXPECT_EQ(scale_count(Codec::fp16, 3, 7, 4), 0u);
  EXPECT_EQ(encoded_bytes(Codec::int8, 3, 7, 4), 21u + 24u);
  EXPECT_EQ(encoded_bytes(Codec::int4, 3, 7, 4), 11u + 24u);
  EXPECT_EQ(encoded_bytes(Codec::fp16, 3, 7, 4), 42u);
  EXPECT_EQ(encoded_bytes(Codec::int8, 0, 7, 4), 0u);
  EXPECT_EQ(encoded_bytes(Codec::int8, 3, 0, 4), 0u);
  // 4096 values in blocks of 64: int8 costs 1 + 4/64 bytes a value.
  EXPECT_EQ(encoded_bytes(Codec::int8, 1, 4096, 64), 4096u + 64u * 4u);
}

TEST(WireCodec, SizesSaturateInsteadOfOverflowing) {
  EXPECT_EQ(data_bytes(Codec::fp32, 1ull << 32, 1ull << 32), kMax64);  // values overflow
  EXPECT_EQ(data_bytes(Codec::fp32, 1ull << 62, 1), kMax64);          // bytes overflow
  EXPECT_EQ(data_bytes(Codec::fp16, 1ull << 63, 1), kMax64);
  EXPECT_EQ(data_bytes(Codec::int8, 1ull << 63, 1), 1ull << 63);
  EXPECT_EQ(data_bytes(Codec::int4, kMax64, 1), kMax64 / 2 + 1);
  EXPECT_EQ(scale_count(Codec::int8, 2, 3, 0), kMax64);
  EXPECT_EQ(encoded_bytes(Codec::int8, 1ull << 62, 1, 1), kMax64);  // 2^62 values + 2^64 scale bytes
  EXPECT_EQ(encoded_bytes(Codec::int8, 2, 3, 0), kMax64);
}

TEST(WireCodec, EncodedSizesMatchTheSizeFunctions) {
  const uint64_t shapes[][2] = {{1, 1}, {1, 2}, {1, 3}, {3, 7}, {2, 64}, {5, 65}, {4, 127}, {7, 1}, {0, 5}, {5, 0}};
  const uint32_t blocks[] = {1, 3, 16, 64, 1000};
  for (Codec c : kAllCodecs) {
    for (auto& s : shapes) {
      for (uint32_t block : blocks) {
        const auto values = normal_values(s[0] * s[1], 1);
        const Encoded e = encode(c, values.data(), s[0], s[1], block);
        SCOPED_TRACE(std::string(codec_name(c)) + " " + std::to_string(s[0]) + "x" + std::to_string(s[1]) +
                     " block " + std::to_string(block));
        EXPECT_EQ(e.codec, c);
        EXPECT_EQ(e.rows, s[0]);
        EXPECT_EQ(e.row_length, s[1]);
        EXPECT_EQ(e.data.size(), data_bytes(c, s[0], s[1]));
        EXPECT_EQ(e.scales.size(), scale_count(c, s[0], s[1], block));
        EXPECT_EQ(e.data.size() + 4 * e.scales.size(), encoded_bytes(c, s[0], s[1], block));
        EXPECT_EQ(validate(e.view()), "");
      }
    }
  }
}

// ---------------------------------------------------------------- fp32

TEST(WireCodec, Fp32IsBitExact) {
  auto values = normal_values(1001, 2, 100.0f);
  values[0] = kNaN;
  values[1] = -kInf;
  values[2] = -0.0f;
  values[3] = from_bits(0x00000001);  // smallest subnormal
  values[4] = from_bits(0x7FC12345);  // NaN with a payload
  values[5] = FLT_MAX;
  const Encoded e = encode(Codec::fp32, values.data(), 7, 143, 0);
  ASSERT_EQ(e.data.size(), 1001u * 4);
  EXPECT_EQ(std::memcmp(e.data.data(), values.data(), e.data.size()), 0);  // raw little-endian float32
  EXPECT_TRUE(same_bits(decoded(e), values));
}

// ---------------------------------------------------------------- fp16

TEST(WireCodec, Fp16RelativeErrorWithinHalfAnUlp) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> exponent(-14.0f, 15.9f);
  std::vector<float> values(100000);
  for (float& x : values) x = std::exp2(exponent(rng)) * (rng() % 2 ? 1.0f : -1.0f);
  const auto out = decoded(encode(Codec::fp16, values.data(), 100, 1000, 0));
  for (size_t i = 0; i < values.size(); ++i) {
    ASSERT_LE(std::fabs(out[i] - values[i]), std::ldexp(std::fabs(values[i]), -11)) << values[i];
  }
}

// Every fp16 code decodes to its value by definition, and encodes back to
// itself (inf saturates, NaN stays NaN).
TEST(WireCodec, Fp16AllCodesDecodeExactlyAndReencode) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = decode16(Codec::fp16, static_cast<uint16_t>(h));
    const bool nan = (h & 0x7C00) == 0x7C00 && (h & 0x3FF) != 0;
    const bool inf = (h & 0x7FFF) == 0x7C00;
    if (nan) {
      ASSERT_TRUE(std::isnan(f)) << h;
      ASSERT_TRUE(std::isnan(decode16(Codec::fp16, code16(Codec::fp16, f)))) << h;
    } else if (inf) {
      ASSERT_TRUE(std::isinf(f)) << h;
      ASSERT_EQ(std::signbit(f), (h & 0x8000) != 0);
      ASSERT_EQ(code16(Codec::fp16, f), (h & 0x8000) | 0x7BFF) << h;
    } else {
      ASSERT_EQ(static_cast<double>(f), fp16_reference(static_cast<uint16_t>(h))) << h;
      ASSERT_EQ(std::signbit(f), (h & 0x8000) != 0) << h;
      ASSERT_EQ(code16(Codec::fp16, f), h) << h;
    }
  }
}

// For float32 values all over the fp16 range (subnormals included), the
// code is the nearest one, and the even one on a tie.
TEST(WireCodec, Fp16RoundsToNearestEven) {
  std::mt19937 rng(4);
  std::vector<float> values;
  // Bit patterns from 0 up to 65504: exponents 2^-40 .. 2^15.
  std::uniform_int_distribution<uint32_t> pattern(0x2B800000u, 0x477FE000u);
  for (int i = 0; i < 200000; ++i) values.push_back(from_bits(pattern(rng) | (rng() % 2 ? 0x80000000u : 0)));
  // Exact ties: halfway between two fp16 values, normal and subnormal.
  for (int i = 0; i < 20000; ++i) {
    const uint16_t h = static_cast<uint16_t>(rng() % 0x7BFF);
    values.push_back(static_cast<float>((fp16_reference(h) + fp16_reference(h + 1)) / 2));
  }
  const Encoded e = encode(Codec::fp16, values.data(), 1, values.size(), 0);
  const auto out = decoded(e);
  int ties = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    const uint16_t h = static_cast<uint16_t>(e.data[2 * i] | (e.data[2 * i + 1] << 8));
    const double x = std::fabs(static_cast<double>(values[i]));
    const uint16_t m = h & 0x7FFF;
    const double error = std::fabs(fp16_reference(m) - x);
    ASSERT_EQ(static_cast<double>(out[i]), fp16_reference(h));
    ASSERT_EQ((h & 0x8000) != 0, std::signbit(values[i])) << values[i];
    if (m > 0) {
      ASSERT_LE(error, std::fabs(fp16_reference(m - 1) - x)) << values[i];
    }
    if (m < 0x7BFF) {
      ASSERT_LE(error, std::fabs(fp16_reference(m + 1) - x)) << values[i];
    }
    const bool tie = (m > 0 && error == std::fabs(fp16_reference(m - 1) - x)) ||
                     (m < 0x7BFF && error == std::fabs(fp16_reference(m + 1) - x));
    if (tie) {
      ++ties;
      ASSERT_EQ(m & 1, 0) << "tie not to even: " << values[i];
    }
  }
  EXPECT_GE(ties, 20000);
}

TEST(WireCodec, Fp16SpecialValues) {
  EXPECT_EQ(code16(Codec::fp16, 0.0f), 0x0000);
  EXPECT_EQ(code16(Codec::fp16, -0.0f), 0x8000);
  EXPECT_EQ(code16(Codec::fp16, 1.0f), 0x3C00);
  EXPECT_EQ(code16(Codec::fp16, -2.0f), 0xC000);
  EXPECT_EQ(code16(Codec::fp16, 1.0f + std::ldexp(1.0f, -11)), 0x3C00);      // tie to even: down
  EXPECT_EQ(code16(Codec::fp16, 1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);  // tie to even: up
  EXPECT_EQ(code16(Codec::fp16, 65504.0f), 0x7BFF);
  EXPECT_EQ(code16(Codec::fp16, 65519.0f), 0x7BFF);
  EXPECT_EQ(code16(Codec::fp16, 65520.0f), 0x7BFF);  // IEEE would give inf here
  EXPECT_EQ(code16(Codec::fp16, 1e10f), 0x7BFF);
  EXPECT_EQ(code16(Codec::fp16, FLT_MAX), 0x7BFF);
  EXPECT_EQ(code16(Codec::fp16, -FLT_MAX), 0xFBFF);
  EXPECT_EQ(code16(Codec::fp16, kInf), 0x7BFF);
  EXPECT_EQ(code16(Codec::fp16, -kInf), 0xFBFF);
  EXPECT_EQ(code16(Codec::fp16, std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(code16(Codec::fp16, std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(code16(Codec::fp16, std::ldexp(1.0f, -25)), 0x0000);  // tie to even: 0
  EXPECT_EQ(code16(Codec::fp16, std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(code16(Codec::fp16, std::ldexp(3.0f, -25)), 0x0002);  // tie to even: up
  EXPECT_EQ(code16(Codec::fp16, -std::ldexp(1.0f, -30)), 0x8000);
  EXPECT_EQ(code16(Codec::fp16, std::ldexp(1023.5f, -24)), 0x0400);  // rounds up into the normals
  EXPECT_EQ(code16(Codec::fp16, from_bits(0x00000001)), 0x0000);     // float32 subnormal
  for (uint32_t nan : {0x7FC00000u, 0x7F800001u, 0xFFFFFFFFu, 0x7FFFFFFFu}) {
    const uint16_t h = code16(Codec::fp16, from_bits(nan));
    EXPECT_EQ(h & 0x7FFF, 0x7E00) << nan;  // quiet NaN
    EXPECT_TRUE(std::isnan(decode16(Codec::fp16, h)));
  }
}

// ---------------------------------------------------------------- bf16

TEST(WireCodec, Bf16RelativeErrorWithinHalfAnUlp) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> exponent(-120.0f, 120.0f);
  std::vector<float> values(100000);
  for (float& x : values) x = std::exp2(exponent(rng)) * (rng() % 2 ? 1.0f : -1.0f);
  const auto out = decoded(encode(Codec::bf16, values.data(), 1000, 100, 0));
  for (size_t i = 0; i < values.size(); ++i) {
    ASSERT_LE(std::fabs(out[i] - values[i]), std::ldexp(std::fabs(values[i]), -8)) << values[i];
  }
}

TEST(WireCodec, Bf16RoundsToNearestEven) {
  std::mt19937 rng(6);
  std::vector<float> values;
  for (int i = 0; i < 200000; ++i) {
    const uint32_t w = rng() & 0xFF7FFFFFu;  // finite
    if ((w & 0x7FFF0000u) == 0x7F7F0000u) continue;  // rounds up to 2^128: Bf16SpecialValues
    values.push_back(from_bits(i % 4 == 0 ? (w & 0xFFFF0000u) | 0x8000u : w));  // a quarter exact ties
  }
  const Encoded e = encode(Codec::bf16, values.data(), 1, values.size(), 0);
  const auto out = decoded(e);
  for (size_t i = 0; i < values.size(); ++i) {
    const uint32_t w = bits(values[i]);
    const uint16_t h = static_cast<uint16_t>(e.data[2 * i] | (e.data[2 * i + 1] << 8));
    ASSERT_EQ(bits(out[i]), static_cast<uint32_t>(h) << 16);
    const double x = values[i], down = from_bits(w & 0xFFFF0000u), up = from_bits((w & 0xFFFF0000u) + 0x10000u);
    const double chosen = out[i];
    ASSERT_TRUE(chosen == down || chosen == up) << values[i];
    ASSERT_LE(std::fabs(chosen - x), std::fabs((chosen == down ? up : down) - x)) << values[i];
    if (std::fabs(down - x) == std::fabs(up - x)) {
      ASSERT_EQ(h & 1, 0) << "tie not to even: " << values[i];
    }
  }
}

TEST(WireCodec, Bf16SpecialValues) {
  EXPECT_EQ(code16(Codec::bf16, 0.0f), 0x0000);
  EXPECT_EQ(code16(Codec::bf16, -0.0f), 0x8000);
  EXPECT_EQ(code16(Codec::bf16, 1.0f), 0x3F80);
  EXPECT_EQ(code16(Codec::bf16, kInf), 0x7F80);
  EXPECT_EQ(code16(Codec::bf16, -kInf), 0xFF80);
  EXPECT_EQ(code16(Codec::bf16, FLT_MAX), 0x7F80);  // nearest is 2^128: IEEE overflow to inf
  EXPECT_EQ(code16(Codec::bf16, from_bits(0x7F7F7FFF)), 0x7F7F);
  EXPECT_EQ(code16(Codec::bf16, from_bits(0x00008000)), 0x0000);  // subnormal tie to even: down
  EXPECT_EQ(code16(Codec::bf16, from_bits(0x00018000)), 0x0002);  // subnormal tie to even: up
  EXPECT_EQ(code16(Codec::bf16, from_bits(0x00000001)), 0x0000);
  // NaNs whose rounding would carry into inf or wrap to -0.
  for (uint32_t nan : {0x7FC00000u, 0x7F800001u, 0x7F80FFFFu, 0x7FFFFFFFu, 0xFFFFFFFFu, 0xFF800001u}) {
    const uint16_t h = code16(Codec::bf16, from_bits(nan));
    EXPECT_TRUE(std::isnan(decode16(Codec::bf16, h))) << std::hex << nan << " -> " << h;
    EXPECT_EQ(h & 0x8000, (nan >> 16) & 0x8000);
  }
}

// ---------------------------------------------------------------- int8, int4

struct IntCase {
  Codec codec;
  float qmax;
};
const IntCase kIntCases[] = {{Codec::int8, 127.0f}, {Codec::int4, 7.0f}};

// Each value is within half a step of its block's scale, the scale is the
// block's finite absmax / qmax, and the absmax itself is hit.
void expect_within_half_a_step(const Encoded& e, const std::vector<float>& values, float qmax) {
  const auto out = decoded(e);
  uint64_t s = 0;
  for (uint64_t r = 0; r < e.rows; ++r) {
    for (uint64_t b = 0; b < e.row_length; b += e.block, ++s) {
      const uint64_t end = std::min<uint64_t>(b + e.block, e.row_length);
      float absmax = 0;
      for (uint64_t i = r * e.row_length + b; i < r * e.row_length + end; ++i) {
        if (std::isfinite(values[i])) absmax = std::max(absmax, std::fabs(values[i]));
      }
      ASSERT_LT(s, e.scales.size());
      ASSERT_EQ(e.scales[s], absmax / qmax) << "block " << s;
      for (uint64_t i = r * e.row_length + b; i < r * e.row_length + end; ++i) {
        const float x = std::isfinite(values[i]) ? values[i] : 0.0f;
        // absmax / (2 qmax), with room for the float rounding of x / scale.
        ASSERT_LE(std::fabs(out[i] - x), absmax / (2 * qmax) * (1 + 1e-5f)) << "value " << i;
        if (std::fabs(x) == absmax) {
          ASSERT_NEAR(out[i], x, absmax * 1e-6f) << "absmax " << i;
        }
      }
    }
  }
  EXPECT_EQ(s, e.scales.size());
}

TEST(WireCodec, IntRoundTripWithinHalfAStep) {
  for (const IntCase& c : kIntCases) {
    const uint64_t shapes[][3] = {{8, 256, 64}, {5, 100, 32}, {3, 37, 16}, {1, 1000, 1000}, {4, 9, 1}, {2, 33, 64}};
    for (auto& s : shapes) {
      SCOPED_TRACE(std::string(codec_name(c.codec)) + " " + std::to_string(s[0]) + "x" + std::to_string(s[1]) +
                   " block " + std::to_string(s[2]));
      auto values = normal_values(s[0] * s[1], static_cast<uint32_t>(s[1]), 3.0f);
      for (size_t i = 0; i < values.size(); i += 3) values[i] = std::max(values[i], 0.0f);  // ReLU zeros
      const Encoded e = encode(c.codec, values.data(), s[0], s[1], static_cast<uint32_t>(s[2]));
      EXPECT_EQ(e.block, s[2]);
      expect_within_half_a_step(e, values, c.qmax);
    }
  }
}

TEST(WireCodec, IntCodesAreNearestIntegersInRange) {
  const auto values = normal_values(3 * 50, 7);
  const Encoded e8 = encode(Codec::int8, values.data(), 3, 50, 16);
  int extremes = 0;
  for (uint64_t i = 0; i < values.size(); ++i) {
    const int q = static_cast<int8_t>(e8.data[i]);
    ASSERT_GE(q, -127);
    ASSERT_LE(q, 127);
    const float scale = e8.scales[(i / 50) * 4 + (i % 50) / 16];
    ASSERT_EQ(q, static_cast<int>(std::nearbyint(values[i] / scale))) << i;
    extremes += std::abs(q) == 127;
  }
  EXPECT_GE(extremes, 12);  // at least the absmax of each block
  const Encoded e4 = encode(Codec::int4, values.data(), 3, 50, 16);
  const auto q4 = nibbles(e4);
  for (uint64_t i = 0; i < values.size(); ++i) {
    ASSERT_GE(q4[i], -7);
    ASSERT_LE(q4[i], 7);
    const float scale = e4.scales[(i / 50) * 4 + (i % 50) / 16];
    ASSERT_EQ(q4[i], static_cast<int>(std::nearbyint(values[i] / scale))) << i;
  }
  // 150 values: 75 bytes, no padding nibble.
  EXPECT_EQ(e4.data.size(), 75u);
}

TEST(WireCodec, Int4PacksLowNibbleFirstAcrossRows) {
  // 3 rows of 3: 9 values, 5 bytes, rows start mid-byte; block 3 -> one
  // scale a row, 1/7 for a row whose absmax is 1.
  const float values[] = {1, -1, 0, 2.0f / 7, 1, -3.0f / 7, -1, 0, 4.0f / 7};
  const Encoded e = encode(Codec::int4, values, 3, 3, 3);
  ASSERT_EQ(e.data.size(), 5u);
  const std::vector<int> expected = {7, -7, 0, 2, 7, -3, -7, 0, 4};
  EXPECT_EQ(nibbles(e), expected);
  EXPECT_EQ(e.data[0], 0x97);  // -7 = 0x9 high, 7 low
  EXPECT_EQ(e.data[4] >> 4, 0);  // padding nibble
  for (float s : e.scales) EXPECT_EQ(s, 1.0f / 7);
}

TEST(WireCodec, IntSpecialValues) {
  const float tiny = from_bits(0x00000001);
  const std::vector<float> values = {
      0.0f, -0.0f, 0.0f, 0.0f,              // all zero: scale 0
      kNaN, 2.0f, -kInf, kInf,              // non-finite: 0, scale from the finite 2
      kNaN, kInf, -kInf, kNaN,              // nothing finite: scale 0
      FLT_MAX, -FLT_MAX, 1.0f, 0.0f,        // largest float
      tiny, -2 * tiny, 3 * tiny, 0.0f,      // float32 subnormals
      1e-39f, -5e-39f, 2e-39f, 1e-40f,      // more subnormals
      1e-37f, 3e-38f, -7e-38f, 1.2e-38f,    // scale below FLT_MIN
  };
  for (const IntCase& c : kIntCases) {
    SCOPED_TRACE(codec_name(c.codec));
    const Encoded e = encode(c.codec, values.data(), 7, 4, 4);
    ASSERT_EQ(validate(e.view()), "");
    const auto out = decoded(e);
    for (float x : out) EXPECT_TRUE(std::isfinite(x));
    EXPECT_EQ(e.scales[0], 0.0f);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(out[i], 0.0f);
    EXPECT_EQ(e.scales[1], 2.0f / c.qmax);
    EXPECT_EQ(out[4], 0.0f);
    EXPECT_EQ(out[5], 2.0f);
    EXPECT_EQ(out[6], 0.0f);
    EXPECT_EQ(out[7], 0.0f);
    EXPECT_EQ(e.scales[2], 0.0f);
    for (int i = 8; i < 12; ++i) EXPECT_EQ(out[i], 0.0f);
    EXPECT_NEAR(out[12], FLT_MAX, FLT_MAX * 1e-6);
    EXPECT_NEAR(out[13], -FLT_MAX, FLT_MAX * 1e-6);
    // Tiny blocks: the scale covers absmax in qmax steps (rounded up to a
    // whole number of subnormals when below FLT_MIN), and every value is
    // within half a step.
    for (int b = 4; b < 7; ++b) {
      float absmax = 0;
      for (int i = 4 * b; i < 4 * b + 4; ++i) absmax = std::max(absmax, std::fabs(values[i]));
      EXPECT_GT(e.scales[b], 0.0f);
      EXPECT_GE(static_cast<double>(e.scales[b]) * c.qmax, absmax * (1 - 1e-6));
      if (e.scales[b] < FLT_MIN) {
        EXPECT_GE(static_cast<double>(e.scales[b]) * c.qmax, absmax);
      }
      for (int i = 4 * b; i < 4 * b + 4; ++i) {
        EXPECT_LE(std::fabs(static_cast<double>(out[i]) - values[i]), e.scales[b] / 2.0) << i;
      }
    }
    EXPECT_EQ(out[16], tiny);  // exactly representable with scale = tiny
    EXPECT_EQ(out[17], -2 * tiny);
  }
}

// ---------------------------------------------------------------- rows

// Encoding rows [0, k) and [k, rows) apart gives the same scales and codes as
// encoding them together: what the runtime relies on to split a micro-batch.
TEST(WireCodec, BlocksNeverSpanRows) {
  const uint64_t rows = 6;
  for (Codec c : kAllCodecs) {
    for (uint64_t row_length : {1, 7, 37, 64, 100}) {
      for (uint32_t block : {1u, 5u, 16u, 64u}) {
        SCOPED_TRACE(std::string(codec_name(c)) + " row length " + std::to_string(row_length) + " block " +
                     std::to_string(block));
        auto values = normal_values(rows * row_length, static_cast<uint32_t>(row_length + block));
        values[row_length - 1] = 1000.0f;  // an outlier in row 0 must not touch row 1
        const Encoded whole = encode(c, values.data(), rows, row_length, block);
        for (uint64_t k = 0; k <= rows; ++k) {
          const Encoded head = encode(c, values.data(), k, row_length, block);
          const Encoded tail = encode(c, values.data() + k * row_length, rows - k, row_length, block);
          std::vector<float> scales = head.scales;
          scales.insert(scales.end(), tail.scales.begin(), tail.scales.end());
          ASSERT_EQ(scales, whole.scales) << "split at row " << k;
          if (c == Codec::int4) {
            std::vector<int> q = nibbles(head), q_tail = nibbles(tail);
            q.insert(q.end(), q_tail.begin(), q_tail.end());
            ASSERT_EQ(q, nibbles(whole)) << "split at row " << k;
          } else {
            std::vector<uint8_t> data = head.data;
            data.insert(data.end(), tail.data.begin(), tail.data.end());
            ASSERT_EQ(data, whole.data) << "split at row " << k;
          }
          std::vector<float> out = decoded(head), out_tail = decoded(tail);
          out.insert(out.end(), out_tail.begin(), out_tail.end());
          ASSERT_TRUE(same_bits(out, decoded(whole))) << "split at row " << k;
        }
      }
    }
  }
}

TEST(WireCodec, EncodingIsDeterministic) {
  const auto values = normal_values(4099, 8);
  std::vector<float> shifted(values.size() + 3);  // the same values at another alignment
  std::copy(values.begin(), values.end(), shifted.begin() + 3);
  for (Codec c : kAllCodecs) {
    const Encoded a = encode(c, values.data(), 1, 4099, 64);
    const Encoded b = encode(c, values.data(), 1, 4099, 64);
    const Encoded d = encode(c, shifted.data() + 3, 1, 4099, 64);
    EXPECT_EQ(a.data, b.data) << codec_name(c);
    EXPECT_EQ(a.scales, b.scales) << codec_name(c);
    EXPECT_EQ(a.data, d.data) << codec_name(c);
    EXPECT_EQ(a.scales, d.scales) << codec_name(c);
  }
}

// ---------------------------------------------------------------- hostile views

class HostileView : public ::testing::Test {
 protected:
  // A valid int4 blob of 2 rows of 4 values, blocks of 2: 4 bytes, 4 scales.
  void SetUp() override {
    const float values[] = {1, 2, 3, 4, -1, -2, -3, -4};
    blob = encode(Codec::int4, values, 2, 4, 2);
    view = blob.view();
    ASSERT_EQ(validate(view), "");
  }
  Encoded blob;
  EncodedView view;
};

TEST_F(HostileView, UnknownCodec) {
  view.codec = static_cast<Codec>(7);
  EXPECT_EQ(validate(view), "unknown codec 7");
  view.codec = static_cast<Codec>(255);
  EXPECT_EQ(validate(view), "unknown codec 255");
}

TEST_F(HostileView, BlockSize) {
  view.block = 0;
  EXPECT_EQ(validate(view), "block size 0");
  view.block = kMaxBlock + 1;
  EXPECT_EQ(validate(view), "block size 1048577 exceeds 1048576");
  view.codec = Codec::fp16;  // block is ignored without scales
  view.data_size = 16;
  view.scales = nullptr;
  view.scales_size = 0;
  std::vector<uint8_t> data(16);
  view.data = data.data();
  EXPECT_EQ(validate(view), "");
}

TEST_F(HostileView, Overflows) {
  view.rows = 1ull << 32;
  view.row_length = 1ull << 32;
  EXPECT_EQ(validate(view), "rows x row length overflows (4294967296 x 4294967296)");
  view.codec = Codec::fp32;
  view.rows = 1ull << 62;
  view.row_length = 1;
  EXPECT_EQ(validate(view), "data size of 4611686018427387904 fp32 values overflows");
  view.codec = Codec::int8;
  view.rows = 1ull << 62;  // 2^62 scales of 4 bytes
  view.row_length = 1;
  view.block = 1;
  view.data_size = 1ull << 62;
  EXPECT_EQ(validate(view), "scale size of 4611686018427387904 scales overflows");
}

TEST_F(HostileView, DataSize) {
  view.data_size = 3;
  EXPECT_EQ(validate(view), "3 data bytes for 8 int4 values (4 expected)");
  view.data_size = 5;
  EXPECT_EQ(validate(view), "5 data bytes for 8 int4 values (4 expected)");
  view.data_size = 4;
  view.data = nullptr;
  EXPECT_EQ(validate(view), "data is null but holds 4 bytes");
}

TEST_F(HostileView, ScalesSize) {
  view.scales_size = 15;
  EXPECT_EQ(validate(view), "15 scale bytes for 4 int4 scales (16 expected)");
  view.scales_size = 16;
  view.scales = nullptr;
  EXPECT_EQ(validate(view), "scales is null but holds 16 bytes");
  // Scales on a codec without them.
  const float one = 1.0f;
  Encoded f = encode(Codec::bf16, &one, 1, 1, 0);
  EncodedView v = f.view();
  v.scales = view.data;
  v.scales_size = 4;
  EXPECT_EQ(validate(v), "4 scale bytes for 0 bf16 scales (0 expected)");
}

TEST_F(HostileView, ScaleValues) {
  std::vector<uint8_t> scales(24);
  std::vector<uint8_t> data(6);
  view.rows = 2;
  view.row_length = 6;  // 3 blocks a row: 6 scales
  view.data = data.data();
  view.data_size = 6;
  view.scales = scales.data();
  view.scales_size = 24;
  EXPECT_EQ(validate(view), "");
  auto set = [&](int s, float f) { std::memcpy(scales.data() + 4 * s, &f, 4); };
  set(5, kNaN);
  EXPECT_EQ(validate(view), "scale 5 is not finite");
  set(5, -kInf);
  EXPECT_EQ(validate(view), "scale 5 is not finite");
  set(5, -1e-30f);
  EXPECT_EQ(validate(view), "scale 5 is negative");
  set(5, -0.0f);
  EXPECT_EQ(validate(view), "");
  set(2, kInf);
  EXPECT_EQ(validate(view), "scale 2 is not finite");
}

TEST_F(HostileView, TruncatedBlobsAreRefused) {
  for (Codec c : kAllCodecs) {
    const auto values = normal_values(3 * 21, 9);
    const Encoded e = encode(c, values.data(), 3, 21, 8);
    for (uint64_t cut = 1; cut <= e.data.size(); ++cut) {
      EncodedView v = e.view();
      v.data_size -= cut;
      EXPECT_NE(validate(v), "") << codec_name(c) << " cut " << cut;
    }
    for (uint64_t cut = 1; cut <= 4 * e.scales.size(); ++cut) {
      EncodedView v = e.view();
      v.scales_size -= cut;
      EXPECT_NE(validate(v), "") << codec_name(c) << " cut " << cut;
    }
  }
}

TEST_F(HostileView, UnalignedScalesDecode) {
  std::vector<uint8_t> buffer(1 + view.scales_size);
  std::memcpy(buffer.data() + 1, view.scales, view.scales_size);
  EncodedView v = view;
  v.scales = buffer.data() + 1;
  ASSERT_EQ(validate(v), "");
  std::vector<float> a(8), b(8);
  decode(view, a.data());
  decode(v, b.data());
  EXPECT_TRUE(same_bits(a, b));
}

TEST_F(HostileView, CodesTheEncoderNeverWritesDecode) {
  // int4 nibble 0x8 is -8; int8 byte 0x80 is -128.
  const uint8_t data4[] = {0x88};
  const float scale = 0.5f;
  EncodedView v;
  v.codec = Codec::int4;
  v.block = 2;
  v.rows = 1;
  v.row_length = 2;
  v.data = data4;
  v.data_size = 1;
  v.scales = reinterpret_cast<const uint8_t*>(&scale);
  v.scales_size = 4;
  ASSERT_EQ(validate(v), "");
  float out[2];
  decode(v, out);
  EXPECT_EQ(out[0], -4.0f);
  EXPECT_EQ(out[1], -4.0f);
  const uint8_t data8[] = {0x80};
  v.codec = Codec::int8;
  v.row_length = 1;
  v.block = 1;
  v.data = data8;
  ASSERT_EQ(validate(v), "");
  decode(v, out);
  EXPECT_EQ(out[0], -64.0f);
}

// Random views, sizes consistent or not: validate never crashes, and a view
// it accepts decodes without reading out of bounds (run under ASan to see).
TEST(WireCodec, RandomGarbageViewsNeverCrash) {
  std::mt19937_64 rng(10);
  auto pick = [&](std::initializer_list<uint64_t> choices) { return *(choices.begin() + rng() % choices.size()); };
  int accepted = 0, decoded_values = 0;
  for (int iteration = 0; iteration < 5000; ++iteration) {
    EncodedView v;
    v.codec = static_cast<Codec>(rng() % 8);
    v.block = static_cast<uint32_t>(pick({0, 1, 2, 3, 7, 64, kMaxBlock, kMaxBlock + 1, rng() & 0xFFFFFFFF}));
    v.rows = pick({0, 1, 2, 3, 5, 17, 1ull << 33, kMax64, rng()});
    v.row_length = pick({0, 1, 2, 3, 7, 64, 100, 1ull << 33, kMax64, rng()});
    const bool consistent = rng() % 2;
    uint64_t data_size = rng() % 700, scales_size = 4 * (rng() % 50) + (rng() % 4 == 0 ? rng() % 4 : 0);
    if (consistent && static_cast<uint8_t>(v.codec) <= 4) {
      const uint64_t d = data_bytes(v.codec, v.rows, v.row_length);
      const uint64_t s = scale_count(v.codec, v.rows, v.row_length, v.block);
      if (d <= 1 << 16) data_size = d;
      if (s <= 1 << 14) scales_size = 4 * s;
    }
    std::vector<uint8_t> data(data_size), scales(scales_size);
    for (auto& b : data) b = static_cast<uint8_t>(rng());
    for (size_t i = 0; i + 4 <= scales.size(); i += 4) {
      // Mostly plausible scales, sometimes any 32 bits.
      const float f = rng() % 8 ? static_cast<float>(rng() % 1000) / 64 : from_bits(static_cast<uint32_t>(rng()));
      std::memcpy(scales.data() + i, &f, 4);
    }
    v.data = rng() % 10 ? data.data() : nullptr;
    v.data_size = data_size;
    v.scales = rng() % 10 ? scales.data() : nullptr;
    v.scales_size = scales_size;
    if (v.data == nullptr && rng() % 2) v.data_size = 0;
    const std::string error = validate(v);
    if (!error.empty()) continue;
    ++accepted;
    const uint64_t n = v.rows * v.row_length;
    ASSERT_LE(n, 2 * v.data_size) << "accepted more values than the data holds";
    std::vector<float> out(n);
    decode(v, out.data());
    decoded_values += static_cast<int>(n);
  }
  EXPECT_GT(accepted, 500);
  EXPECT_GT(decoded_values, 10000);
}

// ---------------------------------------------------------------- error feedback

// Sending the same values K times: with error feedback the decoded sum stays
// within one rounding step (the last one) of K x values; without, the
// rounding error adds up K times.
TEST(ErrorFeedback, DecodedSumConvergesToTheInputSum) {
  for (const IntCase& c : kIntCases) {
    SCOPED_TRACE(codec_name(c.codec));
    const uint64_t rows = 4, row_length = 96;
    const uint32_t block = 32;
    const int sends = 200;
    const auto values = normal_values(rows * row_length, 11);
    ErrorFeedback ef;
    std::vector<double> sum_ef(values.size()), sum_plain(values.size());
    const auto plain = decoded(encode(c.codec, values.data(), rows, row_length, block));
    Encoded last;
    for (int k = 0; k < sends; ++k) {
      last = ef.encode(7, c.codec, values.data(), rows, row_length, block);
      const auto out = decoded(last);
      for (size_t i = 0; i < values.size(); ++i) {
        sum_ef[i] += out[i];
        sum_plain[i] += plain[i];
      }
    }
    double worst_ef = 0, worst_plain = 0;
    for (size_t i = 0; i < values.size(); ++i) {
      const double target = static_cast<double>(values[i]) * sends;
      const double step = last.scales[(i / row_length) * 3 + (i % row_length) / block];
      const double error = std::fabs(sum_ef[i] - target);
      ASSERT_LE(error, step / 2 + 1e-4) << "value " << i;  // one rounding step, plus float drift
      worst_ef = std::max(worst_ef, error);
      worst_plain = std::max(worst_plain, std::fabs(sum_plain[i] - target));
    }
    EXPECT_GT(worst_plain, 20 * worst_ef);
    // The residual is what has not been sent yet.
    const auto& residual = ef.residuals().at(7);
    for (size_t i = 0; i < values.size(); ++i) {
      EXPECT_NEAR(residual[i], static_cast<double>(values[i]) * sends - sum_ef[i], 1e-4);
    }
  }
}

TEST(ErrorFeedback, ChangingValuesStillConverge) {
  std::mt19937 rng(12);
  std::normal_distribution<float> normal(0.0f, 1e-3f);  // gradient-sized
  const uint64_t n = 200;
  ErrorFeedback ef;
  std::vector<double> sent(n), sum(n);
  Encoded last;
  std::vector<float> values(n);
  for (int k = 0; k < 300; ++k) {
    for (float& x : values) x = normal(rng);
    last = ef.encode(1, Codec::int4, values.data(), 1, n, 64);
    const auto out = decoded(last);
    for (uint64_t i = 0; i < n; ++i) {
      sent[i] += out[i];
      sum[i] += values[i];
    }
  }
  for (uint64_t i = 0; i < n; ++i) {
    ASSERT_LE(std::fabs(sent[i] - sum[i]), last.scales[i / 64] / 2 + 1e-7) << i;
  }
}

TEST(ErrorFeedback, RestoredResidualsGiveIdenticalEncodings) {
  const auto a = normal_values(300, 13), b = normal_values(300, 14);
  ErrorFeedback ef;
  for (int k = 0; k < 5; ++k) {
    ef.encode(1, Codec::int8, a.data(), 3, 100, 64);
    ef.encode(2, Codec::fp16, b.data(), 3, 100, 0);
  }
  const ErrorFeedback::Residuals saved = ef.residuals();
  ASSERT_EQ(saved.size(), 2u);
  const Encoded first1 = ef.encode(1, Codec::int8, b.data(), 3, 100, 64);
  const Encoded first2 = ef.encode(2, Codec::fp16, a.data(), 3, 100, 0);
  ef.encode(1, Codec::int8, a.data(), 3, 100, 64);  // moves on
  ef.restore(saved);
  const Encoded again1 = ef.encode(1, Codec::int8, b.data(), 3, 100, 64);
  const Encoded again2 = ef.encode(2, Codec::fp16, a.data(), 3, 100, 0);
  EXPECT_EQ(first1.data, again1.data);
  EXPECT_EQ(first1.scales, again1.scales);
  EXPECT_EQ(first2.data, again2.data);
  // And the residual is not nothing: a fresh sender encodes otherwise.
  ErrorFeedback fresh;
  EXPECT_NE(fresh.encode(1, Codec::int8, b.data(), 3, 100, 64).data, first1.data);
}

TEST(ErrorFeedback, NewSlotsAndNewSizesStartFromZero) {
  const auto values = normal_values(128, 15);
  ErrorFeedback ef;
  const Encoded plain = encode(Codec::int4, values.data(), 2, 64, 16);
  const Encoded first = ef.encode(3, Codec::int4, values.data(), 2, 64, 16);
  EXPECT_EQ(first.data, plain.data);
  EXPECT_EQ(first.scales, plain.scales);
  EXPECT_NE(ef.encode(3, Codec::int4, values.data(), 2, 64, 16).data, plain.data);  // a residual is in
  // Another slot is independent.
  EXPECT_EQ(ef.encode(4, Codec::int4, values.data(), 2, 64, 16).data, plain.data);
  // Another size resets the slot.
  const Encoded half = encode(Codec::int4, values.data(), 1, 64, 16);
  const Encoded resized = ef.encode(3, Codec::int4, values.data(), 1, 64, 16);
  EXPECT_EQ(resized.data, half.data);
  EXPECT_EQ(resized.scales, half.scales);
  EXPECT_EQ(ef.residuals().at(3).size(), 64u);
  ef.clear();
  EXPECT_TRUE(ef.residuals().empty());
  EXPECT_EQ(ef.encode(4, Codec::int4, values.data(), 2, 64, 16).data, plain.data);
}

TEST(ErrorFeedback, LosslessCodecsLeaveNoResidual) {
  const auto values = normal_values(64, 16);
  ErrorFeedback ef;
  ef.encode(5, Codec::int8, values.data(), 1, 64, 64);
  ASSERT_EQ(ef.residuals().count(5), 1u);
  const Encoded exact = ef.encode(5, Codec::fp32, values.data(), 1, 64, 64);
  EXPECT_EQ(ef.residuals().count(5), 0u);
  EXPECT_TRUE(same_bits(decoded(exact), values));
  ef.encode(6, Codec::fp32, values.data(), 1, 64, 64);
  EXPECT_EQ(ef.residuals().count(6), 0u);
}

TEST(ErrorFeedback, NonFiniteInputsDoNotPoisonTheSlot) {
  std::vector<float> values = {1.0f, kNaN, kInf, 0.3f, 1e9f, -0.7f};
  ErrorFeedback ef;
  ef.encode(1, Codec::int8, values.data(), 1, 6, 64);
  ef.encode(2, Codec::fp16, values.data(), 1, 6, 0);  // 1e9 saturates to 65504
  for (uint64_t slot : {1, 2}) {
    for (float r : ef.residuals().at(slot)) EXPECT_TRUE(std::isfinite(r)) << slot;
  }
  const std::vector<float> clean = {1.0f, 0.5f, 0.25f, 0.3f, 0.1f, -0.7f};
  const auto out = decoded(ef.encode(1, Codec::int8, clean.data(), 1, 6, 64));
  for (float x : out) EXPECT_TRUE(std::isfinite(x));
}

}  // namespace
}  // namespace asteroid::wire_codec
