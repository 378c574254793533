// SPDX-License-Identifier: Apache-2.0
// Monte-Carlo Attention end to end (aaren.proto McaOptions / McaStats; README, "Monte-Carlo
// Attention" and the --mca_alpha / --mca_seed flags): what Score, Append and Stream report, that
// a seed fixes the result however the tokens arrive (samples are keyed by absolute position),
// retries, and the server's default MCA options.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tests/server/e2e_support.h"

namespace aaren::testing {
namespace {

// The same request again: float32 rounding apart at most. The same samples by another path
// (batched with other sequences, streamed, chunked): rounding differs between the paths, which
// can move a rare token across a sample-count boundary (one sample more or fewer), so further
// apart. Other seeds: clearly apart.
constexpr double kTolerance = 1e-5;
constexpr double kAcrossPaths = 1e-3;
constexpr double kDifferent = 1e-2;
constexpr char kLm[] = "demo-lm";
constexpr char kTs[] = "demo-ts";
constexpr int64_t kLength = 40;
using Code = grpc::StatusCode;

v1::McaOptions Mca(float alpha, uint64_t seed) {
  v1::McaOptions mca;
  mca.set_enabled(true);
  mca.set_alpha(alpha);
  mca.set_seed(seed);
  return mca;
}

// What the exact value projections of `tokens` tokens cost: 2 d_model^2 per token and layer.
uint64_t ExactFlops(const v1::ModelInfo& model, int64_t tokens) {
  return 2ull * model.d_model() * model.d_model() * model.n_layers() *
         static_cast<uint64_t>(tokens);
}

struct Scored {
  std::vector<float> outputs;
  v1::McaStats stats;
};

Scored ScoreWith(AarenStub& stub, const std::string& model, const v1::Sequence& input,
                 const v1::McaOptions* mca) {
  v1::ScoreRequest request;
  request.set_model(model);
  *request.add_sequences() = input;
  if (mca != nullptr) *request.mutable_mca() = *mca;
  auto scored = Call(stub, &AarenStub::Score, request);
  EXPECT_TRUE(scored.ok()) << StatusString(scored.status);
  if (!scored.ok() || scored.response.results_size() != 1) return {};
  return {ToVector(scored.response.results(0).outputs()), scored.response.results(0).mca_stats()};
}

class McaTest : public SharedServerTest<McaTest> {
 public:
  static ServerFlags Flags() {
    ServerFlags flags;
    flags.model_dirs = {DemoModelDir(kLm).string(), DemoModelDir(kTs).string()};
    flags.extra = {"--threads", "2"};
    return flags;
  }

 protected:
  void SetUp() override {
    SharedServerTest<McaTest>::SetUp();
    if (HasFatalFailure()) return;
    lm_ = GetModelInfo(stub(), kLm);
    ts_ = GetModelInfo(stub(), kTs);
  }

