// SPDX-License-Identifier: Apache-2.0
// End to end, every RPC of aaren.v1.Aaren against a running aaren-server serving the two demo
// models: what each returns, and that sessions continue exactly where the previous call left.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <regex>
#include <set>

#include "tests/server/e2e_support.h"

namespace aaren::testing {
namespace {

constexpr double kTolerance = 1e-5;
constexpr char kLm[] = "demo-lm";
constexpr char kTs[] = "demo-ts";

class RpcTest : public SharedServerTest<RpcTest> {
 public:
  static ServerFlags Flags() {
    ServerFlags flags;
    flags.model_dirs = {DemoModelDir(kLm).string(), DemoModelDir(kTs).string()};
    flags.extra = {"--threads", "2"};
    return flags;
  }

 protected:
  std::mt19937_64 rng_{20240613};
};

int ArgMax(const std::vector<float>& row) {
  return static_cast<int>(std::max_element(row.begin(), row.end()) - row.begin());
}

double LogSoftmaxAt(const std::vector<float>& row, int index) {
  const double m = *std::max_element(row.begin(), row.end());
  double sum = 0.0;
  for (float v : row) sum += std::exp(static_cast<double>(v) - m);
  return static_cast<double>(row[static_cast<size_t>(index)]) - m - std::log(sum);
}

// Rank of row[index] among the row's values (0 = largest).
int RankOf(const std::vector<float>& row, int index) {
  int rank = 0;
  for (float v : row) rank += v > row[static_cast<size_t>(index)] ? 1 : 0;
  return rank;
}

std::vector<float> FloatsFromBytes(const std::string& bytes) {
  std::vector<float> values(bytes.size() / sizeof(float));
  std::memcpy(values.data(), bytes.data(), values.size() * sizeof(float));
  return values;
}

TEST_F(RpcTest, ListModelsDescribesBothDemoModels) {
  auto listed = Call(stub(), &AarenStub::ListModels, v1::ListModelsRequest());
  ASSERT_TRUE(listed.ok()) << StatusString(listed.status);
  ASSERT_EQ(listed.response.models_size(), 2);
  const v1::ModelInfo& lm = listed.response.models(0);
  const v1::ModelInfo& ts = listed.response.models(1);
  EXPECT_EQ(lm.name(), kLm);  // sorted by name
  EXPECT_EQ(ts.name(), kTs);

  EXPECT_EQ(lm.model_type(), "aaren");
  EXPECT_EQ(lm.d_model(), 128u);
  EXPECT_EQ(lm.n_heads(), 4u);
  EXPECT_EQ(lm.n_layers(), 2u);
  EXPECT_EQ(lm.d_ff(), 512u);
  EXPECT_EQ(lm.input_kind(), "tokens");
  EXPECT_EQ(lm.vocab_size(), 43u);
  EXPECT_EQ(lm.output_dim(), 43u);
  EXPECT_EQ(lm.position(), "sinusoidal");
  EXPECT_EQ(lm.state_bytes(), 2u * 4u * (2u + 32u) * 4u + 8u);

  EXPECT_EQ(ts.model_type(), "aaren");
  EXPECT_EQ(ts.d_model(), 64u);
  EXPECT_EQ(ts.n_heads(), 4u);
  EXPECT_EQ(ts.n_layers(), 2u);
  EXPECT_EQ(ts.d_ff(), 256u);
  EXPECT_EQ(ts.input_kind(), "features");
  EXPECT_EQ(ts.n_features(), 8u);
  EXPECT_EQ(ts.output_dim(), 1u);
  EXPECT_EQ(ts.position(), "none");
  EXPECT_EQ(ts.state_bytes(), 2u * 4u * (2u + 16u) * 4u + 8u);

  for (const v1::ModelInfo* info : {&lm, &ts}) {
    auto model = Model::Load(DemoModelDir(info->name()));
    ASSERT_TRUE(model.ok()) << model.status();
    EXPECT_EQ(info->num_parameters(), static_cast<uint64_t>((*model)->num_parameters()))
        << info->name();
    EXPECT_FALSE(info->config_hash().empty()) << info->name();
    EXPECT_TRUE(info->backend() == "cpu" || info->backend() == "cuda") << info->backend();
  }
  EXPECT_NE(lm.config_hash(), ts.config_hash());
}

TEST_F(RpcTest, ScoreOutputModesMatchTheOracle) {
  const v1::ModelInfo info = GetModelInfo(stub(), kLm);
  auto model = Model::Load(DemoModelDir(kLm));
  ASSERT_TRUE(model.ok()) << model.status();
  const std::vector<int64_t> lengths = {17, 5, 1};
  v1::ScoreRequest request;
  request.set_model(kLm);
  for (int64_t n : lengths) *request.add_sequences() = RandomInput(info, n, rng_);
  const int64_t dim = info.output_dim();

  request.set_output_mode(v1::OUTPUT_MODE_ALL);
  auto all = Call(stub(), &AarenStub::Score, request);
  ASSERT_TRUE(all.ok()) << StatusString(all.status);
  ASSERT_EQ(all.response.results_size(), 3);
  request.set_output_mode(v1::OUTPUT_MODE_LAST);
  auto last = Call(stub(), &AarenStub::Score, request);
  ASSERT_TRUE(last.ok()) << StatusString(last.status);
  ASSERT_EQ(last.response.results_size(), 3);
  request.set_output_mode(v1::OUTPUT_MODE_NONE);
  auto none = Call(stub(), &AarenStub::Score, request);
  ASSERT_TRUE(none.ok()) << StatusString(none.status);
  ASSERT_EQ(none.response.results_size(), 3);

  for (int i = 0; i < 3; ++i) {
    SCOPED_TRACE(::testing::Message() << "sequence " << i << " of length " << lengths[i]);
    const int64_t n = lengths[static_cast<size_t>(i)];
    const v1::SequenceResult& a = all.response.results(i);
    EXPECT_EQ(a.output_dim(), static_cast<uint32_t>(dim));
    EXPECT_EQ(a.position(), n);
    EXPECT_TRUE(a.session_id().empty()) << "no prefill, no session: " << a.session_id();
    const std::vector<float> outputs = ToVector(a.outputs());
    ASSERT_EQ(static_cast<int64_t>(outputs.size()), n * dim);
    EXPECT_LT(RelativeError(outputs, OracleOutputs(**model, request.sequences(i))), kTolerance);

    const v1::SequenceResult& l = last.response.results(i);
    EXPECT_EQ(l.output_dim(), static_cast<uint32_t>(dim));
    EXPECT_EQ(l.position(), n);
    EXPECT_LT(RelativeError(ToVector(l.outputs()), Rows(outputs, dim, n - 1, n)), kTolerance);

    const v1::SequenceResult& z = none.response.results(i);
    EXPECT_EQ(z.outputs_size(), 0);
    EXPECT_EQ(z.position(), n);
  }
}

TEST_F(RpcTest, ScorePrefillMakesSessionsThatAppendContinues) {
  for (const char* name : {kLm, kTs}) {
    SCOPED_TRACE(name);
    const v1::ModelInfo info = GetModelInfo(stub(), name);
    const int64_t dim = info.output_dim();
    const v1::Sequence a = RandomInput(info, 20, rng_);
    const v1::Sequence b = RandomInput(info, 9, rng_);
    const v1::Sequence more = RandomInput(info, 10, rng_);
    v1::ScoreRequest request;
    request.set_model(name);
    *request.add_sequences() = a;
    *request.add_sequences() = b;
    request.set_prefill(true);
    request.set_idle_ttl_seconds(600);
    auto scored = Call(stub(), &AarenStub::Score, request);
    ASSERT_TRUE(scored.ok()) << StatusString(scored.status);
    ASSERT_EQ(scored.response.results_size(), 2);
    const std::string id_a = scored.response.results(0).session_id();
    const std::string id_b = scored.response.results(1).session_id();
    ASSERT_FALSE(id_a.empty());
    ASSERT_FALSE(id_b.empty());
    EXPECT_NE(id_a, id_b);
    EXPECT_LT(
        RelativeError(ToVector(scored.response.results(0).outputs()), ScoreAll(stub(), name, a)),
        kTolerance);

    v1::GetSessionRequest get;
    get.set_session_id(id_a);
    auto session = Call(stub(), &AarenStub::GetSession, get);
    ASSERT_TRUE(session.ok()) << StatusString(session.status);
    EXPECT_EQ(session.response.position(), 20);
    EXPECT_EQ(session.response.model(), name);
    EXPECT_EQ(session.response.idle_ttl_seconds(), 600u);
    get.set_session_id(id_b);
    session = Call(stub(), &AarenStub::GetSession, get);
    ASSERT_TRUE(session.ok()) << StatusString(session.status);
    EXPECT_EQ(session.response.position(), 9);

    v1::AppendRequest append;
    append.set_session_id(id_a);
    *append.mutable_input() = more;
    auto appended = Call(stub(), &AarenStub::Append, append);
    ASSERT_TRUE(appended.ok()) << StatusString(appended.status);
    EXPECT_EQ(appended.response.position(), 30);
    const std::vector<float> expected = ScoreAll(stub(), name, ConcatInput(a, more));
    EXPECT_LT(RelativeError(ToVector(appended.response.outputs()), Rows(expected, dim, 20, 30)),
              kTolerance);
  }
}

TEST_F(RpcTest, CreateSessionWithPrefixClientIdAndTtl) {
  const v1::ModelInfo info = GetModelInfo(stub(), kLm);
  const std::regex server_id("[0-9a-f]{32}");
  v1::CreateSessionRequest request;
  request.set_model(kLm);
  auto first = Call(stub(), &AarenStub::CreateSession, request);
  auto second = Call(stub(), &AarenStub::CreateSession, request);
  ASSERT_TRUE(first.ok()) << StatusString(first.status);
  ASSERT_TRUE(second.ok()) << StatusString(second.status);
  EXPECT_TRUE(std::regex_match(first.response.session_id(), server_id))
      << first.response.session_id();
  EXPECT_NE(first.response.session_id(), second.response.session_id());
  EXPECT_EQ(first.response.position(), 0);
  EXPECT_EQ(first.response.model(), kLm);
  EXPECT_EQ(first.response.state_bytes(), info.state_bytes());
  EXPECT_GT(first.response.idle_ttl_seconds(), 0u) << "the server default TTL";

  request.set_session_id("rpc-test.Client_id-1");
  *request.mutable_prefix() = RandomInput(info, 12, rng_);
  request.set_idle_ttl_seconds(77);
  auto named = Call(stub(), &AarenStub::CreateSession, request);
  ASSERT_TRUE(named.ok()) << StatusString(named.status);
  EXPECT_EQ(named.response.session_id(), "rpc-test.Client_id-1");
  EXPECT_EQ(named.response.position(), 12);
  EXPECT_EQ(named.response.idle_ttl_seconds(), 77u);
  EXPECT_EQ(named.response.model(), kLm);
  // The prefix's state: an append continues from it.
  v1::AppendRequest append;
  append.set_session_id("rpc-test.Client_id-1");
  *append.mutable_input() = RandomInput(info, 3, rng_);
  auto appended = Call(stub(), &AarenStub::Append, append);
  ASSERT_TRUE(appended.ok()) << StatusString(appended.status);
  EXPECT_EQ(appended.response.position(), 15);
  const std::vector<float> expected =
      ScoreAll(stub(), kLm, ConcatInput(request.prefix(), append.input()));
  EXPECT_LT(RelativeError(ToVector(appended.response.outputs()), Rows(expected, 43, 12, 15)),
            kTolerance);
}

TEST_F(RpcTest, AppendOutputModesAndPositions) {
  const v1::ModelInfo info = GetModelInfo(stub(), kLm);
  const std::string id = CreateSession(stub(), kLm);
  ASSERT_FALSE(id.empty());
  const v1::Sequence x = RandomInput(info, 10, rng_);
  const std::vector<float> expected = ScoreAll(stub(), kLm, x);

  v1::AppendRequest append;
  append.set_session_id(id);
  *append.mutable_input() = SliceInput(info, x, 0, 5);
  auto r1 = Call(stub(), &AarenStub::Append, append);
  ASSERT_TRUE(r1.ok()) << StatusString(r1.status);
  EXPECT_EQ(r1.response.output_dim(), 43u);
  EXPECT_EQ(r1.response.position(), 5);
  EXPECT_EQ(r1.response.session_id(), id);
  EXPECT_FALSE(r1.response.replayed());
  EXPECT_LT(RelativeError(ToVector(r1.response.outputs()), Rows(expected, 43, 0, 5)), kTolerance);

  *append.mutable_input() = SliceInput(info, x, 5, 8);
  append.set_output_mode(v1::OUTPUT_MODE_LAST);
  auto r2 = Call(stub(), &AarenStub::Append, append);
  ASSERT_TRUE(r2.ok()) << StatusString(r2.status);
  EXPECT_EQ(r2.response.position(), 8);
  EXPECT_LT(RelativeError(ToVector(r2.response.outputs()), Rows(expected, 43, 7, 8)), kTolerance);

  *append.mutable_input() = SliceInput(info, x, 8, 10);
  append.set_output_mode(v1::OUTPUT_MODE_NONE);
  append.set_expected_position(8);
  auto r3 = Call(stub(), &AarenStub::Append, append);
  ASSERT_TRUE(r3.ok()) << StatusString(r3.status);
  EXPECT_EQ(r3.response.position(), 10);
  EXPECT_EQ(r3.response.outputs_size(), 0);

  // The session's last output is the last token's row, whatever the mode of the last append.
  v1::ExportSessionRequest export_request;
  export_request.set_session_id(id);
  auto exported = Call(stub(), &AarenStub::ExportSession, export_request);
  ASSERT_TRUE(exported.ok()) << StatusString(exported.status);
  EXPECT_LT(RelativeError(FloatsFromBytes(exported.response.snapshot().last_output()),
                          Rows(expected, 43, 9, 10)),
            kTolerance);
}

TEST_F(RpcTest, StreamCreatesAttachesAndAppends) {
  const v1::ModelInfo info = GetModelInfo(stub(), kLm);
  const v1::Sequence x = RandomInput(info, 16, rng_);
  const std::vector<float> expected = ScoreAll(stub(), kLm, x);
  std::string id;
  {
    StreamClient stream(stub());
    v1::OpenSession open;
    open.set_model(kLm);
    std::optional<v1::Session> session = stream.Open(open);
    ASSERT_TRUE(session.has_value()) << StatusString(stream.Finish());
    id = session->session_id();
    EXPECT_TRUE(std::regex_match(id, std::regex("[0-9a-f]{32}"))) << id;
    EXPECT_EQ(session->position(), 0);
    EXPECT_EQ(session->model(), kLm);
    for (int64_t t = 0; t < 10; ++t) {
      v1::AppendRequest append;  // session_id empty: the opened session
      *append.mutable_input() = SliceInput(info, x, t, t + 1);
      std::optional<v1::AppendResponse> reply = stream.Append(append);
      ASSERT_TRUE(reply.has_value()) << StatusString(stream.Finish());
      EXPECT_EQ(reply->position(), t + 1);
      EXPECT_LT(RelativeError(ToVector(reply->outputs()), Rows(expected, 43, t, t + 1)), kTolerance)
          << "token " << t;
    }
    EXPECT_TRUE(stream.Finish().ok());
  }
  {
    // A second stream attaches to the same session and continues at position 10.
    StreamClient stream(stub());
    v1::OpenSession open;
    open.set_session_id(id);
    std::optional<v1::Session> session = stream.Open(open);
    ASSERT_TRUE(session.has_value()) << StatusString(stream.Finish());
    EXPECT_EQ(session->session_id(), id);
    EXPECT_EQ(session->position(), 10);
    v1::AppendRequest append;
    append.set_session_id(id);
    append.set_expected_position(10);
    *append.mutable_input() = SliceInput(info, x, 10, 16);
    std::optional<v1::AppendResponse> reply = stream.Append(append);
    ASSERT_TRUE(reply.has_value()) << StatusString(stream.Finish());
    EXPECT_EQ(reply->position(), 16);
    EXPECT_LT(RelativeError(ToVector(reply->outputs()), Rows(expected, 43, 10, 16)), kTolerance);
    EXPECT_TRUE(stream.Finish().ok());
  }
  {
    // create_if_missing with a client-chosen id, on the features model.
    const v1::ModelInfo ts = GetModelInfo(stub(), kTs);
    const v1::Sequence f = RandomInput(ts, 4, rng_);
    StreamClient stream(stub());
    v1::OpenSession open;
    open.set_session_id("stream-created-1");
    open.set_model(kTs);
    open.set_create_if_missing(true);
    open.set_idle_ttl_seconds(123);
    std::optional<v1::Session> session = stream.Open(open);
    ASSERT_TRUE(session.has_value()) << StatusString(stream.Finish());
    EXPECT_EQ(session->session_id(), "stream-created-1");
    EXPECT_EQ(session->model(), kTs);
    EXPECT_EQ(session->position(), 0);
    EXPECT_EQ(session->idle_ttl_seconds(), 123u);
    v1::AppendRequest append;
    *append.mutable_input() = f;
    std::optional<v1::AppendResponse> reply = stream.Append(append);
    ASSERT_TRUE(reply.has_value()) << StatusString(stream.Finish());
    EXPECT_EQ(reply->position(), 4);
    EXPECT_EQ(reply->output_dim(), 1u);
    EXPECT_LT(RelativeError(ToVector(reply->outputs()), ScoreAll(stub(), kTs, f)), kTolerance);
    EXPECT_TRUE(stream.Finish().ok());
    // create_if_missing on an existing id attaches.
    StreamClient again(stub());
    session = again.Open(open);
    ASSERT_TRUE(session.has_value()) << StatusString(again.Finish());
    EXPECT_EQ(session->position(), 4);
    EXPECT_TRUE(again.Finish().ok());
  }
}

TEST_F(RpcTest, StreamWithPipelinedAppendsAnswersInOrder) {
  const v1::ModelInfo info = GetModelInfo(stub(), kTs);
  constexpr int64_t kTokens = 200;
  const v1::Sequence x = RandomInput(info, kTokens, rng_);
  const std::vector<float> expected = ScoreAll(stub(), kTs, x);
  StreamClient stream(stub());
  v1::OpenSession open;
  open.set_model(kTs);
  ASSERT_TRUE(stream.Open(open).has_value()) << StatusString(stream.Finish());
  // Every append is written before any reply is read.
  for (int64_t t = 0; t < kTokens; ++t) {
    v1::StreamRequest request;
    *request.mutable_append()->mutable_input() = SliceInput(info, x, t, t + 1);
    ASSERT_TRUE(stream.Write(request)) << "write " << t;
  }
  std::vector<float> streamed;
  for (int64_t t = 0; t < kTokens; ++t) {
    v1::StreamResponse response;
    ASSERT_TRUE(stream.Read(&response)) << "reply " << t << ": " << StatusString(stream.Finish());
    ASSERT_TRUE(response.has_append());
    EXPECT_EQ(response.append().position(), t + 1);
    streamed.insert(streamed.end(), response.append().outputs().begin(),
                    response.append().outputs().end());
  }
  EXPECT_TRUE(stream.Finish().ok());
  EXPECT_LT(RelativeError(streamed, expected), kTolerance);
}

// Greedy generation on `session_id` (which continues `prompt`): tokens, checked against Score.
TEST_F(RpcTest, GenerateGreedyIsArgmaxOfOutputs) {
  const v1::ModelInfo info = GetModelInfo(stub(), kLm);
  const v1::Sequence prompt = RandomInput(info, 8, rng_);
  const std::string id = CreateSession(stub(), kLm, prompt);
  ASSERT_FALSE(id.empty());
  v1::GenerateRequest request;
  request.set_session_id(id);
  request.set_max_tokens(12);
  request.set_temperature(0.0f);
  grpc::ClientContext context;
  auto reader = stub().Generate(&context, request);
  std::vector<v1::GenerateResponse> generated;
  v1::GenerateResponse response;
  while (reader->Read(&response)) generated.push_back(response);
  const grpc::Status status = reader->Finish();
  ASSERT_TRUE(status.ok()) << StatusString(status);
  ASSERT_EQ(generated.size(), 12u);

  v1::Sequence all = prompt;
  for (size_t i = 0; i < generated.size(); ++i) {
    EXPECT_EQ(generated[i].position(), static_cast<int64_t>(8 + i + 1));
    all.add_tokens(generated[i].token());
  }
  const std::vector<float> outputs = ScoreAll(stub(), kLm, all);
  for (size_t i = 0; i < generated.size(); ++i) {
    const std::vector<float> row =
        Rows(outputs, 43, static_cast<int64_t>(8 + i - 1), static_cast<int64_t>(8 + i));
    EXPECT_EQ(generated[i].token(), ArgMax(row)) << "step " << i;
    EXPECT_NEAR(generated[i].logprob(), LogSoftmaxAt(row, generated[i].token()), 1e-4)
        << "step " << i;
  }
  v1::GetSessionRequest get;
  get.set_session_id(id);
  auto session = Call(stub(), &AarenStub::GetSession, get);
  ASSERT_TRUE(session.ok()) << StatusString(session.status);
  EXPECT_EQ(session.response.position(), 20);
  // The generated tokens were appended: the session's next output continues the sequence.
  v1::AppendRequest append;
  append.set_session_id(id);
  append.mutable_input()->add_tokens(5);
  auto appended = Call(stub(), &AarenStub::Append, append);
  ASSERT_TRUE(appended.ok()) << StatusString(appended.status);
  all.add_tokens(5);
  EXPECT_LT(RelativeError(ToVector(appended.response.outputs()),
                          Rows(ScoreAll(stub(), kLm, all), 43, 20, 21)),
            kTolerance);
}

std::vector<v1::GenerateResponse> Generate(AarenStub& stub, const v1::GenerateRequest& request,
                                           grpc::Status* status) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
  auto reader = stub.Generate(&context, request);
  std::vector<v1::GenerateResponse> out;
  v1::GenerateResponse response;
  while (reader->Read(&response)) out.push_back(response);
  *status = reader->Finish();
  return out;
}

std::vector<int32_t> TokensOf(const std::vector<v1::GenerateResponse>& responses) {
  std::vector<int32_t> tokens;
  for (const auto& r : responses) tokens.push_back(r.token());
  return tokens;
}

TEST_F(RpcTest, GeneratePromptOnFreshSessionEqualsPrefixSession) {
  const v1::ModelInfo info = GetModelInfo(stub(), kLm);
  const v1::Sequence prompt = RandomInput(info, 5, rng_);
  const std::string fresh = CreateSession(stub(), kLm);
  const std::string prefixed = CreateSession(stub(), kLm, prompt);
  v1::GenerateRequest request;
  request.set_max_tokens(6);
  request.set_session_id(fresh);
  *request.mutable_prompt() = prompt;
  grpc::Status status;
  const auto a = Generate(stub(), request, &status);
  ASSERT_TRUE(status.ok()) << StatusString(status);
  request.set_session_id(prefixed);
  request.clear_prompt();
  const auto b = Generate(stub(), request, &status);
  ASSERT_TRUE(status.ok()) << StatusString(status);
  ASSERT_EQ(a.size(), 6u);
  EXPECT_EQ(TokensOf(a), TokensOf(b));
  EXPECT_EQ(a.front().position(), 6);
  EXPECT_EQ(a.back().position(), 11);
}

TEST_F(RpcTest, GenerateSameSeedOnTwoForksGivesTheSameTokens) {
  const v1::ModelInfo info = GetModelInfo(stub(), kLm);
  const v1::Sequence prompt = RandomInput(info, 10, rng_);
  const std::string source = CreateSession(stub(), kLm, prompt);
  auto fork = [&]() {
    v1::ForkSessionRequest request;
    request.set_session_id(source);
    auto forked = Call(stub(), &AarenStub::ForkSession, request);
    EXPECT_TRUE(forked.ok()) << StatusString(forked.status);
    return forked.response.session_id();
  };
  v1::GenerateRequest request;
  request.set_max_tokens(24);
  request.set_temperature(0.9f);
  request.set_top_k(5);
  request.set_seed(1234);
  grpc::Status status;
  request.set_session_id(fork());
  const auto a = Generate(stub(), request, &status);
  ASSERT_TRUE(status.ok()) << StatusString(status);
  request.set_session_id(fork());
  const auto b = Generate(stub(), request, &status);
  ASSERT_TRUE(status.ok()) << StatusString(status);
  ASSERT_EQ(a.size(), 24u);
  EXPECT_EQ(TokensOf(a), TokensOf(b));

  // Every sampled token is among the top_k of its step's logits.
  v1::Sequence all = prompt;
  for (const auto& r : a) all.add_tokens(r.token());
  const std::vector<float> outputs = ScoreAll(stub(), kLm, all);
  for (size_t i = 0; i < a.size(); ++i) {
    const std::vector<float> row =
        Rows(outputs, 43, static_cast<int64_t>(10 + i - 1), static_cast<int64_t>(10 + i));
    EXPECT_LT(RankOf(row, a[i].token()), 5) << "step " << i << " sampled outside the top 5";
    EXPECT_NEAR(a[i].logprob(), LogSoftmaxAt(row, a[i].token()), 1e-4) << "step " << i;
  }

  // top_k = 1 is greedy whatever the temperature and seed.
  request.set_top_k(1);
  request.set_seed(7);
  request.set_session_id(fork());
  const auto k1 = Generate(stub(), request, &status);
  ASSERT_TRUE(status.ok()) << StatusString(status);
  v1::GenerateRequest greedy;
  greedy.set_max_tokens(24);
  greedy.set_session_id(fork());
  const auto g = Generate(stub(), greedy, &status);
  ASSERT_TRUE(status.ok()) << StatusString(status);
  EXPECT_EQ(TokensOf(k1), TokensOf(g));

  // A hot temperature with different seeds does sample different continuations.
  request.set_top_k(0);
  request.set_temperature(3.0f);
  std::set<std::vector<int32_t>> distinct;
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    request.set_seed(seed);
    request.set_session_id(fork());
    distinct.insert(TokensOf(Generate(stub(), request, &status)));
    ASSERT_TRUE(status.ok()) << StatusString(status);
  }
  EXPECT_GT(distinct.size(), 1u) << "4 seeds at temperature 3 gave identical samples";
}

