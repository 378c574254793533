// SPDX-License-Identifier: Apache-2.0
// SampleToken: greedy and top-1 are argmax with ties to the lowest id, a seed fixes the sequence,
// draws follow softmax(logits / T) over the top k, and the reported logprob is the temperature-1
// log softmax over all logits.
#include "engine/token_sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

namespace aaren {
namespace {

double LogSoftmaxAt(const std::vector<float>& logits, int32_t i) {
  const double max_l = *std::max_element(logits.begin(), logits.end());
  double sum = 0.0;
  for (float l : logits) sum += std::exp(static_cast<double>(l) - max_l);
  return logits[static_cast<size_t>(i)] - max_l - std::log(sum);
}

// softmax(logits / T) restricted to the k largest logits (ties to the lower id); 0 elsewhere.
std::vector<double> TopKSoftmax(const std::vector<float>& logits, double temperature, size_t k) {
  std::vector<int32_t> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) {
    return logits[static_cast<size_t>(a)] > logits[static_cast<size_t>(b)];
  });
  if (k == 0 || k > ids.size()) k = ids.size();
  std::vector<double> p(logits.size(), 0.0);
  double total = 0.0;
  for (size_t i = 0; i < k; ++i) {
    const size_t id = static_cast<size_t>(ids[i]);
    p[id] = std::exp((logits[id] - logits[static_cast<size_t>(ids[0])]) / temperature);
    total += p[id];
  }
  for (double& v : p) v /= total;
  return p;
}

TEST(TokenSamplerTest, TemperatureZeroIsArgmaxWithTiesToLowestId) {
  std::mt19937_64 rng(1);
  const SampleOptions greedy{.temperature = 0.0f, .top_k = 0};
  EXPECT_EQ(SampleToken(std::vector<float>{0.1f, 2.0f, -1.0f}, greedy, rng).token, 1);
  EXPECT_EQ(SampleToken(std::vector<float>{1.0f, 3.0f, 3.0f, 2.0f}, greedy, rng).token, 1);
  EXPECT_EQ(SampleToken(std::vector<float>{7.0f, 7.0f, 7.0f}, greedy, rng).token, 0);
  EXPECT_EQ(SampleToken(std::vector<float>{-5.0f, -4.0f, -4.0f}, greedy, rng).token, 1);
  EXPECT_EQ(SampleToken(std::vector<float>{42.0f}, greedy, rng).token, 0);
  // top_k is irrelevant to greedy.
  const SampleOptions greedy_k{.temperature = 0.0f, .top_k = 2};
  EXPECT_EQ(SampleToken(std::vector<float>{1.0f, 3.0f, 3.0f, 2.0f}, greedy_k, rng).token, 1);
}

TEST(TokenSamplerTest, TopOneIsArgmaxAtAnyTemperature) {
  const std::vector<float> logits = {0.5f, 4.0f, 4.0f, 3.9f, -2.0f};
  for (float t : {0.1f, 1.0f, 5.0f, 100.0f}) {
    std::mt19937_64 rng(7);
    for (int i = 0; i < 200; ++i) {
      ASSERT_EQ(SampleToken(logits, {.temperature = t, .top_k = 1}, rng).token, 1)
          << "temperature " << t;
    }
  }
}

TEST(TokenSamplerTest, TiesAtTheTopKCutoffKeepTheLowerIds) {
  // Ids 1, 2, 3 tie; top_k 2 keeps ids 1 and 2, never 3 nor 0.
  const std::vector<float> logits = {1.0f, 3.0f, 3.0f, 3.0f};
  std::mt19937_64 rng(11);
  std::vector<int> counts(4, 0);
  for (int i = 0; i < 2000; ++i) ++counts[SampleToken(logits, {1.0f, 2}, rng).token];
  EXPECT_EQ(counts[0], 0);
  EXPECT_EQ(counts[3], 0);
  EXPECT_GT(counts[1], 0);
  EXPECT_GT(counts[2], 0);
}

