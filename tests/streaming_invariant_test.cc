// SPDX-License-Identifier: Apache-2.0
// The central invariant (DESIGN.md section 1): streaming token by token, scoring the whole
// sequence as one span, and any chunking with carried state give the same outputs and final
// state, to float32 rounding; and many sessions stepped together equal each stepped alone.
#include <gtest/gtest.h>

#include <random>

#include "core/cpu_backend.h"
#include "tests/test_models.h"

namespace aaren::testing {
namespace {

constexpr double kInvariantTolerance = 1e-5;

class StreamingInvariantTest
    : public ::testing::TestWithParam<std::tuple<InputKind, PositionKind, int64_t>> {};

TEST_P(StreamingInvariantTest, TokenByTokenEqualsOneSpanEqualsRandomChunks) {
  const auto [input, position, heads] = GetParam();
  const ModelConfig config = MakeConfig(input, position, heads, /*n_layers=*/2);
  const uint64_t seed = ::testing::UnitTest::GetInstance()->random_seed() + heads;
  auto model = RandomModel(config, seed);
  CpuBackend backend(model, {.num_threads = 2, .min_scan_chunk = 32});
  const int64_t n = 700;
  const Sequence seq = RandomSequence(config, n, seed + 1);

  SessionState whole(config);
  const std::vector<float> out_whole = RunSpan(backend, seq, 0, n, whole);

  SessionState stream(config);
  std::vector<float> out_stream;
  for (int64_t t = 0; t < n; ++t) {
    const std::vector<float> o = RunSpan(backend, seq, t, t + 1, stream);
    out_stream.insert(out_stream.end(), o.begin(), o.end());
  }
  EXPECT_LT(MaxRelativeError(out_stream, out_whole), kInvariantTolerance);
  EXPECT_LT(MaxRelativeError(stream.state, whole.state), kInvariantTolerance);
  EXPECT_EQ(stream.position, n);

  std::mt19937_64 rng(seed + 2);
  for (int trial = 0; trial < 5; ++trial) {
    SessionState chunked(config);
    std::vector<float> out_chunked;
    std::uniform_int_distribution<int64_t> size(1, trial < 2 ? 8 : 300);
    for (int64_t t = 0; t < n;) {
      const int64_t end = std::min(n, t + size(rng));
      const std::vector<float> o = RunSpan(backend, seq, t, end, chunked);
      out_chunked.insert(out_chunked.end(), o.begin(), o.end());
      t = end;
    }
    EXPECT_LT(MaxRelativeError(out_chunked, out_whole), kInvariantTolerance) << "trial " << trial;
    EXPECT_LT(MaxRelativeError(chunked.state, whole.state), kInvariantTolerance);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Variants, StreamingInvariantTest,
    ::testing::Combine(::testing::Values(InputKind::kTokens, InputKind::kFeatures),
                       ::testing::Values(PositionKind::kNone, PositionKind::kSinusoidal),
                       ::testing::Values(1, 4)));

// Continuous batching: length-1 spans of many sessions in one Forward (one matrix product per
// projection) equal each session stepped alone; sessions are at different positions.
TEST(StreamingBatchTest, ManySessionsSteppedTogetherEqualEachAlone) {
  const ModelConfig config = MakeConfig(InputKind::kTokens, PositionKind::kSinusoidal, 4, 2);
  auto model = RandomModel(config, 31);
  CpuBackend backend(model, {.num_threads = 2});
  const int kSessions = 64, kSteps = 20;
  std::vector<Sequence> seqs;
  std::vector<SessionState> together, alone;
  for (int i = 0; i < kSessions; ++i) {
    seqs.push_back(RandomSequence(config, kSteps, 1000 + i));
    together.emplace_back(config, /*first_position=*/i * 13);
    alone.emplace_back(config, i * 13);
  }
  for (int t = 0; t < kSteps; ++t) {
    std::vector<std::vector<float>> outs(kSessions, std::vector<float>(config.output_dim));
    std::vector<Span> spans;
    for (int i = 0; i < kSessions; ++i) {
      Span s = seqs[i].Slice(t, t + 1, 0);
      s.state = together[i].state.data();
      s.position = &together[i].position;
      s.outputs = outs[i].data();
      spans.push_back(s);
    }
    ASSERT_TRUE(backend.Forward(spans).ok());
    for (int i = 0; i < kSessions; ++i) {
      const std::vector<float> o = RunSpan(backend, seqs[i], t, t + 1, alone[i]);
      ASSERT_LT(MaxRelativeError(outs[i], o), kInvariantTolerance) << "session " << i;
    }
  }
  for (int i = 0; i < kSessions; ++i) {
    EXPECT_EQ(together[i].position, i * 13 + kSteps);
    EXPECT_LT(MaxRelativeError(together[i].state, alone[i].state), kInvariantTolerance);
  }
}

}  // namespace
}  // namespace aaren::testing
