#include "messages/wire_codec.h"

#include <algorithm>
#include <cassert>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>

#include "messages/enum_names.h"

// The encoded bytes are little-endian, and fp32 data, the scales and the
// 2-byte codes are copied to and from memory as they are.
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "wire_codec assumes a little-endian host"
#endif

namespace asteroid::wire_codec {
namespace {

constexpr uint64_t kSaturated = std::numeric_limits<uint64_t>::max();
// Values handled per stack buffer when int4 codes are (un)packed.
constexpr uint64_t kChunk = 1024;

uint32_t bits_of(float f) {
  uint32_t w;
  std::memcpy(&w, &f, sizeof w);
  return w;
}

float float_of(uint32_t w) {
  float f;
  std::memcpy(&f, &w, sizeof f);
  return f;
}

// a * b, or nullopt when it does not fit in 64 bits.
std::optional<uint64_t> checked_mul(uint64_t a, uint64_t b) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return std::nullopt;
  return a * b;
}

bool is_known(Codec codec) { return static_cast<uint8_t>(codec) <= static_cast<uint8_t>(Codec::int4); }

// Data bytes of `values` values, or nullopt on overflow.
std::optional<uint64_t> data_bytes_of(Codec codec, uint64_t values) {
  switch (codec) {
    case Codec::fp32: return checked_mul(values, 4);
    case Codec::fp16:
    case Codec::bf16: return checked_mul(values, 2);
    case Codec::int8: return values;
    case Codec::int4: return values / 2 + values % 2;
  }
  return std::nullopt;
}

uint64_t blocks_per_row(uint64_t row_length, uint32_t block) {
  return row_length / block + (row_length % block != 0 ? 1 : 0);
}

// ---------------------------------------------------------------- fp16, bf16

// Every conversion below computes all its cases and selects one with a bit
// mask, so that the loops over them vectorise (GCC keeps a branch for a
// plain `?:` whose arms hold float arithmetic). Comparisons are on int32
// (the magnitude bits fit) because SSE2 has no unsigned compare.
inline uint32_t select(bool condition, uint32_t if_true, uint32_t if_false) {
  const uint32_t mask = 0u - static_cast<uint32_t>(condition);
  return (if_true & mask) | (if_false & ~mask);
}

// IEEE binary16, round to nearest even; beyond +-65504 (inf included)
// saturates to +-65504; NaN becomes a quiet NaN of the same sign.
inline uint16_t fp16_of(float f) {
  const uint32_t w = bits_of(f);
  const uint32_t sign = (w >> 16) & 0x8000u;
  const int32_t a = static_cast<int32_t>(w & 0x7FFFFFFFu);
  // Normal half: rebias the exponent (127 -> 15), round away 13 bits.
  const uint32_t rebiased = static_cast<uint32_t>(a) - 0x38000000u;
  const uint32_t normal = (rebiased + 0xFFFu + ((rebiased >> 13) & 1u)) >> 13;
  // Subnormal half (|f| < 2^-14): in 0.5 + |f| the unit in the last place is
  // 2^-24, the half subnormal step, so the float addition does the rounding;
  // a result of 0x400 is the smallest normal half, as it should be.
  const uint32_t subnormal = bits_of(float_of(static_cast<uint32_t>(a)) + 0.5f) - 0x3F000000u;
  uint32_t h = select(a < 0x38800000, subnormal, normal);
  h = select(a >= 0x477FE000, 0x7BFFu, h);  // 65504 and beyond (inf too)
  h = select(a > 0x7F800000, 0x7E00u, h);   // NaN
  return static_cast<uint16_t>(sign | h);
}

inline float float_of_fp16(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const int32_t em = h & 0x7FFF;
  const uint32_t shifted = static_cast<uint32_t>(em) << 13;
  const uint32_t normal = shifted + 0x38000000u;
  const uint32_t inf_nan = shifted | 0x7F800000u;
  // em * 2^-24, exactly: 0.5 + em * 2^-24 is representable, so is the difference.
  const uint32_t subnormal = bits_of(float_of(0x3F000000u + static_cast<uint32_t>(em)) - 0.5f);
  const uint32_t r = select(em < 0x0400, subnormal, select(em >= 0x7C00, inf_nan, normal));
  return float_of(sign | r);
}

// The top half of a float32, round to nearest even; NaN becomes a quiet NaN
// (rounding alone could carry a NaN's payload into inf).
inline uint16_t bf16_of(float f) {
  const uint32_t w = bits_of(f);
  const int32_t a = static_cast<int32_t>(w & 0x7FFFFFFFu);
  const uint32_t rounded = (w + 0x7FFFu + ((w >> 16) & 1u)) >> 16;
  const uint32_t nan = (w >> 16) | 0x0040u;
  return static_cast<uint16_t>(select(a > 0x7F800000, nan, rounded));
}

inline float float_of_bf16(uint16_t h) { return float_of(static_cast<uint32_t>(h) << 16); }

void encode_fp16(const float* in, uint64_t n, uint8_t* out) {
  for (uint64_t i = 0; i < n; ++i) {
    const uint16_t h = fp16_of(in[i]);
    std::memcpy(out + 2 * i, &h, 2);
  }
}

void decode_fp16(const uint8_t* in, uint64_t n, float* out) {
  for (uint64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, in + 2 * i, 2);
    out[i] = float_of_fp16(h);
  }
}