TEST_F(RpcTest, GenerateStopsAtAStopToken) {
  const v1::ModelInfo info = GetModelInfo(stub(), kLm);
  const v1::Sequence prompt = RandomInput(info, 6, rng_);
  const std::string a = CreateSession(stub(), kLm, prompt);
  const std::string b = CreateSession(stub(), kLm, prompt);
  v1::GenerateRequest request;
  request.set_session_id(a);
  request.set_max_tokens(10);
  grpc::Status status;
  const std::vector<int32_t> full = TokensOf(Generate(stub(), request, &status));
  ASSERT_TRUE(status.ok()) << StatusString(status);
  ASSERT_EQ(full.size(), 10u);
  const int32_t stop = full[3];
  const size_t first =
      static_cast<size_t>(std::find(full.begin(), full.end(), stop) - full.begin());
  request.set_session_id(b);
  request.add_stop_tokens(stop);
  const std::vector<int32_t> stopped = TokensOf(Generate(stub(), request, &status));
  ASSERT_TRUE(status.ok()) << StatusString(status);
  EXPECT_EQ(stopped, std::vector<int32_t>(full.begin(), full.begin() + first + 1));
  v1::GetSessionRequest get;
  get.set_session_id(b);
  auto session = Call(stub(), &AarenStub::GetSession, get);
  EXPECT_EQ(session.response.position(), static_cast<int64_t>(6 + first + 1));
}

