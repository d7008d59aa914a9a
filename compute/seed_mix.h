// Deterministic seed derivation shared by model initialisation and the data
// sets: splitmix64 (Steele et al.), portable and independent of any
// std:: distribution. Internal to compute/.
#pragma once

#include <cstdint>

namespace asteroid::compute {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// A seed for stream `a` of `seed` (then `b`): distinct inputs give unrelated seeds.
inline uint64_t mix_seed(uint64_t seed, uint64_t a, uint64_t b = 0) {
  return splitmix64(splitmix64(splitmix64(seed) ^ (a + 0x632be59bd9b4e019ULL)) ^
                    (b + 0xd1b54a32d192ed03ULL));
}

// Uniform double in [0, 1) from 53 random bits.
inline double unit_double(uint64_t bits) { return static_cast<double>(bits >> 11) * 0x1.0p-53; }

// Uniform integer in [0, n) by multiply-shift of 32 random bits (bias < n / 2^32).
inline uint64_t below(uint64_t bits, uint64_t n) { return ((bits >> 32) * n) >> 32; }

}  // namespace asteroid::compute