void encode_bf16(const float* in, uint64_t n, uint8_t* out) {
  for (uint64_t i = 0; i < n; ++i) {
    const uint16_t h = bf16_of(in[i]);
    std::memcpy(out + 2 * i, &h, 2);
  }
}

void decode_bf16(const uint8_t* in, uint64_t n, float* out) {
  for (uint64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, in + 2 * i, 2);
    out[i] = float_of_bf16(h);
  }
}

// ---------------------------------------------------------------- int8, int4

// The largest |x| over the finite values. On non-negative floats the order
// of the bit patterns is the order of the values, so this is an integer max
// (which vectorises; a float max would not without -ffast-math).
float finite_absmax(const float* x, uint64_t n) {
  int32_t m = 0;
  for (uint64_t i = 0; i < n; ++i) {
    const int32_t a = static_cast<int32_t>(bits_of(x[i]) & 0x7FFFFFFFu);
    const int32_t finite = a < 0x7F800000 ? a : 0;
    m = finite > m ? finite : m;
  }
  return float_of(static_cast<uint32_t>(m));
}

// The scale of a block whose finite absmax is `absmax`: absmax / qmax,
// except at the two ends of the float range. Below FLT_MIN, absmax / qmax
// would lose the bits that keep absmax within qmax steps: there it is
// rounded up to a whole number of the smallest subnormal (exact, since
// absmax is one too). Near FLT_MAX, qmax * scale could round up to inf:
// there it is taken down an ulp or two.
float scale_of(float absmax, float qmax) {
  float scale = absmax / qmax;
  while (scale * qmax > FLT_MAX) scale = std::nextafter(scale, 0.0f);
  if (scale >= FLT_MIN || absmax == 0.0f) return scale;
  const double units = std::ceil(std::ldexp(static_cast<double>(absmax), 149) / qmax);
  return static_cast<float>(std::ldexp(units, -149));
}

// q[i] = nearest integer (ties to even) to x[i] / scale, clamped to
// [-qmax, qmax]; 0 for a non-finite x or a zero scale.
void quantize(const float* x, uint64_t n, float scale, float qmax, int8_t* q) {
  if (scale == 0.0f) {
    std::memset(q, 0, n);
    return;
  }
  // Adding and taking away 1.5 * 2^23 rounds any |t| < 2^22 to the nearest
  // integer, ties to even: what nearbyint does, but it vectorises on SSE2
  // (it needs IEEE arithmetic: no -ffast-math, which would fold it away).
  // A division rather than a multiplication by 1 / scale: q is exactly the
  // nearest integer to x / scale, and 1 / scale overflows for tiny scales.
  constexpr float kRound = 12582912.0f;
  for (uint64_t i = 0; i < n; ++i) {
    const float v = std::fabs(x[i]) <= FLT_MAX ? x[i] : 0.0f;
    float t = v / scale;
    t = t < -qmax ? -qmax : t;
    t = t > qmax ? qmax : t;
    t = (t + kRound) - kRound;
    q[i] = static_cast<int8_t>(static_cast<int32_t>(t));
  }
}