TEST_F(RpcTest, GetSessionReportsItsFields) {
  const v1::ModelInfo info = GetModelInfo(stub(), kTs);
  const int64_t before = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  const std::string id = CreateSession(stub(), kTs, RandomInput(info, 3, rng_));
  v1::GetSessionRequest get;
  get.set_session_id(id);
  auto session = Call(stub(), &AarenStub::GetSession, get);
  ASSERT_TRUE(session.ok()) << StatusString(session.status);
  const v1::Session& s = session.response;
  EXPECT_EQ(s.session_id(), id);
  EXPECT_EQ(s.model(), kTs);
  EXPECT_EQ(s.position(), 3);
  EXPECT_EQ(s.state_bytes(), info.state_bytes());
  EXPECT_EQ(s.tier(), v1::SESSION_TIER_POOL);
  EXPECT_GT(s.idle_ttl_seconds(), 0u);
  EXPECT_GE(s.created_unix_ms(), before - 2000);
  EXPECT_LE(s.created_unix_ms(), before + 60000);
  EXPECT_GE(s.last_used_unix_ms(), s.created_unix_ms());
}

TEST_F(RpcTest, DeleteSessionRemovesIt) {
  const std::string id = CreateSession(stub(), kLm, {}, "rpc-delete-me");
  ASSERT_EQ(id, "rpc-delete-me");
  v1::DeleteSessionRequest del;
  del.set_session_id(id);
  auto deleted = Call(stub(), &AarenStub::DeleteSession, del);
  ASSERT_TRUE(deleted.ok()) << StatusString(deleted.status);
  v1::GetSessionRequest get;
  get.set_session_id(id);
  EXPECT_TRUE(HasStatus(Call(stub(), &AarenStub::GetSession, get).status,
                        grpc::StatusCode::NOT_FOUND, {id}));
  v1::AppendRequest append;
  append.set_session_id(id);
  append.mutable_input()->add_tokens(1);
  EXPECT_TRUE(HasStatus(Call(stub(), &AarenStub::Append, append).status,
                        grpc::StatusCode::NOT_FOUND, {"session_id"}));
  EXPECT_TRUE(HasStatus(Call(stub(), &AarenStub::DeleteSession, del).status,
                        grpc::StatusCode::NOT_FOUND, {id}));
  // The id is free again.
  EXPECT_EQ(CreateSession(stub(), kLm, {}, "rpc-delete-me"), "rpc-delete-me");
}

