// Counter-based random numbers (Philox4x32-10, Salmon et al. 2011). A value depends only on
// (seed, stream, instance, index), so the CPU and CUDA backends draw bit-identical tasks and any
// element can be drawn alone, in any order, by any thread.
#pragma once
#include <cmath>
#include <cstdint>

#include "ml2o/hd.hpp"

namespace ml2o {

// Streams keep the draws of different quantities independent for the same seed.
enum class Stream : uint32_t {
  matrix_a = 1,
  vector_b = 2,
  start_x = 3,
  weights = 4,
  minibatch = 5,
  dataset_split = 6,
  mlp_init = 7,
};

struct Philox {
  uint32_t out[4];
};

ML2O_HD Philox philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                             uint32_t k1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kM0) * c0;
    const uint64_t p1 = static_cast<uint64_t>(kM1) * c2;
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += kW0;
    k1 += kW1;
  }
  return Philox{{c0, c1, c2, c3}};
}

// The four 32-bit words for one (seed, stream, instance, index) counter.
ML2O_HD Philox draw_bits(uint64_t seed, Stream stream, uint64_t instance, uint64_t index) {
  return philox4x32_10(static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32),
                       static_cast<uint32_t>(instance),
                       static_cast<uint32_t>(stream) ^ (static_cast<uint32_t>(instance >> 32) << 8),
                       static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// Uniform in (0, 1): 53 random bits, offset by half a step so that log() never sees 0.
ML2O_HD double bits_to_unit(uint32_t hi, uint32_t lo) {
  const uint64_t v = (static_cast<uint64_t>(hi) << 21) ^ (lo >> 11);
  return (static_cast<double>(v & ((1ull << 53) - 1)) + 0.5) * (1.0 / 9007199254740992.0);
}

ML2O_HD double uniform01(uint64_t seed, Stream stream, uint64_t instance, uint64_t index) {
  const Philox r = draw_bits(seed, stream, instance, index);
  return bits_to_unit(r.out[0], r.out[1]);
}

// Standard normal by Box-Muller from one counter. Computed in double and rounded once by the
// caller, so libm and CUDA's (both within an ulp in double) give the same float32.
ML2O_HD double normal01(uint64_t seed, Stream stream, uint64_t instance, uint64_t index) {
  const Philox r = draw_bits(seed, stream, instance, index);
  const double u1 = bits_to_unit(r.out[0], r.out[1]);
  const double u2 = bits_to_unit(r.out[2], r.out[3]);
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

// Truncated standard normal (|z| <= 2, resampled as TensorFlow's truncated_normal does).
ML2O_HD double truncated_normal01(uint64_t seed, Stream stream, uint64_t instance, uint64_t index) {
  for (uint64_t attempt = 0;; ++attempt) {
    const double z = normal01(seed, stream, instance ^ (attempt << 40), index);
    if (z >= -2.0 && z <= 2.0) return z;
  }
}

}  // namespace ml2o
