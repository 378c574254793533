// SPDX-License-Identifier: Apache-2.0
// The central invariant end to end (DESIGN.md section 1): through the real server, streaming a
// sequence token by token, appending it in random chunks, scoring it whole, and prefilling a
// prefix then appending the rest all give the same outputs (max relative error < 1e-5), and
// Score matches the float64 oracle. On both demo models and on random models written to a temp
// directory (tokens and features inputs, with and without sinusoidal positions, peaked scores).
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "tests/server/e2e_support.h"

namespace aaren::testing {
namespace {

constexpr double kTolerance = 1e-5;

struct RandomModelSpec {
  const char* name;
  ModelConfig config;
  RandomModelOptions options;
};

std::vector<RandomModelSpec> RandomModelSpecs() {
  ModelConfig peaked = MakeConfig(InputKind::kTokens, PositionKind::kNone, /*n_heads=*/8,
                                  /*n_layers=*/2, /*d_model=*/64, /*d_ff=*/96, /*output_dim=*/9);
  ModelConfig narrow = MakeConfig(InputKind::kFeatures, PositionKind::kNone, 1, 1, 16, 16, 1);
  return {
      {"rand-tokens-sin",
       MakeConfig(InputKind::kTokens, PositionKind::kSinusoidal, 4, 3, 32, 64, 5),
       {}},
      {"rand-features-sin",
       MakeConfig(InputKind::kFeatures, PositionKind::kSinusoidal, 2, 2, 32, 48, 3),
       {}},
      {"rand-tokens-peaked", peaked, RandomModelOptions{.query_scale = 20.0f}},
      {"rand-features-narrow", narrow, {}},
  };
}

class InvariantTest : public SharedServerTest<InvariantTest>,
                      public ::testing::WithParamInterface<std::string> {
 public:
  static ServerFlags Flags() {
    models_dir_ = std::make_unique<TempDir>();
    ServerFlags flags;
    flags.model_dirs = {DemoModelDir("demo-lm").string(), DemoModelDir("demo-ts").string()};
    uint64_t seed = 7;
    for (const RandomModelSpec& spec : RandomModelSpecs()) {
      auto dir =
          WriteRandomModelDir(models_dir_->path(), spec.name, spec.config, seed++, spec.options);
      EXPECT_TRUE(dir.ok()) << dir.status();
      if (dir.ok()) flags.model_dirs.push_back(dir->string());
    }
    flags.extra = {"--threads", "2"};
    return flags;
  }
  static void TearDownTestSuite() {
    SharedServerTest<InvariantTest>::TearDownTestSuite();
    models_dir_.reset();
  }

 protected:
  void SetUp() override {
    SharedServerTest<InvariantTest>::SetUp();
    if (HasFatalFailure()) return;
    info_ = GetModelInfo(stub(), GetParam());
    ASSERT_EQ(info_.name(), GetParam());
    dim_ = info_.output_dim();
    rng_.seed(std::hash<std::string>()(GetParam()) ^
              ::testing::UnitTest::GetInstance()->random_seed());
  }

  std::filesystem::path ModelDir() const {
    const std::string name = GetParam();
    if (name.rfind("demo-", 0) == 0) return DemoModelDir(name);
    return models_dir_->path() / name;
  }

  // Appends rows [begin, end) of `input` to `session_id` in chunks of random sizes in
  // [1, max_chunk]; returns the concatenated outputs.
  std::vector<float> AppendInChunks(const std::string& session_id, const v1::Sequence& input,
                                    int64_t begin, int64_t end, int64_t max_chunk) {
    std::vector<float> outputs;
    std::uniform_int_distribution<int64_t> size(1, max_chunk);
    for (int64_t at = begin; at < end;) {
      const int64_t n = std::min(end - at, size(rng_));
      v1::AppendRequest append;
      append.set_session_id(session_id);
      append.set_expected_position(at);
      *append.mutable_input() = SliceInput(info_, input, at, at + n);
      auto appended = Call(stub(), &AarenStub::Append, append);
      EXPECT_TRUE(appended.ok()) << "append [" << at << ", " << at + n
                                 << "): " << StatusString(appended.status);
      if (!appended.ok()) return outputs;
      EXPECT_EQ(appended.response.position(), at + n);
      outputs.insert(outputs.end(), appended.response.outputs().begin(),
                     appended.response.outputs().end());
      at += n;
    }
    return outputs;
  }

  static inline std::unique_ptr<TempDir> models_dir_;
  v1::ModelInfo info_;
  int64_t dim_ = 0;
  std::mt19937_64 rng_;
};

TEST_P(InvariantTest, ScoreMatchesTheFloat64Oracle) {
  auto model = Model::Load(ModelDir());
  ASSERT_TRUE(model.ok()) << model.status();
  const v1::Sequence x = RandomInput(info_, 300, rng_);
  EXPECT_LT(RelativeError(ScoreAll(stub(), GetParam(), x), OracleOutputs(**model, x)), kTolerance);
}

TEST_P(InvariantTest, StreamTokenByTokenEqualsScore) {
  const int64_t n = 300;
  const v1::Sequence x = RandomInput(info_, n, rng_);
  const std::vector<float> expected = ScoreAll(stub(), GetParam(), x);
  StreamClient stream(stub());
  v1::OpenSession open;
  open.set_model(GetParam());
  ASSERT_TRUE(stream.Open(open).has_value()) << StatusString(stream.Finish());
  std::vector<float> streamed;
  for (int64_t t = 0; t < n; ++t) {
    v1::AppendRequest append;
    *append.mutable_input() = SliceInput(info_, x, t, t + 1);
    std::optional<v1::AppendResponse> reply = stream.Append(append);
    ASSERT_TRUE(reply.has_value()) << "token " << t << ": " << StatusString(stream.Finish());
    ASSERT_EQ(reply->position(), t + 1);
    streamed.insert(streamed.end(), reply->outputs().begin(), reply->outputs().end());
  }
  EXPECT_TRUE(stream.Finish().ok());
  EXPECT_LT(RelativeError(streamed, expected), kTolerance);
}

TEST_P(InvariantTest, AppendInRandomChunksEqualsScore) {
  const int64_t n = 300;
  const v1::Sequence x = RandomInput(info_, n, rng_);
  const std::vector<float> expected = ScoreAll(stub(), GetParam(), x);
  for (int64_t max_chunk : {3, 40, 129}) {
    const std::string id = CreateSession(stub(), GetParam());
    EXPECT_LT(RelativeError(AppendInChunks(id, x, 0, n, max_chunk), expected), kTolerance)
        << "chunks of up to " << max_chunk;
  }
  // The same on a Stream, in chunks.
  StreamClient stream(stub());
  v1::OpenSession open;
  open.set_model(GetParam());
  ASSERT_TRUE(stream.Open(open).has_value()) << StatusString(stream.Finish());
  std::vector<float> streamed;
  std::uniform_int_distribution<int64_t> size(1, 17);
  for (int64_t at = 0; at < n;) {
    const int64_t k = std::min(n - at, size(rng_));
    v1::AppendRequest append;
    *append.mutable_input() = SliceInput(info_, x, at, at + k);
    std::optional<v1::AppendResponse> reply = stream.Append(append);
    ASSERT_TRUE(reply.has_value()) << StatusString(stream.Finish());
    streamed.insert(streamed.end(), reply->outputs().begin(), reply->outputs().end());
    at += k;
  }
  EXPECT_TRUE(stream.Finish().ok());
  EXPECT_LT(RelativeError(streamed, expected), kTolerance) << "stream in chunks";
}

TEST_P(InvariantTest, PrefillThenAppendsEqualsScore) {
  const int64_t n = 260, k = 101;
  const v1::Sequence x = RandomInput(info_, n, rng_);
  const std::vector<float> expected = ScoreAll(stub(), GetParam(), x);

  // Score with prefill, then appends.
  v1::ScoreRequest score;
  score.set_model(GetParam());
  *score.add_sequences() = SliceInput(info_, x, 0, k);
  score.set_prefill(true);
  auto scored = Call(stub(), &AarenStub::Score, score);
  ASSERT_TRUE(scored.ok()) << StatusString(scored.status);
  ASSERT_EQ(scored.response.results_size(), 1);
  std::vector<float> outputs = ToVector(scored.response.results(0).outputs());
  const std::vector<float> rest =
      AppendInChunks(scored.response.results(0).session_id(), x, k, n, 23);
  outputs.insert(outputs.end(), rest.begin(), rest.end());
  EXPECT_LT(RelativeError(outputs, expected), kTolerance) << "Score prefill then appends";

  // CreateSession with a prefix, then appends.
  const std::string id = CreateSession(stub(), GetParam(), SliceInput(info_, x, 0, k));
  EXPECT_LT(RelativeError(AppendInChunks(id, x, k, n, 1), Rows(expected, dim_, k, n)), kTolerance)
      << "CreateSession prefix then token-by-token appends";
}

TEST_P(InvariantTest, RaggedScoreBatchEqualsSingleSequences) {
  const std::vector<int64_t> lengths = {1, 50, 300, 7, 129};
  v1::ScoreRequest score;
  score.set_model(GetParam());
  for (int64_t n : lengths) *score.add_sequences() = RandomInput(info_, n, rng_);
  auto scored = Call(stub(), &AarenStub::Score, score);
  ASSERT_TRUE(scored.ok()) << StatusString(scored.status);
  ASSERT_EQ(scored.response.results_size(), static_cast<int>(lengths.size()));
  // Each sequence alone; the error is relative to the largest output of the whole request (a
  // one-token sequence of a one-output model is a single value that may be close to 0, where
  // float rounding alone is a large fraction of it).
  std::vector<std::vector<float>> alone;
  double scale = 0.0;
  for (int i = 0; i < score.sequences_size(); ++i) {
    alone.push_back(ScoreAll(stub(), GetParam(), score.sequences(i)));
    for (float v : alone.back()) scale = std::max(scale, std::abs(static_cast<double>(v)));
  }
  for (int i = 0; i < score.sequences_size(); ++i) {
    EXPECT_EQ(scored.response.results(i).position(), lengths[static_cast<size_t>(i)]);
    const std::vector<float> batched = ToVector(scored.response.results(i).outputs());
    ASSERT_EQ(batched.size(), alone[static_cast<size_t>(i)].size());
    double max_diff = 0.0;
    for (size_t j = 0; j < batched.size(); ++j) {
      max_diff = std::max(
          max_diff, std::abs(static_cast<double>(batched[j]) - alone[static_cast<size_t>(i)][j]));
    }
    EXPECT_LT(max_diff / scale, kTolerance) << "sequence " << i;
  }
}

TEST_P(InvariantTest, LongPrefixThenStreamEqualsScore) {
  const int64_t n = 3000, k = 2980;
  const v1::Sequence x = RandomInput(info_, n, rng_);
  const std::vector<float> expected = ScoreAll(stub(), GetParam(), x);
  const std::string id = CreateSession(stub(), GetParam(), SliceInput(info_, x, 0, k));
  StreamClient stream(stub());
  v1::OpenSession open;
  open.set_session_id(id);
  std::optional<v1::Session> session = stream.Open(open);
  ASSERT_TRUE(session.has_value()) << StatusString(stream.Finish());
  EXPECT_EQ(session->position(), k);
  std::vector<float> streamed;
  for (int64_t t = k; t < n; ++t) {
    v1::AppendRequest append;
    *append.mutable_input() = SliceInput(info_, x, t, t + 1);
    std::optional<v1::AppendResponse> reply = stream.Append(append);
    ASSERT_TRUE(reply.has_value()) << StatusString(stream.Finish());
    streamed.insert(streamed.end(), reply->outputs().begin(), reply->outputs().end());
  }
  EXPECT_TRUE(stream.Finish().ok());
  EXPECT_LT(RelativeError(streamed, Rows(expected, dim_, k, n)), kTolerance);
}

std::vector<std::string> ModelNames() {
  std::vector<std::string> names = {"demo-lm", "demo-ts"};
  for (const RandomModelSpec& spec : RandomModelSpecs()) names.push_back(spec.name);
  return names;
}

INSTANTIATE_TEST_SUITE_P(Models, InvariantTest, ::testing::ValuesIn(ModelNames()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string name = info.param;
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name;
                         });

}  // namespace
}  // namespace aaren::testing