  v1::ModelInfo lm_, ts_;
  std::mt19937_64 rng_{20250114};
};

TEST_F(McaTest, ScoreReportsFewerFlopsThanExact) {
  for (const v1::ModelInfo* model : {&lm_, &ts_}) {
    SCOPED_TRACE(model->name());
    const v1::Sequence x = RandomInput(*model, kLength, rng_);
    const Scored exact = ScoreWith(stub(), model->name(), x, nullptr);
    EXPECT_EQ(exact.stats.value_flops(), ExactFlops(*model, kLength));
    EXPECT_EQ(exact.stats.value_flops_exact(), ExactFlops(*model, kLength));

    const v1::McaOptions half = Mca(0.5f, 1);
    const Scored approx = ScoreWith(stub(), model->name(), x, &half);
    EXPECT_EQ(approx.stats.value_flops_exact(), ExactFlops(*model, kLength));
    EXPECT_GT(approx.stats.value_flops(), 0u);
    EXPECT_LT(approx.stats.value_flops(), approx.stats.value_flops_exact());
    ASSERT_EQ(approx.outputs.size(), exact.outputs.size());
    EXPECT_GT(RelativeError(approx.outputs, exact.outputs), kDifferent);

    // alpha 0 spends every sample: the exact cost and the exact result.
    const v1::McaOptions zero = Mca(0.0f, 1);
    const Scored full = ScoreWith(stub(), model->name(), x, &zero);
    EXPECT_EQ(full.stats.value_flops(), full.stats.value_flops_exact());
    EXPECT_EQ(full.stats.value_flops_exact(), ExactFlops(*model, kLength));
    EXPECT_LT(RelativeError(full.outputs, exact.outputs), kTolerance);
  }
}

TEST_F(McaTest, SameSeedSameOutputsOtherSeedOtherOutputs) {
  const v1::Sequence x = RandomInput(lm_, kLength, rng_);
  const v1::McaOptions seed1 = Mca(0.5f, 11);
  const v1::McaOptions seed2 = Mca(0.5f, 12);
  const Scored a = ScoreWith(stub(), kLm, x, &seed1);
  const Scored b = ScoreWith(stub(), kLm, x, &seed1);
  const Scored c = ScoreWith(stub(), kLm, x, &seed2);
  ASSERT_FALSE(a.outputs.empty());
  EXPECT_LT(RelativeError(b.outputs, a.outputs), kTolerance);
  EXPECT_EQ(a.stats.value_flops_exact(), b.stats.value_flops_exact());
  EXPECT_GT(RelativeError(c.outputs, a.outputs), kDifferent);

  // Batched with other sequences, the same sequence gets the same outputs.
  v1::ScoreRequest batch;
  batch.set_model(kLm);
  *batch.add_sequences() = RandomInput(lm_, 17, rng_);
  *batch.add_sequences() = x;
  *batch.add_sequences() = RandomInput(lm_, 5, rng_);
  *batch.mutable_mca() = seed1;
  auto batched = Call(stub(), &AarenStub::Score, batch);
  ASSERT_TRUE(batched.ok()) << StatusString(batched.status);
  EXPECT_LT(RelativeError(ToVector(batched.response.results(1).outputs()), a.outputs),
            kAcrossPaths);
}

TEST_F(McaTest, StreamingTokenByTokenMatchesScore) {
  for (const v1::ModelInfo* model : {&lm_, &ts_}) {
    SCOPED_TRACE(model->name());
    const v1::Sequence x = RandomInput(*model, kLength, rng_);
    const v1::McaOptions mca = Mca(0.5f, 99);
    const Scored scored = ScoreWith(stub(), model->name(), x, &mca);
    const int64_t dim = model->output_dim();

    StreamClient stream(stub());
    v1::OpenSession open;
    open.set_model(model->name());
    ASSERT_TRUE(stream.Open(open).has_value()) << StatusString(stream.Finish());
    std::vector<float> streamed;
    uint64_t spent = 0, exact = 0;
    for (int64_t t = 0; t < kLength; ++t) {
      v1::AppendRequest append;
      *append.mutable_input() = SliceInput(*model, x, t, t + 1);
      *append.mutable_mca() = mca;
      auto reply = stream.Append(append);
      ASSERT_TRUE(reply.has_value()) << StatusString(stream.Finish());
      const std::vector<float> row = ToVector(reply->outputs());
      streamed.insert(streamed.end(), row.begin(), row.end());
      spent += reply->mca_stats().value_flops();
      exact += reply->mca_stats().value_flops_exact();
    }
    EXPECT_TRUE(stream.Finish().ok());
    EXPECT_LT(RelativeError(streamed, scored.outputs), kAcrossPaths);
    EXPECT_EQ(exact, scored.stats.value_flops_exact());
    EXPECT_LT(spent, exact);

    // Unary appends in uneven pieces after an MCA prefix: the same again.
    v1::CreateSessionRequest create;
    create.set_model(model->name());
    *create.mutable_prefix() = SliceInput(*model, x, 0, 7);
    *create.mutable_mca() = mca;
    auto created = Call(stub(), &AarenStub::CreateSession, create);
    ASSERT_TRUE(created.ok()) << StatusString(created.status);
    std::vector<float> pieces;
    for (const auto& [begin, end] : {std::pair<int64_t, int64_t>{7, 8}, {8, 30}, {30, kLength}}) {
      v1::AppendRequest append;
      append.set_session_id(created.response.session_id());
      *append.mutable_input() = SliceInput(*model, x, begin, end);
      *append.mutable_mca() = mca;
      auto appended = Call(stub(), &AarenStub::Append, append);
      ASSERT_TRUE(appended.ok()) << StatusString(appended.status);
      EXPECT_EQ(appended.response.mca_stats().value_flops_exact(), ExactFlops(*model, end - begin));
      const std::vector<float> rows = ToVector(appended.response.outputs());
      pieces.insert(pieces.end(), rows.begin(), rows.end());
    }
    EXPECT_LT(RelativeError(pieces, Rows(scored.outputs, dim, 7, kLength)), kAcrossPaths);
  }
}

TEST_F(McaTest, PrefillKeepsTheMcaState) {
  const v1::Sequence x = RandomInput(lm_, kLength, rng_);
  const v1::McaOptions mca = Mca(0.25f, 5);
  const Scored whole = ScoreWith(stub(), kLm, x, &mca);
  v1::ScoreRequest prefill;
  prefill.set_model(kLm);
  *prefill.add_sequences() = SliceInput(lm_, x, 0, 20);
  *prefill.mutable_mca() = mca;
  prefill.set_prefill(true);
  auto scored = Call(stub(), &AarenStub::Score, prefill);
  ASSERT_TRUE(scored.ok()) << StatusString(scored.status);
  EXPECT_LT(scored.response.results(0).mca_stats().value_flops(),
            scored.response.results(0).mca_stats().value_flops_exact());
  v1::AppendRequest append;
  append.set_session_id(scored.response.results(0).session_id());
  *append.mutable_input() = SliceInput(lm_, x, 20, kLength);
  *append.mutable_mca() = mca;
  auto appended = Call(stub(), &AarenStub::Append, append);
  ASSERT_TRUE(appended.ok()) << StatusString(appended.status);
  EXPECT_LT(RelativeError(ToVector(appended.response.outputs()),
                          Rows(whole.outputs, lm_.output_dim(), 20, kLength)),
            kAcrossPaths);
}

TEST_F(McaTest, RetryMustRepeatTheMcaOptions) {
  const std::string id = CreateSession(stub(), kLm, RandomInput(lm_, 5, rng_));
  v1::AppendRequest append;
  append.set_session_id(id);
  *append.mutable_input() = RandomInput(lm_, 6, rng_);
  append.set_expected_position(5);
  *append.mutable_mca() = Mca(0.5f, 3);
  auto first = Call(stub(), &AarenStub::Append, append);
  ASSERT_TRUE(first.ok()) << StatusString(first.status);
  EXPECT_FALSE(first.response.replayed());

  auto retry = Call(stub(), &AarenStub::Append, append);
  ASSERT_TRUE(retry.ok()) << StatusString(retry.status);
  EXPECT_TRUE(retry.response.replayed());
  EXPECT_EQ(ToVector(retry.response.outputs()), ToVector(first.response.outputs()));
  EXPECT_EQ(retry.response.mca_stats().value_flops(), first.response.mca_stats().value_flops());
  EXPECT_EQ(retry.response.mca_stats().value_flops_exact(),
            first.response.mca_stats().value_flops_exact());

  // Another seed would give other outputs: not the same append.
  append.mutable_mca()->set_seed(4);
  EXPECT_TRUE(HasStatus(Call(stub(), &AarenStub::Append, append).status, Code::ABORTED,
                        {"expected_position", "11"}));
  append.clear_mca();
  EXPECT_TRUE(HasStatus(Call(stub(), &AarenStub::Append, append).status, Code::ABORTED,
                        {"expected_position"}));
  EXPECT_EQ(Call(stub(), &AarenStub::GetSession,
                 [&] {
                   v1::GetSessionRequest get;
                   get.set_session_id(id);
                   return get;
                 }())
                .response.position(),
            11);
}

TEST_F(McaTest, BadAlphaOnAStreamNamesTheAppendField) {
  const std::string id = CreateSession(stub(), kLm, RandomInput(lm_, 4, rng_));
  const std::string before = SnapshotBytes(stub(), id);
  StreamClient stream(stub());
  v1::OpenSession open;
  open.set_session_id(id);
  ASSERT_TRUE(stream.Open(open).has_value()) << StatusString(stream.Finish());
  v1::AppendRequest append;
  *append.mutable_input() = RandomInput(lm_, 2, rng_);
  *append.mutable_mca() = Mca(-0.5f, 0);
  EXPECT_FALSE(stream.Append(append).has_value());
  EXPECT_TRUE(HasStatus(stream.Finish(), Code::INVALID_ARGUMENT, {"append.mca.alpha"}));
  EXPECT_EQ(SnapshotBytes(stub(), id), before);
}

// A server whose operator turned MCA on for every request that does not choose for itself.
class McaDefaultTest : public SharedServerTest<McaDefaultTest> {
 public:
  static constexpr float kAlpha = 0.5f;
  static constexpr uint64_t kSeed = 1234;
  static ServerFlags Flags() {
    ServerFlags flags;
    flags.model_dirs = {DemoModelDir(kLm).string()};
    flags.extra = {"--threads", "2", "--mca_alpha", "0.5", "--mca_seed", std::to_string(kSeed)};
    return flags;
  }

