// SPDX-License-Identifier: Apache-2.0
// Sampling a token from a row of logits (Generate): greedy, temperature, top-k. Deterministic:
// the same logits, options and generator state give the same token on every platform (the
// generator is std::mt19937_64, whose sequence the C++ standard fixes; the uniform draw is made
// from its raw 64-bit output, not from an implementation-defined distribution).
#ifndef AAREN_ENGINE_TOKEN_SAMPLER_H_
#define AAREN_ENGINE_TOKEN_SAMPLER_H_

#include <cstdint>
#include <random>

#include "absl/types/span.h"

namespace aaren {

struct SampleOptions {
  float temperature = 1.0f;  // 0: argmax (no randomness); > 0: softmax(logits / temperature)
  uint32_t top_k = 0;        // keep the k largest logits; 0: all
};

struct SampledToken {
  int32_t token = 0;
  float logprob = 0.0f;  // log softmax(logits)[token] at temperature 1, over all logits
};

// `logits` must be non-empty and finite. Ties break to the lowest id.
SampledToken SampleToken(absl::Span<const float> logits, const SampleOptions& options,
                         std::mt19937_64& rng);

}  // namespace aaren

#endif  // AAREN_ENGINE_TOKEN_SAMPLER_H_
