// SPDX-License-Identifier: Apache-2.0
// CpuBackend against the float64 naive O(N^2) oracle (tests/reference_oracle.h) on fresh random
// models of every config variant, plus numerical edge cases and input validation.
#include "core/cpu_backend.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <tuple>

#include "core/aaren_state.h"
#include "tests/reference_oracle.h"
#include "tests/test_models.h"

namespace aaren::testing {
namespace {

using ::testing::HasSubstr;

// float32 vs the float64 oracle (infinity-norm relative error, see MaxRelativeError).
constexpr double kOracleTolerance = 1e-5;

using Variant = std::tuple<InputKind, PositionKind, int64_t /*heads*/, int64_t /*layers*/>;

class CpuVsOracleTest : public ::testing::TestWithParam<Variant> {};

TEST_P(CpuVsOracleTest, MatchesFloat64Oracle) {
  const auto [input, position, heads, layers] = GetParam();
  const ModelConfig config = MakeConfig(input, position, heads, layers, /*d_model=*/32);
  const uint64_t seed = ::testing::UnitTest::GetInstance()->random_seed() * 1000 +
                        static_cast<uint64_t>(heads * 10 + layers);
  auto model = RandomModel(config, seed);
  ASSERT_NE(model, nullptr);
  // Small chunks so that sequences of a few hundred tokens use the three-phase scan.
  for (int threads : {1, 3}) {
    CpuBackend backend(model, {.num_threads = threads, .min_scan_chunk = 16});
    for (int64_t n : {1, 2, 63, 301}) {
      const Sequence seq = RandomSequence(config, n, seed + n);
      SessionState session(config, /*first_position=*/n == 63 ? 1000 : 0);
      const int64_t first = session.position;
      const std::vector<float> out = RunSpan(backend, seq, 0, n, session);
      const double err = MaxRelativeError(out, ReferenceForward(*model, seq, first));
      EXPECT_LT(err, kOracleTolerance) << "n=" << n << " threads=" << threads;
      EXPECT_EQ(session.position, first + n);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllVariants, CpuVsOracleTest,
    ::testing::Combine(::testing::Values(InputKind::kTokens, InputKind::kFeatures),
                       ::testing::Values(PositionKind::kNone, PositionKind::kSinusoidal),
                       ::testing::Values(1, 4, 8), ::testing::Values(1, 3)),
    [](const ::testing::TestParamInfo<Variant>& info) {
      return std::string(InputKindName(std::get<0>(info.param))) + "_" +
             std::string(PositionKindName(std::get<1>(info.param))) + "_H" +
             std::to_string(std::get<2>(info.param)) + "_L" +
             std::to_string(std::get<3>(info.param));
    });

// Long sequences: N = 4096 through the chunked scan on two threads.
class CpuVsOracleLongTest : public ::testing::TestWithParam<Variant> {};

TEST_P(CpuVsOracleLongTest, MatchesFloat64OracleAt4096Tokens) {
  const auto [input, position, heads, layers] = GetParam();
  const ModelConfig config = MakeConfig(input, position, heads, layers, /*d_model=*/16, 32);
  const uint64_t seed = ::testing::UnitTest::GetInstance()->random_seed() + 4096;
  auto model = RandomModel(config, seed);
  CpuBackend backend(model, {.num_threads = 2, .min_scan_chunk = 256});
  const Sequence seq = RandomSequence(config, 4096, seed);
  SessionState session(config);
  const std::vector<float> out = RunSpan(backend, seq, 0, seq.length, session);
  EXPECT_LT(MaxRelativeError(out, ReferenceForward(*model, seq)), kOracleTolerance);
}

INSTANTIATE_TEST_SUITE_P(Long, CpuVsOracleLongTest,
                         ::testing::Values(Variant{InputKind::kTokens, PositionKind::kSinusoidal, 1,
                                                   1},
                                           Variant{InputKind::kFeatures, PositionKind::kNone, 4, 3},
                                           Variant{InputKind::kTokens, PositionKind::kNone, 8, 1}));

TEST(CpuBackendTest, RaggedBatchMatchesOracleSpanBySpan) {
  const ModelConfig config = MakeConfig(InputKind::kTokens, PositionKind::kSinusoidal, 4, 2);
  auto model = RandomModel(config, 99);
  CpuBackend backend(model, {.num_threads = 2, .min_scan_chunk = 8});
  const std::vector<int64_t> lengths = {1, 200, 0, 1, 57, 1, 1, 130};
  std::vector<Sequence> seqs;
  std::vector<SessionState> sessions;
  std::vector<std::vector<float>> outs;
  std::vector<Span> spans;
  for (size_t i = 0; i < lengths.size(); ++i) {
    seqs.push_back(RandomSequence(config, lengths[i], 500 + i));
    sessions.emplace_back(config, /*first_position=*/static_cast<int64_t>(i) * 7);
    outs.emplace_back(lengths[i] * config.output_dim);
  }
  for (size_t i = 0; i < lengths.size(); ++i) {
    Span s = seqs[i].Slice(0, lengths[i], config.n_features);
    s.state = sessions[i].state.data();
    s.position = &sessions[i].position;
    s.outputs = outs[i].data();
    spans.push_back(s);
  }
  ASSERT_TRUE(backend.Forward(spans).ok());
  for (size_t i = 0; i < lengths.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(sessions[i].position, static_cast<int64_t>(i) * 7 + lengths[i]);
    if (lengths[i] == 0) continue;
    EXPECT_LT(MaxRelativeError(outs[i], ReferenceForward(*model, seqs[i], int64_t(i) * 7)),
              kOracleTolerance);
  }
}

TEST(CpuBackendTest, OutputModesLastAndNone) {
  const ModelConfig config = MakeConfig(InputKind::kFeatures, PositionKind::kNone, 2, 2);
  auto model = RandomModel(config, 5);
  CpuBackend backend(model);
  const Sequence seq = RandomSequence(config, 40, 6);
  SessionState all(config), last(config), none(config);
  const std::vector<float> out_all = RunSpan(backend, seq, 0, 40, all);

  std::vector<float> out_last(config.output_dim, -1.0f);
  Span s = seq.Slice(0, 40, config.n_features);
  s.state = last.state.data();
  s.position = &last.position;
  s.output = OutputSelect::kLast;
  s.outputs = out_last.data();
  ASSERT_TRUE(backend.Forward({s}).ok());
  const std::vector<float> expected_last(out_all.end() - config.output_dim, out_all.end());
  EXPECT_LT(MaxRelativeError(out_last, expected_last), 1e-6);

  s.state = none.state.data();
  s.position = &none.position;
  s.output = OutputSelect::kNone;
  s.outputs = nullptr;
  ASSERT_TRUE(backend.Forward({s}).ok());
  // The state is the same whatever the output mode.
  EXPECT_LT(MaxRelativeError(none.state, all.state), 1e-6);
  EXPECT_LT(MaxRelativeError(last.state, all.state), 1e-6);
  EXPECT_EQ(none.position, 40);
}

// Scores of +-1e4, equal scores, a single token, an empty span: finite outputs, and (where the
// oracle itself is well conditioned) the right ones.
TEST(CpuBackendTest, ExtremeScoresStayFinite) {
  const ModelConfig config = MakeConfig(InputKind::kTokens, PositionKind::kSinusoidal, 4, 2);
  auto model = RandomModel(config, 17, {.query_scale = 5e3f});  // |scores| ~ 1e4
  CpuBackend backend(model, {.num_threads = 2, .min_scan_chunk = 16});
  const Sequence seq = RandomSequence(config, 500, 18);
  SessionState session(config);
  const std::vector<float> out = RunSpan(backend, seq, 0, 500, session);
  for (float v : out) ASSERT_TRUE(std::isfinite(v));
  for (float v : session.state) ASSERT_FALSE(std::isnan(v));
}

TEST(CpuBackendTest, EqualScoresGiveThePlainMean) {
  const ModelConfig config = MakeConfig(InputKind::kFeatures, PositionKind::kNone, 4, 1);
  auto tensors = RandomTensors(config, 3);
  std::fill(tensors["layers.0.attn.query"].data.begin(), tensors["layers.0.attn.query"].data.end(),
            0.0f);  // every score is exactly 0
  auto model = Model::FromTensors("equal", config, std::move(tensors));
  ASSERT_TRUE(model.ok());
  CpuBackend backend(*model, {.num_threads = 2, .min_scan_chunk = 16});
  const Sequence seq = RandomSequence(config, 333, 4);
  SessionState session(config);
  const std::vector<float> out = RunSpan(backend, seq, 0, 333, session);
  EXPECT_LT(MaxRelativeError(out, ReferenceForward(**model, seq)), kOracleTolerance);
  // u counts the tokens exactly.
  EXPECT_EQ(session.state[1], 333.0f);
  EXPECT_EQ(session.state[0], 0.0f);
}

TEST(CpuBackendTest, SingleTokenAndEmptySpan) {
  const ModelConfig config = MakeConfig(InputKind::kTokens, PositionKind::kNone, 8, 3);
  auto model = RandomModel(config, 8);
  CpuBackend backend(model);
  const Sequence seq = RandomSequence(config, 1, 9);
  SessionState session(config);
  const std::vector<float> before = session.state;
  // Empty span: nothing happens, not even to the position.
  Span empty;
  empty.state = session.state.data();
  empty.position = &session.position;
  ASSERT_TRUE(backend.Forward({empty}).ok());
  EXPECT_EQ(0, std::memcmp(before.data(), session.state.data(), before.size() * 4));
  EXPECT_EQ(session.position, 0);
  ASSERT_TRUE(backend.Forward({}).ok());
  // One token: attention output is exactly its own value; u = 1, m = its score.
  const std::vector<float> out = RunSpan(backend, seq, 0, 1, session);
  EXPECT_LT(MaxRelativeError(out, ReferenceForward(*model, seq)), kOracleTolerance);
  for (int64_t r = 0; r < config.n_layers * config.n_heads; ++r) {
    EXPECT_EQ(session.state[r * (2 + config.d_head()) + 1], 1.0f);
  }
}

// Invalid input anywhere in a batch: a precise error and no span's state, position or outputs
// modified.
TEST(CpuBackendTest, InvalidInputLeavesEveryStateUntouched) {
  const ModelConfig config = MakeConfig(InputKind::kTokens, PositionKind::kSinusoidal, 2, 2);
  auto model = RandomModel(config, 1);
  CpuBackend backend(model);
  Sequence good = RandomSequence(config, 10, 2);
  Sequence bad = good;
  bad.tokens[5] = static_cast<int32_t>(config.vocab_size);
  SessionState s0(config), s1(config);
  RunSpan(backend, good, 0, 3, s0);  // non-trivial states
  RunSpan(backend, good, 0, 4, s1);
  const SessionState s0_before = s0, s1_before = s1;
  std::vector<float> out0(10 * config.output_dim, 7.0f), out1 = out0;
  Span a = good.Slice(0, 10, 0), b = bad.Slice(0, 10, 0);
  a.state = s0.state.data();
  a.position = &s0.position;
  a.outputs = out0.data();
  b.state = s1.state.data();
  b.position = &s1.position;
  b.outputs = out1.data();
  const absl::Status st = backend.Forward({a, b});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("spans[1].tokens[5]: token id 37 out of range [0, 37)"));
  EXPECT_EQ(s0.state, s0_before.state);
  EXPECT_EQ(s1.state, s1_before.state);
  EXPECT_EQ(s0.position, 3);
  EXPECT_EQ(s1.position, 4);
  for (float v : out0) EXPECT_EQ(v, 7.0f);

  // Two spans on one state.
  b = good.Slice(0, 10, 0);
  b.state = s0.state.data();
  b.position = &s1.position;
  b.outputs = out1.data();
  EXPECT_THAT(backend.Forward({a, b}).message(),
              HasSubstr("spans[1].state: same buffer as spans[0]"));
  EXPECT_EQ(s0.state, s0_before.state);
}

// Finite features so large that activations overflow: the whole batch is undone and the state
// never holds NaN or Inf.
TEST(CpuBackendTest, OverflowingActivationsAreRejectedAndUndone) {
  const ModelConfig config = MakeConfig(InputKind::kFeatures, PositionKind::kNone, 2, 2);
  auto model = RandomModel(config, 1);
  CpuBackend backend(model);
  Sequence good = RandomSequence(config, 6, 2);
  Sequence huge = good;
  std::fill(huge.features.begin() + 14, huge.features.begin() + 21, 3e38f);  // row 2
  SessionState s0(config), s1(config);
  RunSpan(backend, good, 0, 2, s0);
  RunSpan(backend, good, 0, 3, s1);
  const SessionState s0_before = s0, s1_before = s1;
  std::vector<float> out0(6 * config.output_dim, 7.0f), out1 = out0;
  Span a = good.Slice(0, 6, config.n_features), b = huge.Slice(0, 6, config.n_features);
  a.state = s0.state.data();
  a.position = &s0.position;
  a.outputs = out0.data();
  b.state = s1.state.data();
  b.position = &s1.position;
  b.outputs = out1.data();
  const absl::Status st = backend.Forward({a, b});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("spans[1]: activations overflow float32"));
  EXPECT_EQ(s0.state, s0_before.state);
  EXPECT_EQ(s1.state, s1_before.state);
  EXPECT_EQ(s0.position, 2);
  EXPECT_EQ(s1.position, 3);
  for (float v : out0) EXPECT_EQ(v, 7.0f);
  for (float v : out1) EXPECT_EQ(v, 7.0f);
  // The session goes on normally afterwards.
  EXPECT_TRUE(backend.Forward({a}).ok());
  for (float v : s0.state) EXPECT_TRUE(std::isfinite(v));
}

TEST(CpuBackendTest, OverlappingStatesAndSharedPositionsAreRejected) {
  const ModelConfig config = MakeConfig(InputKind::kTokens, PositionKind::kNone, 2, 2);
  auto model = RandomModel(config, 1);
  CpuBackend backend(model);
  const Sequence seq = RandomSequence(config, 2, 2);
  std::vector<float> pool(3 * config.state_floats());
  ResetState(pool.data(), StateLayout::For(config));
  ResetState(pool.data() + config.state_floats(), StateLayout::For(config));
  int64_t p0 = 0, p1 = 0;
  std::vector<float> out(2 * config.output_dim);
  Span a = seq.Slice(0, 1, 0), b = seq.Slice(1, 2, 0);
  a.state = pool.data();
  a.position = &p0;
  a.outputs = out.data();
  b.state = pool.data() + config.state_floats() - 1;  // off by one float: overlaps a's last
  b.position = &p1;
  b.outputs = out.data() + config.output_dim;
  EXPECT_THAT(backend.Forward({a, b}).message(),
              HasSubstr("spans[1].state: overlaps spans[0].state"));
  b.state = pool.data() + config.state_floats();
  b.position = &p0;
  EXPECT_THAT(backend.Forward({a, b}).message(),
              HasSubstr("spans[1].position: same counter as spans[0].position"));
  b.position = &p1;
  EXPECT_TRUE(backend.Forward({a, b}).ok());  // adjacent, disjoint buffers are fine
  EXPECT_EQ(p0, 1);
  EXPECT_EQ(p1, 1);
}

TEST(CpuBackendTest, InvalidFeaturesAreNamed) {
  const ModelConfig config = MakeConfig(InputKind::kFeatures, PositionKind::kNone, 2, 1);
  auto model = RandomModel(config, 1);
  CpuBackend backend(model);
  Sequence seq = RandomSequence(config, 4, 2);
  SessionState session(config);
  std::vector<float> out(4 * config.output_dim);
  seq.features[9] = NAN;
  Span s = seq.Slice(0, 4, config.n_features);
  s.state = session.state.data();
  s.position = &session.position;
  s.outputs = out.data();
  EXPECT_THAT(backend.Forward({s}).message(),
              HasSubstr("spans[0].features[9]: non-finite value (row 1, column 2)"));
  s.features = s.features.subspan(0, 10);
  EXPECT_THAT(backend.Forward({s}).message(),
              HasSubstr("spans[0].features: 10 values is not a multiple of n_features 7"));
  Span t;
  const int32_t tok = 1;
  t.tokens = absl::MakeConstSpan(&tok, 1);
  t.state = session.state.data();
  t.position = &session.position;
  t.outputs = out.data();
  EXPECT_THAT(backend.Forward({t}).message(),
              HasSubstr("spans[0].tokens: model input kind is features"));
  EXPECT_EQ(session.position, 0);
}

}  // namespace
}  // namespace aaren::testing