void dequantize(const int8_t* q, uint64_t n, float scale, float* out) {
  for (uint64_t i = 0; i < n; ++i) out[i] = static_cast<float>(q[i]) * scale;
}

// Writes the nibbles of q[0..n) at nibble index `at` of `data` (low nibble
// first). The nibble before `at`, if it shares a byte, is already written.
void pack_nibbles(const int8_t* q, uint64_t n, uint64_t at, uint8_t* data) {
  uint64_t i = 0;
  if (n > 0 && (at & 1)) {
    uint8_t& byte = data[at >> 1];
    byte = static_cast<uint8_t>((byte & 0x0Fu) | ((static_cast<uint8_t>(q[0]) & 0x0Fu) << 4));
    i = 1;
  }
  uint8_t* out = data + ((at + i) >> 1);
  const uint64_t pairs = (n - i) / 2;
  const int8_t* p = q + i;
  for (uint64_t k = 0; k < pairs; ++k) {
    out[k] = static_cast<uint8_t>((static_cast<uint8_t>(p[2 * k]) & 0x0Fu) |
                                  ((static_cast<uint8_t>(p[2 * k + 1]) & 0x0Fu) << 4));
  }
  if ((n - i) & 1) out[pairs] = static_cast<uint8_t>(q[n - 1]) & 0x0Fu;
}

inline int8_t low_nibble(uint8_t b) { return static_cast<int8_t>(static_cast<uint8_t>(b << 4)) >> 4; }
inline int8_t high_nibble(uint8_t b) { return static_cast<int8_t>(b) >> 4; }

// q[0..n) = the sign-extended nibbles of `data` from nibble index `at`.
void unpack_nibbles(const uint8_t* data, uint64_t at, uint64_t n, int8_t* q) {
  uint64_t i = 0;
  if (n > 0 && (at & 1)) {
    q[0] = high_nibble(data[at >> 1]);
    i = 1;
  }
  const uint8_t* in = data + ((at + i) >> 1);
  const uint64_t pairs = (n - i) / 2;
  int8_t* p = q + i;
  for (uint64_t k = 0; k < pairs; ++k) {
    p[2 * k] = low_nibble(in[k]);
    p[2 * k + 1] = high_nibble(in[k]);
  }
  if ((n - i) & 1) q[n - 1] = low_nibble(in[pairs]);
}

// Calls block_fn(first value index, length, scale index) for every block of
// every row, in order.
template <typename BlockFn>
void for_each_block(uint64_t rows, uint64_t row_length, uint32_t block, BlockFn&& block_fn) {
  uint64_t scale_index = 0;
  for (uint64_t r = 0; r < rows; ++r) {
    const uint64_t row_start = r * row_length;
    for (uint64_t b = 0; b < row_length; b += block) {
      const uint64_t length = row_length - b < block ? row_length - b : block;
      block_fn(row_start + b, length, scale_index++);
    }
  }
}

void encode_int(Codec codec, const float* values, uint64_t rows, uint64_t row_length, uint32_t block,
                Encoded& e) {
  const float qmax = codec == Codec::int8 ? 127.0f : 7.0f;
  e.scales.resize(scale_count(codec, rows, row_length, block));
  float* scales = e.scales.data();
  if (codec == Codec::int8) {
    int8_t* q = reinterpret_cast<int8_t*>(e.data.data());
    for_each_block(rows, row_length, block, [&](uint64_t start, uint64_t length, uint64_t s) {
      scales[s] = scale_of(finite_absmax(values + start, length), qmax);
      quantize(values + start, length, scales[s], qmax, q + start);
    });
    return;
  }
  int8_t q[kChunk];
  for_each_block(rows, row_length, block, [&](uint64_t start, uint64_t length, uint64_t s) {
    scales[s] = scale_of(finite_absmax(values + start, length), qmax);
    for (uint64_t done = 0; done < length; done += kChunk) {
      const uint64_t n = length - done < kChunk ? length - done : kChunk;
      quantize(values + start + done, n, scales[s], qmax, q);
      pack_nibbles(q, n, start + done, e.data.data());
    }
  });
}

