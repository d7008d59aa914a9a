// Wire codec benchmark: encodes and decodes one float32 tensor with every
// codec, on one core, and prints a markdown table of the bytes a value costs
// on the link, the encode and decode speeds (MB of float32 input a second,
// best of the repeats) and the error (max |error| / max |x| and
// RMS error / RMS x over the tensor).
//
// The tensor is what crosses a stage boundary: rows of 1024 values, half of
// them ReLU activations (normal(0, 1), negatives clamped to 0), half
// gradients (normal(0, 1e-3)). Usage: bench_codecs [--values N] [--repeats R]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "messages/wire_codec.h"

namespace {

using namespace asteroid::wire_codec;
using Clock = std::chrono::steady_clock;

struct Tensor {
  uint64_t rows = 0, row_length = 0;
  std::vector<float> values;
};

// Rows of 1024 values when N allows it, else one row of N; the first half
// (of the rows, or of the row) activations, the rest gradients.
Tensor realistic_tensor(uint64_t n) {
  Tensor t;
  t.row_length = n % 1024 == 0 ? 1024 : n;
  t.rows = n / t.row_length;
  t.values.resize(n);
  std::mt19937 rng(42);
  std::normal_distribution<float> activation(0.0f, 1.0f), gradient(0.0f, 1e-3f);
  const uint64_t half = t.rows > 1 ? t.rows / 2 * t.row_length : n / 2;
  for (uint64_t i = 0; i < n; ++i) {
    t.values[i] = i < half ? std::max(0.0f, activation(rng)) : gradient(rng);
  }
  return t;
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

struct Result {
  double bytes_per_value = 0, encode_mbs = 0, decode_mbs = 0, max_error = 0, rms_error = 0;
};

Result measure(Codec codec, const Tensor& t, int repeats) {
  const uint64_t n = t.values.size();
  const double mb = static_cast<double>(n) * sizeof(float) / 1e6;
  std::vector<float> out(n);
  double best_encode = 1e30, best_decode = 1e30;
  Encoded e;
  for (int r = 0; r < repeats; ++r) {
    auto start = Clock::now();
    e = encode(codec, t.values.data(), t.rows, t.row_length, kDefaultBlock);
    best_encode = std::min(best_encode, seconds_since(start));
    const EncodedView view = e.view();
    if (!validate(view).empty()) {
      std::fprintf(stderr, "%s: invalid encoding: %s\n", codec_name(codec), validate(view).c_str());
      std::exit(1);
    }
    start = Clock::now();
    decode(view, out.data());
    best_decode = std::min(best_decode, seconds_since(start));
  }
  double max_x = 0, max_error = 0, sum_x2 = 0, sum_error2 = 0;
  for (uint64_t i = 0; i < n; ++i) {
    const double x = t.values[i], error = static_cast<double>(out[i]) - x;
    max_x = std::max(max_x, std::fabs(x));
    max_error = std::max(max_error, std::fabs(error));
    sum_x2 += x * x;
    sum_error2 += error * error;
  }
  Result result;
  result.bytes_per_value = static_cast<double>(e.data.size() + 4 * e.scales.size()) / static_cast<double>(n);
  result.encode_mbs = mb / best_encode;
  result.decode_mbs = mb / best_decode;
  result.max_error = max_x > 0 ? max_error / max_x : 0;
  result.rms_error = sum_x2 > 0 ? std::sqrt(sum_error2 / sum_x2) : 0;
  return result;
}

int usage(const char* program) {
  std::fprintf(stderr, "usage: %s [--values N] [--repeats R]\n", program);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t n = 1 << 20;
  int repeats = 5;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--values") == 0 && i + 1 < argc) {
      n = std::strtoull(argv[++i], nullptr, 10);
    } else if (std::strcmp(argv[i], "--repeats") == 0 && i + 1 < argc) {
      repeats = std::atoi(argv[++i]);
    } else {
      return usage(argv[0]);
    }
  }
  if (n == 0 || repeats < 1) return usage(argv[0]);
  const Tensor t = realistic_tensor(n);
  std::printf("Wire codec benchmark: %llu values (%llu x %llu: ReLU activations, then gradients ~1e-3), "
              "block %u, best of %d, one core\n\n",
              static_cast<unsigned long long>(n), static_cast<unsigned long long>(t.rows),
              static_cast<unsigned long long>(t.row_length), kDefaultBlock, repeats);
  std::printf("| codec | bytes per value | encode MB/s | decode MB/s | max error / max abs | RMS error / RMS |\n");
  std::printf("|---|---|---|---|---|---|\n");
  for (Codec codec : kAllCodecs) {
    const Result r = measure(codec, t, repeats);
    std::printf("| %s | %.3f | %.0f | %.0f | %.2e | %.2e |\n", codec_name(codec), r.bytes_per_value, r.encode_mbs,
                r.decode_mbs, r.max_error, r.rms_error);
  }
  return 0;
}
