// SPDX-License-Identifier: Apache-2.0
// Sinusoidal position encoding (core/position_encoding.h): the rotation recurrence between anchors
// matches direct float64 sin/cos, at small and very large positions, for even and odd widths.
#include "core/position_encoding.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace aaren {
namespace {

TEST(PositionEncodingTest, MatchesDirectFormulaAtAnyPosition) {
  for (int64_t d : {1, 7, 64}) {
    for (int64_t first : {int64_t{0}, int64_t{12345}, int64_t{1} << 30}) {
      const int64_t rows = 3 * kPositionAnchorStride + 5;
      std::vector<float> x(rows * d, 0.5f);
      AddSinusoidalPositions(x.data(), rows, d, d, first);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t i = 0; i < d; ++i) {
          const double angle = double(first + r) / std::pow(10000.0, double(i - i % 2) / double(d));
          const double pe = i % 2 == 0 ? std::sin(angle) : std::cos(angle);
          // float32 rounding of 0.5 + pe only.
          ASSERT_NEAR(x[r * d + i], 0.5 + pe, 2e-7) << "d=" << d << " pos=" << first + r;
        }
      }
    }
  }
}

// An anchor row (every streamed token's: one row per span) is exactly float(sin) and float(cos)
// of the position's angles, the bits the direct formula gives, at any position.
TEST(PositionEncodingTest, AnchorRowsAreExactlyTheDirectSinAndCos) {
  constexpr int64_t d = 256;
  for (int64_t first : {int64_t{0}, int64_t{1}, int64_t{777}, int64_t{1} << 20, int64_t{1} << 40}) {
    std::vector<float> x(d, 0.25f);
    AddSinusoidalPositions(x.data(), 1, d, d, first);
    for (int64_t i = 0; i < d; i += 2) {
      const double freq = std::pow(10000.0, -static_cast<double>(i) / static_cast<double>(d));
      const double angle = static_cast<double>(first) * freq;
      ASSERT_EQ(x[i], 0.25f + static_cast<float>(std::sin(angle))) << "pos=" << first << " i=" << i;
      ASSERT_EQ(x[i + 1], 0.25f + static_cast<float>(std::cos(angle)))
          << "pos=" << first << " i=" << i + 1;
    }
  }
}

TEST(PositionEncodingTest, RespectsRowStride) {
  std::vector<float> x(2 * 10, 0.0f);
  AddSinusoidalPositions(x.data(), 2, /*row_stride=*/10, /*d_model=*/4, 0);
  EXPECT_EQ(x[0], 0.0f);  // sin(0)
  EXPECT_EQ(x[1], 1.0f);  // cos(0)
  EXPECT_FLOAT_EQ(x[10], static_cast<float>(std::sin(1.0)));
  for (int i = 4; i < 10; ++i) EXPECT_EQ(x[i], 0.0f);  // outside the row's d_model
}

}  // namespace
}  // namespace aaren
