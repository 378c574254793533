// SPDX-License-Identifier: Apache-2.0
// LinearRows (core/linear.h) against a float64 triple loop: bias, accumulation, row strides, and
// concurrent calls from many threads.
#include "core/linear.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <thread>
#include <vector>

namespace aaren {
namespace {

std::vector<float> Random(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

TEST(LinearTest, MatchesFloat64WithBiasAccumulationAndStrides) {
  SetBlasSingleThreaded();
  const int64_t m = 37, k = 70, n = 19, ldx = 75, ldy = 23;
  const Tensor w{{n, k}, Random(n * k, 1)};
  const std::vector<float> x = Random(m * ldx, 2), bias = Random(n, 3), y0 = Random(m * ldy, 4);
  for (bool accumulate : {false, true}) {
    for (const float* b : {static_cast<const float*>(nullptr), bias.data()}) {
      std::vector<float> y = y0;
      LinearRows(x.data(), m, ldx, w, b, y.data(), ldy, accumulate);
      for (int64_t r = 0; r < m; ++r) {
        for (int64_t j = 0; j < ldy; ++j) {
          if (j >= n) {
            ASSERT_EQ(y[r * ldy + j], y0[r * ldy + j]) << "wrote outside the row's n columns";
            continue;
          }
          double ref = (accumulate ? y0[r * ldy + j] : 0.0) + (b ? b[j] : 0.0);
          for (int64_t i = 0; i < k; ++i) ref += double(x[r * ldx + i]) * w.data[j * k + i];
          ASSERT_NEAR(y[r * ldy + j], ref, 1e-4 * (1 + std::abs(ref)));
        }
      }
    }
  }
}

TEST(LinearTest, ConcurrentCallsOnDisjointOutputs) {
  SetBlasSingleThreaded();
  const int64_t m = 64, k = 128, n = 96;
  const Tensor w{{n, k}, Random(n * k, 5)};
  const std::vector<float> x = Random(m * k, 6);
  std::vector<float> expected(m * n);
  LinearRows(x.data(), m, k, w, nullptr, expected.data(), n);
  std::vector<std::vector<float>> outs(8, std::vector<float>(m * n));
  std::vector<std::thread> threads;
  for (auto& out : outs) {
    threads.emplace_back([&] {
      for (int rep = 0; rep < 20; ++rep) LinearRows(x.data(), m, k, w, nullptr, out.data(), n);
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& out : outs) EXPECT_EQ(out, expected);
}

}  // namespace
}  // namespace aaren
