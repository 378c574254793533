// SPDX-License-Identifier: Apache-2.0
#include "engine/token_sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace aaren {

SampledToken SampleToken(absl::Span<const float> logits, const SampleOptions& options,
                         std::mt19937_64& rng) {
  const int32_t n = static_cast<int32_t>(logits.size());
  // log-sum-exp of the raw logits, for the reported logprob.
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  double sum = 0.0;
  for (float l : logits) sum += std::exp(static_cast<double>(l) - max_logit);
  const double log_z = max_logit + std::log(sum);
  auto result = [&](int32_t token) {
    return SampledToken{token, static_cast<float>(logits[static_cast<size_t>(token)] - log_z)};
  };

  if (options.temperature <= 0.0f) {
    return result(
        static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin()));
  }
  // Candidates: ids sorted by logit (descending, ties to the lower id), cut to top_k.
  std::vector<int32_t> ids(static_cast<size_t>(n));
  std::iota(ids.begin(), ids.end(), 0);
  const size_t k = options.top_k == 0 ? ids.size() : std::min<size_t>(options.top_k, ids.size());
  std::partial_sort(
      ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k), ids.end(),
      [&](int32_t a, int32_t b) {
        return logits[static_cast<size_t>(a)] > logits[static_cast<size_t>(b)] ||
               (logits[static_cast<size_t>(a)] == logits[static_cast<size_t>(b)] && a < b);
      });
  ids.resize(k);
  std::vector<double> weights(k);
  const double top = logits[static_cast<size_t>(ids[0])];
  double total = 0.0;
  for (size_t i = 0; i < k; ++i) {
    weights[i] = std::exp((logits[static_cast<size_t>(ids[i])] - top) / options.temperature);
    total += weights[i];
  }
  // Uniform in [0, 1) from the top 53 bits of one draw.
  const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53 * total;
  double acc = 0.0;
  for (size_t i = 0; i < k; ++i) {
    acc += weights[i];
    if (u < acc) return result(ids[i]);
  }
  return result(ids[k - 1]);
}

}  // namespace aaren