void decode_int(const EncodedView& blob, float* out) {
  auto scale = [&](uint64_t s) {
    float f;
    std::memcpy(&f, blob.scales + 4 * s, sizeof f);
    return f;
  };
  if (blob.codec == Codec::int8) {
    const int8_t* q = reinterpret_cast<const int8_t*>(blob.data);
    for_each_block(blob.rows, blob.row_length, blob.block, [&](uint64_t start, uint64_t length, uint64_t s) {
      dequantize(q + start, length, scale(s), out + start);
    });
    return;
  }
  int8_t q[kChunk];
  for_each_block(blob.rows, blob.row_length, blob.block, [&](uint64_t start, uint64_t length, uint64_t s) {
    const float f = scale(s);
    for (uint64_t done = 0; done < length; done += kChunk) {
      const uint64_t n = length - done < kChunk ? length - done : kChunk;
      unpack_nibbles(blob.data, start + done, n, q);
      dequantize(q, n, f, out + start + done);
    }
  });
}

}  // namespace

namespace {
constexpr Named<Codec> kCodecNames[] = {
    {Codec::fp32, "fp32"}, {Codec::fp16, "fp16"}, {Codec::bf16, "bf16"}, {Codec::int8, "int8"}, {Codec::int4, "int4"}};
}  // namespace

const char* codec_name(Codec codec) { return name_of(kCodecNames, codec); }

std::optional<Codec> parse_codec(std::string_view name) { return find_named(kCodecNames, name); }

bool is_lossless(Codec codec) { return codec == Codec::fp32; }

bool has_scales(Codec codec) { return codec == Codec::int8 || codec == Codec::int4; }

uint64_t data_bytes(Codec codec, uint64_t rows, uint64_t row_length) {
  const auto values = checked_mul(rows, row_length);
  if (!values) return kSaturated;
  return data_bytes_of(codec, *values).value_or(kSaturated);
}

uint64_t scale_count(Codec codec, uint64_t rows, uint64_t row_length, uint32_t block) {
  if (!has_scales(codec)) return 0;
  if (block == 0) return kSaturated;
  return checked_mul(rows, blocks_per_row(row_length, block)).value_or(kSaturated);
}

uint64_t encoded_bytes(Codec codec, uint64_t rows, uint64_t row_length, uint32_t block) {
  const uint64_t data = data_bytes(codec, rows, row_length);
  const auto scales = checked_mul(scale_count(codec, rows, row_length, block), 4);
  if (data == kSaturated || !scales || *scales > kSaturated - data) return kSaturated;
  return data + *scales;
}

EncodedView Encoded::view() const {
  EncodedView v;
  v.codec = codec;
  v.block = block;
  v.rows = rows;
  v.row_length = row_length;
  v.data = data.data();
  v.data_size = data.size();
  v.scales = reinterpret_cast<const uint8_t*>(scales.data());
  v.scales_size = scales.size() * sizeof(float);
  return v;
}

Encoded encode(Codec codec, const float* values, uint64_t rows, uint64_t row_length, uint32_t block) {
  // A block outside [1, kMaxBlock] is a caller bug; should one get past the
  // assert, the blob still describes itself (and validates) with the
  // nearest legal block rather than dividing by zero.
  assert(!has_scales(codec) || (block >= 1 && block <= kMaxBlock));
  Encoded e;
  e.codec = codec;
  e.block = has_scales(codec) ? std::min(std::max(block, 1u), kMaxBlock) : 0;
  block = e.block;
  e.rows = rows;
  e.row_length = row_length;
  const uint64_t n = rows * row_length;
  e.data.resize(data_bytes(codec, rows, row_length));
  if (n == 0) {
    if (has_scales(codec)) e.scales.resize(scale_count(codec, rows, row_length, block));
    return e;
  }
  switch (codec) {
    case Codec::fp32: std::memcpy(e.data.data(), values, n * sizeof(float)); break;
    case Codec::fp16: encode_fp16(values, n, e.data.data()); break;
    case Codec::bf16: encode_bf16(values, n, e.data.data()); break;
    case Codec::int8:
    case Codec::int4: encode_int(codec, values, rows, row_length, block, e); break;
  }
  return e;
}