TEST_F(RpcTest, ForkCopiesTheStateIndependently) {
  const v1::ModelInfo info = GetModelInfo(stub(), kLm);
  const v1::Sequence prefix = RandomInput(info, 15, rng_);
  const v1::Sequence x = RandomInput(info, 7, rng_);
  const v1::Sequence y = RandomInput(info, 4, rng_);
  const std::string source = CreateSession(stub(), kLm, prefix);
  v1::ForkSessionRequest fork;
  fork.set_session_id(source);
  fork.set_new_session_id("rpc-fork-1");
  fork.set_idle_ttl_seconds(321);
  auto forked = Call(stub(), &AarenStub::ForkSession, fork);
  ASSERT_TRUE(forked.ok()) << StatusString(forked.status);
  EXPECT_EQ(forked.response.session_id(), "rpc-fork-1");
  EXPECT_EQ(forked.response.position(), 15);
  EXPECT_EQ(forked.response.model(), kLm);
  EXPECT_EQ(forked.response.idle_ttl_seconds(), 321u);
  EXPECT_EQ(SnapshotBytes(stub(), "rpc-fork-1"), SnapshotBytes(stub(), source));

  v1::AppendRequest append;
  append.set_session_id("rpc-fork-1");
  *append.mutable_input() = x;
  auto on_fork = Call(stub(), &AarenStub::Append, append);
  ASSERT_TRUE(on_fork.ok()) << StatusString(on_fork.status);
  EXPECT_LT(RelativeError(ToVector(on_fork.response.outputs()),
                          Rows(ScoreAll(stub(), kLm, ConcatInput(prefix, x)), 43, 15, 22)),
            kTolerance);
  // The source did not see the fork's append.
  append.set_session_id(source);
  *append.mutable_input() = y;
  auto on_source = Call(stub(), &AarenStub::Append, append);
  ASSERT_TRUE(on_source.ok()) << StatusString(on_source.status);
  EXPECT_EQ(on_source.response.position(), 19);
  EXPECT_LT(RelativeError(ToVector(on_source.response.outputs()),
                          Rows(ScoreAll(stub(), kLm, ConcatInput(prefix, y)), 43, 15, 19)),
            kTolerance);

  // Server-made id for the fork.
  fork.clear_new_session_id();
  forked = Call(stub(), &AarenStub::ForkSession, fork);
  ASSERT_TRUE(forked.ok()) << StatusString(forked.status);
  EXPECT_TRUE(std::regex_match(forked.response.session_id(), std::regex("[0-9a-f]{32}")));
  EXPECT_EQ(forked.response.position(), 19);
}

