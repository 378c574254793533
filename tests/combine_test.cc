// SPDX-License-Identifier: Apache-2.0
// The combine operator of core/aaren_state.h: associativity, exact identity, stability.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/aaren_state.h"

namespace aaren {
namespace {

constexpr int64_t kDHead = 8;
using Record = std::vector<float>;  // (m, u, w[kDHead])

Record Identity() {
  Record r(2 + kDHead, 0.0f);
  r[0] = kNegInf;
  return r;
}

Record Combine(Record a, const Record& b) {
  CombineInto(a.data(), b.data(), kDHead);
  return a;
}

// A random non-identity prefix state: m from a wide range (scores up to +-1e4), u in [1, count]
// (a prefix of `count` tokens, with its max contributing exactly 1 or less), w = u * a value mean.
Record RandomState(std::mt19937_64& rng, int kind) {
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Record r(2 + kDHead);
  switch (kind % 3) {
    case 0:
      r[0] = 5.0f * normal(rng);
      break;  // ordinary scores
    case 1:
      r[0] = (unit(rng) < 0.5f ? -1e4f : 1e4f) + normal(rng);
      break;  // huge scores
    default:
      r[0] = 1e-30f * normal(rng);
      break;  // tiny scores
  }
  const float count = std::pow(10.0f, 6.0f * unit(rng));  // 1 .. 1e6 tokens
  r[1] = 1.0f + (count - 1.0f) * unit(rng);
  for (int64_t j = 0; j < kDHead; ++j) r[2 + j] = r[1] * normal(rng);
  return r;
}

// Output o = w / u of a state; combine must preserve it to float rounding.
std::vector<double> Output(const Record& r) {
  std::vector<double> o(kDHead);
  for (int64_t j = 0; j < kDHead; ++j) o[j] = double(r[2 + j]) / r[1];
  return o;
}

void ExpectClose(const Record& x, const Record& y) {
  ASSERT_FALSE(std::isnan(x[0]) || std::isnan(y[0]));
  EXPECT_EQ(x[0], y[0]);  // max is exact and associative
  EXPECT_NEAR(x[1], y[1], 1e-5 * std::abs(y[1]));
  const auto ox = Output(x), oy = Output(y);
  double scale = 0;
  for (double v : oy) scale = std::max(scale, std::abs(v));
  for (int64_t j = 0; j < kDHead; ++j) EXPECT_NEAR(ox[j], oy[j], 1e-5 * scale);
}

TEST(CombineTest, IsAssociativeOnRandomTriples) {
  std::mt19937_64 rng(20261122);
  for (int trial = 0; trial < 3000; ++trial) {
    const Record a = RandomState(rng, trial), b = RandomState(rng, trial / 3),
                 c = RandomState(rng, trial / 9);
    SCOPED_TRACE(trial);
    ExpectClose(Combine(Combine(a, b), c), Combine(a, Combine(b, c)));
  }
}

TEST(CombineTest, IsAssociativeWithIdentitiesMixedIn) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 512; ++trial) {
    Record parts[3];
    for (int i = 0; i < 3; ++i) parts[i] = (trial >> i) & 1 ? Identity() : RandomState(rng, trial);
    const Record left = Combine(Combine(parts[0], parts[1]), parts[2]);
    const Record right = Combine(parts[0], Combine(parts[1], parts[2]));
    if (left[0] == kNegInf) {
      EXPECT_EQ(right[0], kNegInf);
      EXPECT_EQ(left, Identity());
      EXPECT_EQ(right, Identity());
    } else {
      ExpectClose(left, right);
    }
  }
}

TEST(CombineTest, IdentityIsExactOnBothSides) {
  std::mt19937_64 rng(11);
  for (int trial = 0; trial < 1000; ++trial) {
    Record a = RandomState(rng, trial);
    if (trial % 2 == 0) a[2] = -0.0f;  // signed zeros survive too
    // Bit-for-bit: combining with the empty prefix must not even round.
    EXPECT_EQ(0, std::memcmp(Combine(Identity(), a).data(), a.data(), a.size() * 4));
    EXPECT_EQ(0, std::memcmp(Combine(a, Identity()).data(), a.data(), a.size() * 4));
  }
  const Record ii = Combine(Identity(), Identity());
  EXPECT_EQ(ii, Identity());  // no NaN from -inf - -inf
}

TEST(CombineTest, LeavesCombineToTheSoftmaxWeightedMean) {
  // Leaves (s, 1, v): with equal scores the output is the plain mean; with scores 1e4 apart the
  // low one vanishes without overflow or NaN, in either order.
  Record a(2 + kDHead, 0.0f), b(2 + kDHead, 0.0f);
  a[0] = 3.0f;
  a[1] = 1.0f;
  a[2] = 10.0f;
  b[0] = 3.0f;
  b[1] = 1.0f;
  b[2] = 20.0f;
  const Record ab = Combine(a, b);
  EXPECT_EQ(ab[0], 3.0f);
  EXPECT_EQ(ab[1], 2.0f);
  EXPECT_EQ(Output(ab)[0], 15.0);
  b[0] = 3.0f + 1e4f;
  const Record ab2 = Combine(a, b), ba2 = Combine(b, a);
  EXPECT_EQ(Output(ab2)[0], 20.0);
  EXPECT_EQ(Output(ba2)[0], 20.0);
}

}  // namespace
}  // namespace aaren
