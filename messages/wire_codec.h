// Encodings of float32 tensors for the wire: what crosses a stage boundary
// (activations forward, their gradients backward) and the chunks of a
// group's ring all-reduce. `fp32` is exact; `fp16` and `bf16` round every
// value to the nearest representable one (ties to even; fp16 saturates at
// +-65504, inf included; bf16 keeps float32's range, so inf stays inf; NaN
// stays NaN); `int8` and `int4` quantise each block of `block`
// consecutive values of one row symmetrically, with one float32 scale per
// block (absmax / 127, absmax / 7; non-finite values encode as 0). Blocks
// never span two rows, so a tensor of samples (one row per sample) encodes
// every sample alone: how a micro-batch is split between group members does
// not change what is decoded. Encoding is deterministic.
//
// Pure code: no Torch, no Cap'n Proto. The message codec validates blobs
// with `validate` (a hostile blob is an error naming the field, never a
// crash); the planner prices links with `encoded_bytes`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace asteroid::wire_codec {

enum class Codec : uint8_t { fp32, fp16, bf16, int8, int4 };
inline constexpr Codec kAllCodecs[] = {Codec::fp32, Codec::fp16, Codec::bf16, Codec::int8, Codec::int4};
inline constexpr uint32_t kDefaultBlock = 64;
// Blocks larger than this are refused (a hostile blob could otherwise make
// one scale cover an absurd range; no sane plan needs more).
inline constexpr uint32_t kMaxBlock = 1u << 20;

// "fp32", "fp16", "bf16", "int8", "int4".
const char* codec_name(Codec codec);
// The codec of that name, or nullopt.
std::optional<Codec> parse_codec(std::string_view name);
bool is_lossless(Codec codec);
// True for int8 and int4: they carry one scale per block.
bool has_scales(Codec codec);

// Sizes of a tensor of `rows` rows of `row_length` values, encoded. A size
// that does not fit in 64 bits (or block 0 for int8/int4) is UINT64_MAX.
uint64_t data_bytes(Codec codec, uint64_t rows, uint64_t row_length);
uint64_t scale_count(Codec codec, uint64_t rows, uint64_t row_length, uint32_t block);
// data_bytes + 4 * scale_count: what crosses the link.
uint64_t encoded_bytes(Codec codec, uint64_t rows, uint64_t row_length, uint32_t block);

// An encoded tensor whose bytes live elsewhere (a received buffer). `scales`
// holds scale_count little-endian float32 values, not necessarily aligned.
struct EncodedView {
  Codec codec = Codec::fp32;
  uint32_t block = 0;  // int8/int4 only
  uint64_t rows = 0, row_length = 0;
  const uint8_t* data = nullptr;
  uint64_t data_size = 0;  // bytes
  const uint8_t* scales = nullptr;
  uint64_t scales_size = 0;  // bytes
};

// An encoded tensor that owns its bytes.
struct Encoded {
  Codec codec = Codec::fp32;
  uint32_t block = 0;
  uint64_t rows = 0, row_length = 0;
  std::vector<uint8_t> data;
  std::vector<float> scales;

  EncodedView view() const;
};

// REQUIRES: `values` holds rows * row_length floats; block in [1, kMaxBlock]
// for int8/int4 (ignored otherwise).
Encoded encode(Codec codec, const float* values, uint64_t rows, uint64_t row_length, uint32_t block);

// "" when `blob` can be decoded, else what is wrong with it, naming the
// part: "block size 0", "3 data bytes for 8 int4 values (4 expected)",
// "scale 5 is not finite", "rows x row length overflows", ...
std::string validate(const EncodedView& blob);
// REQUIRES: validate(blob) is "", `out` has room for rows * row_length floats.
void decode(const EncodedView& blob, float* out);

// Error feedback (EF-SGD): the rounding residual of every slot is added to
// that slot's next send, so what a lossy codec drops this time is sent the
// next time rather than lost. A slot is whatever the caller sends again and
// again with the same meaning (the same chunk of the same parameters every
// round). Lossless codecs leave no residual.
class ErrorFeedback {
 public:
  using Residuals = std::map<uint64_t, std::vector<float>>;

  // Encodes values + residual(slot) and keeps (values + residual) - decoded
  // as the slot's new residual (a non-finite residual is dropped: it would
  // poison every later send). A slot seen for the first time, or with
  // another size than before, starts from zero. Lossless codecs encode
  // `values` alone and erase the slot's residual.
  Encoded encode(uint64_t slot, Codec codec, const float* values, uint64_t rows, uint64_t row_length, uint32_t block);

  // The residuals are part of a sender's state: a roll-back restores them.
  const Residuals& residuals() const { return residuals_; }
  void restore(Residuals residuals) { residuals_ = std::move(residuals); }
  void clear() { residuals_.clear(); }

 private:
  Residuals residuals_;
  std::vector<float> scratch_;  // values + residual, reused between calls
};

}  // namespace asteroid::wire_codec