TEST_F(RpcTest, ExportImportRoundTripContinuesIdentically) {
  for (const char* name : {kLm, kTs}) {
    SCOPED_TRACE(name);
    const v1::ModelInfo info = GetModelInfo(stub(), name);
    const int64_t dim = info.output_dim();
    const int64_t d_head = info.d_model() / info.n_heads();
    const v1::Sequence prefix = RandomInput(info, 11, rng_);
    const v1::Sequence x = RandomInput(info, 6, rng_);
    const std::string source = CreateSession(stub(), name, prefix);

    v1::ExportSessionRequest export_request;
    export_request.set_session_id(source);
    auto exported = Call(stub(), &AarenStub::ExportSession, export_request);
    ASSERT_TRUE(exported.ok()) << StatusString(exported.status);
    const v1::SessionSnapshot& snapshot = exported.response.snapshot();
    EXPECT_EQ(snapshot.format_version(), 1u);
    EXPECT_EQ(snapshot.model(), name);
    EXPECT_EQ(snapshot.config_hash(), info.config_hash());
    EXPECT_EQ(snapshot.position(), 11);
    EXPECT_EQ(snapshot.n_layers(), info.n_layers());
    EXPECT_EQ(snapshot.n_heads(), info.n_heads());
    EXPECT_EQ(snapshot.d_head(), static_cast<uint32_t>(d_head));
    EXPECT_EQ(snapshot.state().size(), info.n_layers() * info.n_heads() * (2 + d_head) * 4);
    EXPECT_EQ(snapshot.output_dim(), static_cast<uint32_t>(dim));
    EXPECT_GT(snapshot.exported_unix_ms(), 0);
    const std::vector<float> scored = ScoreAll(stub(), name, prefix);
    EXPECT_LT(RelativeError(FloatsFromBytes(snapshot.last_output()), Rows(scored, dim, 10, 11)),
              kTolerance);

    v1::ImportSessionRequest import;
    *import.mutable_snapshot() = snapshot;
    import.set_idle_ttl_seconds(99);
    auto imported = Call(stub(), &AarenStub::ImportSession, import);
    ASSERT_TRUE(imported.ok()) << StatusString(imported.status);
    const std::string copy = imported.response.session_id();
    EXPECT_NE(copy, source);
    EXPECT_EQ(imported.response.position(), 11);
    EXPECT_EQ(imported.response.model(), name);
    EXPECT_EQ(imported.response.idle_ttl_seconds(), 99u);
    EXPECT_EQ(SnapshotBytes(stub(), copy), SnapshotBytes(stub(), source));

    // Both continue identically.
    v1::AppendRequest append;
    *append.mutable_input() = x;
    append.set_session_id(source);
    auto a = Call(stub(), &AarenStub::Append, append);
    append.set_session_id(copy);
    auto b = Call(stub(), &AarenStub::Append, append);
    ASSERT_TRUE(a.ok()) << StatusString(a.status);
    ASSERT_TRUE(b.ok()) << StatusString(b.status);
    EXPECT_EQ(b.response.position(), 17);
    // Same state bytes, same input: the same outputs up to the float32 rounding of the backend
    // (its reductions may sum in an order that depends on buffer alignment, so not bitwise).
    EXPECT_LT(RelativeError(ToVector(b.response.outputs()), ToVector(a.response.outputs())), 1e-6);
    EXPECT_LT(RelativeError(ToVector(b.response.outputs()),
                            Rows(ScoreAll(stub(), name, ConcatInput(prefix, x)), dim, 11, 17)),
              kTolerance);

    // A client-chosen id for the import.
    import.set_session_id(std::string("rpc-imported-") + name);
    imported = Call(stub(), &AarenStub::ImportSession, import);
    ASSERT_TRUE(imported.ok()) << StatusString(imported.status);
    EXPECT_EQ(imported.response.session_id(), std::string("rpc-imported-") + name);
  }
}