std::string validate(const EncodedView& blob) {
  using std::to_string;
  if (!is_known(blob.codec)) return "unknown codec " + to_string(static_cast<unsigned>(blob.codec));
  const std::string name = codec_name(blob.codec);
  const bool scaled = has_scales(blob.codec);
  if (scaled && blob.block == 0) return "block size 0";
  if (scaled && blob.block > kMaxBlock) {
    return "block size " + to_string(blob.block) + " exceeds " + to_string(kMaxBlock);
  }
  const auto values = checked_mul(blob.rows, blob.row_length);
  if (!values) return "rows x row length overflows (" + to_string(blob.rows) + " x " + to_string(blob.row_length) + ")";
  const auto data = data_bytes_of(blob.codec, *values);
  if (!data) return "data size of " + to_string(*values) + " " + name + " values overflows";
  if (blob.data_size != *data) {
    return to_string(blob.data_size) + " data bytes for " + to_string(*values) + " " + name + " values (" +
           to_string(*data) + " expected)";
  }
  if (blob.data_size > 0 && blob.data == nullptr) return "data is null but holds " + to_string(blob.data_size) + " bytes";
  // rows x blocks per row <= rows x row length: only the bytes can overflow.
  const uint64_t scales = scaled ? blob.rows * blocks_per_row(blob.row_length, blob.block) : 0;
  const auto scale_bytes = checked_mul(scales, 4);
  if (!scale_bytes) return "scale size of " + to_string(scales) + " scales overflows";
  if (blob.scales_size != *scale_bytes) {
    return to_string(blob.scales_size) + " scale bytes for " + to_string(scales) + " " + name + " scales (" +
           to_string(*scale_bytes) + " expected)";
  }
  if (blob.scales_size > 0 && blob.scales == nullptr) {
    return "scales is null but holds " + to_string(blob.scales_size) + " bytes";
  }
  for (uint64_t s = 0; s < scales; ++s) {
    float f;
    std::memcpy(&f, blob.scales + 4 * s, sizeof f);
    if (!std::isfinite(f)) return "scale " + to_string(s) + " is not finite";
    if (f < 0.0f) return "scale " + to_string(s) + " is negative";
  }
  return "";
}

void decode(const EncodedView& blob, float* out) {
  const uint64_t n = blob.rows * blob.row_length;
  if (n == 0) return;
  switch (blob.codec) {
    case Codec::fp32: std::memcpy(out, blob.data, n * sizeof(float)); break;
    case Codec::fp16: decode_fp16(blob.data, n, out); break;
    case Codec::bf16: decode_bf16(blob.data, n, out); break;
    case Codec::int8:
    case Codec::int4: decode_int(blob, out); break;
  }
}

Encoded ErrorFeedback::encode(uint64_t slot, Codec codec, const float* values, uint64_t rows, uint64_t row_length,
                              uint32_t block) {
  if (is_lossless(codec)) {
    residuals_.erase(slot);
    return wire_codec::encode(codec, values, rows, row_length, block);
  }
  const uint64_t n = rows * row_length;
  std::vector<float>& residual = residuals_[slot];
  if (residual.size() != n) residual.assign(n, 0.0f);
  scratch_.resize(n);
  float* r = residual.data();
  float* sum = scratch_.data();
  for (uint64_t i = 0; i < n; ++i) sum[i] = values[i] + r[i];
  Encoded e = wire_codec::encode(codec, sum, rows, row_length, block);
  decode(e.view(), r);
  // A non-finite residual (a NaN or inf input, or one fp16 saturated far
  // beyond its range) would poison every later send of the slot: drop it.
  for (uint64_t i = 0; i < n; ++i) {
    const float d = sum[i] - r[i];
    r[i] = std::fabs(d) <= FLT_MAX ? d : 0.0f;
  }
  return e;
}

}  // namespace asteroid::wire_codec