TEST(TokenSamplerTest, SameSeedSameSequenceDifferentSeedDifferentSequence) {
  const std::vector<float> logits = {0.3f, 1.2f, -0.7f, 0.9f, 0.0f, 2.1f, -1.5f, 1.1f};
  const SampleOptions opts{.temperature = 1.3f, .top_k = 6};
  auto draw = [&](uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<int32_t> tokens;
    for (int i = 0; i < 1000; ++i) tokens.push_back(SampleToken(logits, opts, rng).token);
    return tokens;
  };
  EXPECT_EQ(draw(1234), draw(1234));
  EXPECT_NE(draw(1234), draw(1235));
}

// Chi-square goodness of fit of `draws` samples against softmax(logits / T) over the top k.
// With a correct sampler the statistic has (support - 1) degrees of freedom, mean = dof and
// standard deviation sqrt(2 dof); the bound used is dof + 10 sqrt(2 dof), a p-value below 1e-5
// for the supports used here. The seed is fixed, so the test is deterministic; the bound only
// says how far off a wrong sampler (e.g. one ignoring T or top_k) would land: far beyond it.
void ExpectFollowsTopKSoftmax(const std::vector<float>& logits, float temperature, uint32_t top_k,
                              uint64_t seed) {
  constexpr int kDraws = 20000;
  const std::vector<double> p = TopKSoftmax(logits, temperature, top_k);
  std::mt19937_64 rng(seed);
  std::vector<int> counts(logits.size(), 0);
  for (int i = 0; i < kDraws; ++i) {
    ++counts[static_cast<size_t>(
        SampleToken(logits, {.temperature = temperature, .top_k = top_k}, rng).token)];
  }
  double chi2 = 0.0;
  int support = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    if (p[i] == 0.0) {
      EXPECT_EQ(counts[i], 0) << "id " << i << " is outside the top " << top_k;
      continue;
    }
    ++support;
    const double expected = p[i] * kDraws;
    chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
  }
  const double dof = support - 1;
  EXPECT_LT(chi2, dof + 10.0 * std::sqrt(2.0 * dof))
      << "temperature " << temperature << " top_k " << top_k;
}

TEST(TokenSamplerTest, FrequenciesMatchSoftmaxOverTopK) {
  const std::vector<float> logits = {2.0f, 1.5f, 1.0f, 0.9f, 0.2f, -0.5f, -1.0f, 3.0f};
  ExpectFollowsTopKSoftmax(logits, 0.7f, 4, 101);
  ExpectFollowsTopKSoftmax(logits, 1.0f, 0, 102);
  ExpectFollowsTopKSoftmax(logits, 1.5f, 0, 103);
  ExpectFollowsTopKSoftmax(logits, 2.0f, 6, 104);
  ExpectFollowsTopKSoftmax(logits, 1.0f, 100, 105);  // k above the vocabulary: all
}

TEST(TokenSamplerTest, HugeLogitsStayFinite) {
  const std::vector<float> logits = {1000.0f, 999.0f, -1000.0f};
  ExpectFollowsTopKSoftmax(logits, 1.0f, 0, 106);
  std::mt19937_64 rng(3);
  const SampledToken t = SampleToken(logits, {}, rng);
  EXPECT_TRUE(std::isfinite(t.logprob));
}

TEST(TokenSamplerTest, LogprobIsLogSoftmaxAtTemperatureOneOverAllLogits) {
  std::mt19937_64 gen(99);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  const SampleOptions options[] = {
      {.temperature = 0.0f, .top_k = 0},
      {.temperature = 1.0f, .top_k = 0},
      {.temperature = 0.3f, .top_k = 3},
      {.temperature = 4.0f, .top_k = 1},
  };
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<float> logits(17);
    for (float& l : logits) l = normal(gen);
    for (const SampleOptions& o : options) {
      std::mt19937_64 rng(static_cast<uint64_t>(trial));
      const SampledToken t = SampleToken(logits, o, rng);
      ASSERT_GE(t.token, 0);
      ASSERT_LT(t.token, 17);
      EXPECT_NEAR(t.logprob, LogSoftmaxAt(logits, t.token), 1e-5)
          << "trial " << trial << " temperature " << o.temperature << " top_k " << o.top_k;
    }
  }
  std::mt19937_64 rng(0);
  EXPECT_FLOAT_EQ(SampleToken(std::vector<float>{5.0f}, {}, rng).logprob, 0.0f);
}

}  // namespace
}  // namespace aaren