TEST_F(RpcTest, ImportedSessionGeneratesLikeTheOriginal) {
  const v1::ModelInfo info = GetModelInfo(stub(), kLm);
  const std::string source = CreateSession(stub(), kLm, RandomInput(info, 9, rng_));
  v1::ExportSessionRequest export_request;
  export_request.set_session_id(source);
  auto exported = Call(stub(), &AarenStub::ExportSession, export_request);
  ASSERT_TRUE(exported.ok()) << StatusString(exported.status);
  v1::ImportSessionRequest import;
  *import.mutable_snapshot() = exported.response.snapshot();
  auto imported = Call(stub(), &AarenStub::ImportSession, import);
  ASSERT_TRUE(imported.ok()) << StatusString(imported.status);
  v1::GenerateRequest request;
  request.set_max_tokens(8);
  request.set_temperature(0.7f);
  request.set_seed(42);
  grpc::Status status;
  request.set_session_id(source);
  const auto a = Generate(stub(), request, &status);
  ASSERT_TRUE(status.ok()) << StatusString(status);
  request.set_session_id(imported.response.session_id());
  const auto b = Generate(stub(), request, &status);
  ASSERT_TRUE(status.ok()) << StatusString(status);
  EXPECT_EQ(TokensOf(a), TokensOf(b));
}

