// SPDX-License-Identifier: Apache-2.0
// LinearRows and PackedLinear (core/linear.h) against a float64 triple loop: bias, accumulation,
// row strides, row counts across PackedLinear's row blocks, and concurrent calls from many
// threads.
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

// PackedLinear (libxsmm on W^T for small weights, OpenBLAS on the same W^T for large ones), with
// fresh random inputs: 1 row (a streaming tick), row counts around the 64-row block, strided rows,
// bias, accumulation; shapes on both paths.
TEST(PackedLinearTest, MatchesFloat64AcrossRowBlocksStridesBiasAndAccumulation) {
  std::random_device device;
  const uint64_t seed = (uint64_t{device()} << 32) | device();
  SCOPED_TRACE(seed);
  struct Shape {
    int64_t k, n;
    bool jit;
  };
  for (const Shape sh : {Shape{128, 132, true}, Shape{70, 19, true}, Shape{512, 128, true},
                         Shape{3, 1000, true}, Shape{512, 520, false}}) {
    const int64_t k = sh.k, n = sh.n, ldx = k + 5, ldy = n + 3;
    const std::vector<float> w = Random(n * k, seed + 1), bias = Random(n, seed + 2);
    for (const float* b : {static_cast<const float*>(nullptr), bias.data()}) {
      const PackedLinear packed(w.data(), n, k, b);
      EXPECT_EQ(packed.n(), n);
      EXPECT_EQ(packed.k(), k);
      EXPECT_EQ(packed.jit(), sh.jit) << "k " << k << " n " << n;
      for (int64_t m : {int64_t{1}, int64_t{3}, int64_t{63}, int64_t{64}, int64_t{65}, int64_t{257},
                        int64_t{600}}) {
        const std::vector<float> x = Random(m * ldx, seed + 3 + m), y0 = Random(m * ldy, seed + 4);
        for (bool accumulate : {false, true}) {
          std::vector<float> y = y0;
          packed.Run(x.data(), m, ldx, y.data(), ldy, accumulate);
          for (int64_t r = 0; r < m; ++r) {
            for (int64_t j = 0; j < ldy; ++j) {
              if (j >= n) {
                ASSERT_EQ(y[r * ldy + j], y0[r * ldy + j]) << "wrote outside the row's columns";
                continue;
              }
              double ref = (accumulate ? y0[r * ldy + j] : 0.0) + (b ? b[j] : 0.0);
              for (int64_t i = 0; i < k; ++i) ref += double(x[r * ldx + i]) * w[j * k + i];
              ASSERT_NEAR(y[r * ldy + j], ref, 1e-4 * (1 + std::abs(ref)))
                  << "k " << k << " n " << n << " m " << m << " row " << r << " col " << j;
            }
          }
        }
      }
    }
  }
}

TEST(PackedLinearTest, ConcurrentCallsOnDisjointOutputs) {
  const int64_t m = 64, k = 128, n = 96;
  const std::vector<float> w = Random(n * k, 7), x = Random(m * k, 8);
  const PackedLinear packed(w.data(), n, k, nullptr);
  std::vector<float> expected(m * n);
  packed.Run(x.data(), m, k, expected.data(), n);
  std::vector<std::vector<float>> outs(8, std::vector<float>(m * n));
  std::vector<std::thread> threads;
  for (auto& out : outs) {
    threads.emplace_back([&] {
      for (int rep = 0; rep < 20; ++rep) packed.Run(x.data(), m, k, out.data(), n);
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& out : outs) EXPECT_EQ(out, expected);
}

}  // namespace
}  // namespace aaren