 protected:
  std::mt19937_64 rng_{7};
};

TEST_F(McaDefaultTest, RequestsWithoutMcaUseTheServerDefault) {
  const v1::ModelInfo lm = GetModelInfo(stub(), kLm);
  const v1::Sequence x = RandomInput(lm, kLength, rng_);
  const Scored by_default = ScoreWith(stub(), kLm, x, nullptr);
  EXPECT_LT(by_default.stats.value_flops(), by_default.stats.value_flops_exact());
  const v1::McaOptions same = Mca(kAlpha, kSeed);
  EXPECT_LT(RelativeError(ScoreWith(stub(), kLm, x, &same).outputs, by_default.outputs),
            kTolerance);
  const v1::McaOptions other_seed = Mca(kAlpha, kSeed + 1);
  EXPECT_GT(RelativeError(ScoreWith(stub(), kLm, x, &other_seed).outputs, by_default.outputs),
            kDifferent);

  // A request's own options win: alpha 0 is exact.
  const v1::McaOptions exact = Mca(0.0f, 0);
  const Scored own = ScoreWith(stub(), kLm, x, &exact);
  EXPECT_EQ(own.stats.value_flops(), own.stats.value_flops_exact());

  // Appends too.
  const std::string id = CreateSession(stub(), kLm);
  v1::AppendRequest append;
  append.set_session_id(id);
  *append.mutable_input() = x;
  auto appended = Call(stub(), &AarenStub::Append, append);
  ASSERT_TRUE(appended.ok()) << StatusString(appended.status);
  EXPECT_LT(RelativeError(ToVector(appended.response.outputs()), by_default.outputs), kAcrossPaths);
  EXPECT_LT(appended.response.mca_stats().value_flops(),
            appended.response.mca_stats().value_flops_exact());

  // Generate runs exactly, and works.
  v1::GenerateRequest generate;
  generate.set_session_id(id);
  generate.set_max_tokens(3);
  grpc::ClientContext context;
  auto reader = stub().Generate(&context, generate);
  v1::GenerateResponse token;
  int tokens = 0;
  while (reader->Read(&token)) ++tokens;
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(tokens, 3);
}

}  // namespace
}  // namespace aaren::testing