TEST_F(RpcTest, ImportOfAFreshSessionSnapshot) {
  const std::string source = CreateSession(stub(), kTs);
  v1::ExportSessionRequest export_request;
  export_request.set_session_id(source);
  auto exported = Call(stub(), &AarenStub::ExportSession, export_request);
  ASSERT_TRUE(exported.ok()) << StatusString(exported.status);
  EXPECT_EQ(exported.response.snapshot().position(), 0);
  EXPECT_TRUE(exported.response.snapshot().last_output().empty());
  v1::ImportSessionRequest import;
  *import.mutable_snapshot() = exported.response.snapshot();
  auto imported = Call(stub(), &AarenStub::ImportSession, import);
  ASSERT_TRUE(imported.ok()) << StatusString(imported.status);
  const v1::ModelInfo info = GetModelInfo(stub(), kTs);
  const v1::Sequence x = RandomInput(info, 5, rng_);
  v1::AppendRequest append;
  append.set_session_id(imported.response.session_id());
  *append.mutable_input() = x;
  auto appended = Call(stub(), &AarenStub::Append, append);
  ASSERT_TRUE(appended.ok()) << StatusString(appended.status);
  EXPECT_LT(RelativeError(ToVector(appended.response.outputs()), ScoreAll(stub(), kTs, x)),
            kTolerance);
}

}  // namespace
}  // namespace aaren::testing
