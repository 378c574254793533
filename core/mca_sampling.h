// SPDX-License-Identifier: Apache-2.0
// Monte-Carlo Attention's random choices, shared bit for bit by the CPU backend and the CUDA
// kernels (this header compiles as host and device code and includes nothing else).
//
// Every draw is a pure function of (seed, layer, head, position, sample index): a counter-based
// generator (SplitMix64's finaliser over a keyed counter), so a token's samples do not depend on
// how its sequence was batched or chunked, on the thread that runs it, or on the device.
#ifndef AAREN_CORE_MCA_SAMPLING_H_
#define AAREN_CORE_MCA_SAMPLING_H_

#include <stdint.h>

#if defined(__CUDACC__)
#define AAREN_HOST_DEVICE __host__ __device__
#else
#define AAREN_HOST_DEVICE
#endif

namespace aaren::mca {

inline constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

AAREN_HOST_DEVICE inline uint64_t Mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 31;
  return x;
}

// The random stream of one token's value projection for one head.
AAREN_HOST_DEVICE inline uint64_t TokenKey(uint64_t seed, int64_t layer, int64_t head,
                                           int64_t position) {
  const uint64_t where = (static_cast<uint64_t>(layer) << 40) ^ static_cast<uint64_t>(head);
  return Mix64(Mix64(seed + kGolden) ^ Mix64(static_cast<uint64_t>(position) * kGolden + where));
}

// 64 random bits for sample k of a token's stream.
AAREN_HOST_DEVICE inline uint64_t SampleBits(uint64_t token_key, int64_t k) {
  return Mix64(token_key + static_cast<uint64_t>(k + 1) * kGolden);
}

// A column j in [0, n) drawn with probability p_j by Walker's alias method: prob[j] is the
// chance of keeping column j when it is picked uniformly, alias[j] the column taken otherwise.
AAREN_HOST_DEVICE inline int32_t DrawColumn(uint64_t bits, const float* prob, const int32_t* alias,
                                            int32_t n) {
  const uint32_t hi = static_cast<uint32_t>(bits >> 32);
  const uint32_t lo = static_cast<uint32_t>(bits);
  const int32_t j =
      static_cast<int32_t>((static_cast<uint64_t>(hi) * static_cast<uint64_t>(n)) >> 32);
  const float u = static_cast<float>(lo >> 8) * (1.0f / 16777216.0f);  // 24 bits in [0, 1)
  return u < prob[j] ? j : alias[j];
}

// Samples spent on a token's value projection (per head): r = ceil(((position + 1) * importance /
// alpha)^2), at least 1; `d_model` (the exact product) when r would reach d_model, when alpha is
// not > 0, or for a non-finite importance. `importance` is the token's weight in its own prefix,
// exp(s - m) / u with (m, u) the state after the token: the paper's n * max_j A[j, i] with the
// token's own prefix length as n (the attention it gets relative to a uniform share).
AAREN_HOST_DEVICE inline int64_t SampleCount(float importance, int64_t position, float alpha,
                                             int64_t d_model) {
  if (!(alpha > 0.0f)) return d_model;
  const double s = static_cast<double>(position + 1) * static_cast<double>(importance) /
                   static_cast<double>(alpha);
  const double r = s * s;
  if (!(r < static_cast<double>(d_model - 1))) return d_model;  // also NaN
  const int64_t n = static_cast<int64_t>(r);
  const int64_t ceil_r = static_cast<double>(n) < r ? n + 1 : n;
  return ceil_r < 1 ? 1 : ceil_r;
}

}  // namespace aaren::mca

#endif  // AAREN_CORE_MCA_SAMPLING_H_
