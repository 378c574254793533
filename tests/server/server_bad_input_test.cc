// SPDX-License-Identifier: Apache-2.0
// Bad input end to end (DESIGN.md section 4, the error table of aaren.proto): each bad request
// gets its exact status code and a message naming the field, and leaves the session it targeted
// exactly as it was (its exported snapshot is byte-identical before and after, and an append
// afterwards continues from the old state). The server runs with --max_sequence_tokens 64.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "tests/server/e2e_support.h"

namespace aaren::testing {
namespace {

constexpr double kTolerance = 1e-5;
constexpr char kLm[] = "demo-lm";
constexpr char kTs[] = "demo-ts";
constexpr int64_t kMaxTokens = 64;
constexpr int64_t kMaxMessageBytes = 1 << 20;
using Code = grpc::StatusCode;

class BadInputTest : public SharedServerTest<BadInputTest> {
 public:
  static ServerFlags Flags() {
    ServerFlags flags;
    flags.model_dirs = {DemoModelDir(kLm).string(), DemoModelDir(kTs).string()};
    flags.extra = {"--threads",
                   "2",
                   "--max_sequence_tokens",
                   std::to_string(kMaxTokens),
                   "--max_message_bytes",
                   std::to_string(kMaxMessageBytes)};
    return flags;
  }

 protected:
  void SetUp() override {
    SharedServerTest<BadInputTest>::SetUp();
    if (HasFatalFailure()) return;
    lm_ = GetModelInfo(stub(), kLm);
    ts_ = GetModelInfo(stub(), kTs);
    lm_prefix_ = RandomInput(lm_, 10, rng_);
    ts_prefix_ = RandomInput(ts_, 10, rng_);
    lm_session_ = CreateSession(stub(), kLm, lm_prefix_);
    ts_session_ = CreateSession(stub(), kTs, ts_prefix_);
    ASSERT_FALSE(lm_session_.empty());
    ASSERT_FALSE(ts_session_.empty());
    lm_before_ = SnapshotBytes(stub(), lm_session_);
    ts_before_ = SnapshotBytes(stub(), ts_session_);
  }

  // Both sessions are exactly as SetUp left them, and still continue from their prefixes.
  void ExpectSessionsUnchanged() {
    EXPECT_EQ(SnapshotBytes(stub(), lm_session_), lm_before_) << "demo-lm session changed";
    EXPECT_EQ(SnapshotBytes(stub(), ts_session_), ts_before_) << "demo-ts session changed";
    for (const auto& [info, id, prefix] : {std::tuple{&lm_, &lm_session_, &lm_prefix_},
                                           std::tuple{&ts_, &ts_session_, &ts_prefix_}}) {
      const v1::Sequence x = RandomInput(*info, 3, rng_);
      v1::AppendRequest append;
      append.set_session_id(*id);
      *append.mutable_input() = x;
      auto appended = Call(stub(), &AarenStub::Append, append);
      ASSERT_TRUE(appended.ok()) << StatusString(appended.status);
      EXPECT_EQ(appended.response.position(), 13);
      EXPECT_LT(RelativeError(ToVector(appended.response.outputs()),
                              Rows(ScoreAll(stub(), info->name(), ConcatInput(*prefix, x)),
                                   info->output_dim(), 10, 13)),
                kTolerance)
          << info->name();
    }
  }

  grpc::Status Append(const std::string& session_id, const v1::Sequence& input,
                      std::optional<int64_t> expected_position = std::nullopt) {
    v1::AppendRequest append;
    append.set_session_id(session_id);
    *append.mutable_input() = input;
    if (expected_position) append.set_expected_position(*expected_position);
    return Call(stub(), &AarenStub::Append, append).status;
  }

  v1::Sequence Tokens(std::vector<int32_t> tokens) {
    v1::Sequence s;
    s.mutable_tokens()->Add(tokens.begin(), tokens.end());
    return s;
  }

  std::mt19937_64 rng_{99};
  v1::ModelInfo lm_, ts_;
  v1::Sequence lm_prefix_, ts_prefix_;
  std::string lm_session_, ts_session_;
  std::string lm_before_, ts_before_;
};

TEST_F(BadInputTest, WrongFeatureCount) {
  v1::Sequence bad = RandomInput(ts_, 2, rng_);
  bad.mutable_features()->RemoveLast();  // 15 floats, not a multiple of 8
  EXPECT_TRUE(HasStatus(Append(ts_session_, bad), Code::INVALID_ARGUMENT, {"input.features"}));
  v1::ScoreRequest score;
  score.set_model(kTs);
  *score.add_sequences() = RandomInput(ts_, 3, rng_);
  *score.add_sequences() = bad;
  EXPECT_TRUE(HasStatus(Call(stub(), &AarenStub::Score, score).status, Code::INVALID_ARGUMENT,
                        {"sequences[1]", "features"}));
  v1::CreateSessionRequest create;
  create.set_model(kTs);
  *create.mutable_prefix() = bad;
  EXPECT_TRUE(HasStatus(Call(stub(), &AarenStub::CreateSession, create).status,
                        Code::INVALID_ARGUMENT, {"prefix"}));
  ExpectSessionsUnchanged();
}

TEST_F(BadInputTest, WrongInputFieldForTheModel) {
  // Tokens to a features model, features to a tokens model.
  EXPECT_TRUE(HasStatus(Append(ts_session_, Tokens({1, 2})), Code::INVALID_ARGUMENT, {"input"}));
  EXPECT_TRUE(
      HasStatus(Append(lm_session_, RandomInput(ts_, 1, rng_)), Code::INVALID_ARGUMENT, {"input"}));
  ExpectSessionsUnchanged();
}

TEST_F(BadInputTest, TokenIdOutOfRange) {
  EXPECT_TRUE(HasStatus(Append(lm_session_, Tokens({1, 2, 43})), Code::INVALID_ARGUMENT,
                        {"input.tokens[2]", "43"}));
  EXPECT_TRUE(HasStatus(Append(lm_session_, Tokens({-1})), Code::INVALID_ARGUMENT,
                        {"input.tokens[0]", "-1"}));
  v1::ScoreRequest score;
  score.set_model(kLm);
  *score.add_sequences() = Tokens({0, 1000000});
  score.set_prefill(true);
  EXPECT_TRUE(HasStatus(Call(stub(), &AarenStub::Score, score).status, Code::INVALID_ARGUMENT,
                        {"sequences[0]", "tokens[1]"}));
  ExpectSessionsUnchanged();
}

TEST_F(BadInputTest, NonFiniteFeature) {
  for (float bad_value :
       {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
        -std::numeric_limits<float>::infinity()}) {
    SCOPED_TRACE(bad_value);
    v1::Sequence bad = RandomInput(ts_, 2, rng_);
    bad.set_features(11, bad_value);
    EXPECT_TRUE(
        HasStatus(Append(ts_session_, bad), Code::INVALID_ARGUMENT, {"input.features[11]"}));
    v1::ScoreRequest score;
    score.set_model(kTs);
    *score.add_sequences() = bad;
    EXPECT_TRUE(HasStatus(Call(stub(), &AarenStub::Score, score).status, Code::INVALID_ARGUMENT,
                          {"sequences[0]", "features[11]"}));
  }
  ExpectSessionsUnchanged();
}

TEST_F(BadInputTest, EmptyInput) {
  EXPECT_TRUE(HasStatus(Append(lm_session_, v1::Sequence()), Code::INVALID_ARGUMENT, {"input"}));
  EXPECT_TRUE(HasStatus(Append(ts_session_, v1::Sequence()), Code::INVALID_ARGUMENT, {"input"}));
  v1::ScoreRequest score;
  score.set_model(kLm);
  EXPECT_TRUE(HasStatus(Call(stub(), &AarenStub::Score, score).status, Code::INVALID_ARGUMENT,
                        {"sequences"}));
  *score.add_sequences() = Tokens({1, 2});
  score.add_sequences();  // empty
  EXPECT_TRUE(HasStatus(Call(stub(), &AarenStub::Score, score).status, Code::INVALID_ARGUMENT,
                        {"sequences[1]"}));
  ExpectSessionsUnchanged();
}

TEST_F(BadInputTest, OverSizeInput) {
  EXPECT_TRUE(HasStatus(Append(lm_session_, RandomInput(lm_, kMaxTokens + 1, rng_)),
                        Code::INVALID_ARGUMENT, {"input", "64"}));
  EXPECT_TRUE(HasStatus(Append(ts_session_, RandomInput(ts_, kMaxTokens + 1, rng_)),
                        Code::INVALID_ARGUMENT, {"input", "64"}));
  v1::ScoreRequest score;
  score.set_model(kLm);
  *score.add_sequences() = RandomInput(lm_, 3, rng_);
  *score.add_sequences() = RandomInput(lm_, kMaxTokens + 1, rng_);
  EXPECT_TRUE(HasStatus(Call(stub(), &AarenStub::Score, score).status, Code::INVALID_ARGUMENT,
                        {"sequences[1]", "64"}));
  v1::CreateSessionRequest create;
  create.set_model(kLm);
  *create.mutable_prefix() = RandomInput(lm_, kMaxTokens + 1, rng_);
  EXPECT_TRUE(HasStatus(Call(stub(), &AarenStub::CreateSession, create).status,
                        Code::INVALID_ARGUMENT, {"prefix", "64"}));
  // Exactly the limit is fine.
  v1::ScoreRequest ok;
  ok.set_model(kLm);
  *ok.add_sequences() = RandomInput(lm_, kMaxTokens, rng_);
  EXPECT_TRUE(Call(stub(), &AarenStub::Score, ok).ok());
  ExpectSessionsUnchanged();
}

TEST_F(BadInputTest, UnknownSession) {
  for (const char* id : {"no-such-session", "0123456789abcdef0123456789abcdef"}) {
    EXPECT_TRUE(HasStatus(Append(id, Tokens({1})), Code::NOT_FOUND, {"session_id", id}));
    v1::GetSessionRequest get;
    get.set_session_id(id);
    EXPECT_TRUE(HasStatus(Call(stub(), &AarenStub::GetSession, get).status, Code::NOT_FOUND,
                          {"session_id", id}));
    v1::DeleteSessionRequest del;
    del.set_session_id(id);
    EXPECT_TRUE(
        HasStatus(Call(stub(), &AarenStub::DeleteSession, del).status, Code::NOT_FOUND, {id}));
    v1::ForkSessionRequest fork;
    fork.set_session_id(id);
    EXPECT_TRUE(
        HasStatus(Call(stub(), &AarenStub::ForkSession, fork).status, Code::NOT_FOUND, {id}));
    v1::ExportSessionRequest exp;
    exp.set_session_id(id);
    EXPECT_TRUE(
        HasStatus(Call(stub(), &AarenStub::ExportSession, exp).status, Code::NOT_FOUND, {id}));
    v1::GenerateRequest generate;
    generate.set_session_id(id);
    generate.set_max_tokens(1);
    grpc::ClientContext context;
    auto reader = stub().Generate(&context, generate);
    v1::GenerateResponse ignored;
    EXPECT_FALSE(reader->Read(&ignored));
    EXPECT_TRUE(HasStatus(reader->Finish(), Code::NOT_FOUND, {id}));
    // A stream that attaches to it.
    StreamClient stream(stub());
    v1::OpenSession open;
    open.set_session_id(id);
    EXPECT_FALSE(stream.Open(open).has_value());
    EXPECT_TRUE(HasStatus(stream.Finish(), Code::NOT_FOUND, {id}));
  }
  ExpectSessionsUnchanged();
}

TEST_F(BadInputTest, UnknownModel) {
  v1::ScoreRequest score;
  score.set_model("no-such-model");
  *score.add_sequences() = Tokens({1});
  EXPECT_TRUE(HasStatus(Call(stub(), &AarenStub::Score, score).status, Code::NOT_FOUND,
                        {"model", "no-such-model"}));
  v1::CreateSessionRequest create;
  create.set_model("no-such-model");
  EXPECT_TRUE(HasStatus(Call(stub(), &AarenStub::CreateSession, create).status, Code::NOT_FOUND,
                        {"model", "no-such-model"}));
  StreamClient stream(stub());
  v1::OpenSession open;
  open.set_model("no-such-model");
  EXPECT_FALSE(stream.Open(open).has_value());
  EXPECT_TRUE(HasStatus(stream.Finish(), Code::NOT_FOUND, {"model", "no-such-model"}));
  ExpectSessionsUnchanged();
}

TEST_F(BadInputTest, StaleExpectedPositionIsAbortedNamingTheCurrentPosition) {
  // Behind (a stale client) and ahead (a gap).
  EXPECT_TRUE(
      HasStatus(Append(lm_session_, Tokens({1}), 7), Code::ABORTED, {"expected_position", "10"}));
  EXPECT_TRUE(
      HasStatus(Append(lm_session_, Tokens({1}), 11), Code::ABORTED, {"expected_position", "10"}));
  EXPECT_TRUE(HasStatus(Append(ts_session_, RandomInput(ts_, 1, rng_), 0), Code::ABORTED,
                        {"expected_position", "10"}));
  ExpectSessionsUnchanged();
}

TEST_F(BadInputTest, RetriedAppendIsReplayedNotReapplied) {
  v1::AppendRequest append;
  append.set_session_id(lm_session_);
  *append.mutable_input() = RandomInput(lm_, 4, rng_);
  append.set_expected_position(10);
  auto first = Call(stub(), &AarenStub::Append, append);
  ASSERT_TRUE(first.ok()) << StatusString(first.status);
  EXPECT_FALSE(first.response.replayed());
  EXPECT_EQ(first.response.position(), 14);
  const std::string after_first = SnapshotBytes(stub(), lm_session_);

  auto retry = Call(stub(), &AarenStub::Append, append);
  ASSERT_TRUE(retry.ok()) << StatusString(retry.status);
  EXPECT_TRUE(retry.response.replayed());
  EXPECT_EQ(retry.response.position(), 14);
  EXPECT_EQ(ToVector(retry.response.outputs()), ToVector(first.response.outputs()));
  EXPECT_EQ(SnapshotBytes(stub(), lm_session_), after_first) << "the retry was applied again";
  v1::GetSessionRequest get;
  get.set_session_id(lm_session_);
  EXPECT_EQ(Call(stub(), &AarenStub::GetSession, get).response.position(), 14);

  // The same expected_position with a different input is not a retry.
  v1::AppendRequest other = append;
  other.mutable_input()->set_tokens(0, (append.input().tokens(0) + 1) % 43);
  EXPECT_TRUE(HasStatus(Call(stub(), &AarenStub::Append, other).status, Code::ABORTED, {"14"}));
  EXPECT_EQ(SnapshotBytes(stub(), lm_session_), after_first);

  // Continuing at 14 gives the outputs of the sequence with the 4 tokens applied once.
  v1::AppendRequest next;
  next.set_session_id(lm_session_);
  next.mutable_input()->add_tokens(3);
  next.set_expected_position(14);
  auto continued = Call(stub(), &AarenStub::Append, next);
  ASSERT_TRUE(continued.ok()) << StatusString(continued.status);
  const v1::Sequence all = ConcatInput(ConcatInput(lm_prefix_, append.input()), next.input());
  EXPECT_LT(RelativeError(ToVector(continued.response.outputs()),
                          Rows(ScoreAll(stub(), kLm, all), 43, 14, 15)),
            kTolerance);
}

TEST_F(BadInputTest, RetryOfAnOlderAppendIsAborted) {
  v1::AppendRequest first;
  first.set_session_id(lm_session_);
  *first.mutable_input() = Tokens({1, 2});
  first.set_expected_position(10);
  ASSERT_TRUE(Call(stub(), &AarenStub::Append, first).ok());
  v1::AppendRequest second = first;
  *second.mutable_input() = Tokens({3});
  second.set_expected_position(12);
  ASSERT_TRUE(Call(stub(), &AarenStub::Append, second).ok());
  const std::string after = SnapshotBytes(stub(), lm_session_);
  // `first` is no longer the last applied append: its retry is stale, not a replay.
  EXPECT_TRUE(HasStatus(Call(stub(), &AarenStub::Append, first).status, Code::ABORTED, {"13"}));
  EXPECT_EQ(SnapshotBytes(stub(), lm_session_), after);
  // The retry of `second` (the last one) is still a replay.
  auto retry = Call(stub(), &AarenStub::Append, second);
  ASSERT_TRUE(retry.ok()) << StatusString(retry.status);
  EXPECT_TRUE(retry.response.replayed());
  EXPECT_EQ(retry.response.position(), 13);
  EXPECT_EQ(SnapshotBytes(stub(), lm_session_), after);
}

TEST_F(BadInputTest, RetryWithAnotherOutputModeIsAborted) {
  v1::AppendRequest append;
  append.set_session_id(ts_session_);
  *append.mutable_input() = RandomInput(ts_, 2, rng_);
  append.set_expected_position(10);
  ASSERT_TRUE(Call(stub(), &AarenStub::Append, append).ok());
  const std::string after = SnapshotBytes(stub(), ts_session_);
  append.set_output_mode(v1::OUTPUT_MODE_LAST);
  EXPECT_TRUE(HasStatus(Call(stub(), &AarenStub::Append, append).status, Code::ABORTED, {"12"}));
  EXPECT_EQ(SnapshotBytes(stub(), ts_session_), after);
}

TEST_F(BadInputTest, RetryOnAnotherStreamIsReplayed) {
  v1::AppendRequest append;
  *append.mutable_input() = Tokens({4, 5, 6});
  append.set_expected_position(10);
  v1::AppendResponse first;
  {
    StreamClient stream(stub());
    v1::OpenSession open;
    open.set_session_id(lm_session_);
    ASSERT_TRUE(stream.Open(open).has_value()) << StatusString(stream.Finish());
    std::optional<v1::AppendResponse> reply = stream.Append(append);
    ASSERT_TRUE(reply.has_value()) << StatusString(stream.Finish());
    first = *reply;
    stream.Cancel();  // the client lost the connection, reconnects and retries
  }
  const std::string after = SnapshotBytes(stub(), lm_session_);
  StreamClient stream(stub());
  v1::OpenSession open;
  open.set_session_id(lm_session_);
  std::optional<v1::Session> session = stream.Open(open);
  ASSERT_TRUE(session.has_value()) << StatusString(stream.Finish());
  EXPECT_EQ(session->position(), 13);
  std::optional<v1::AppendResponse> retry = stream.Append(append);
  ASSERT_TRUE(retry.has_value()) << StatusString(stream.Finish());
  EXPECT_TRUE(retry->replayed());
  EXPECT_EQ(retry->position(), 13);
  EXPECT_EQ(ToVector(retry->outputs()), ToVector(first.outputs()));
  EXPECT_TRUE(stream.Finish().ok());
  EXPECT_EQ(SnapshotBytes(stub(), lm_session_), after);
}

TEST_F(BadInputTest, OverSizeMessageIsResourceExhausted) {
  v1::ScoreRequest score;
  score.set_model(kTs);
  // 40 sequences of 64 rows of 8 floats (each within --max_sequence_tokens): ~0.1 MB ...
  for (int i = 0; i < 40; ++i) *score.add_sequences() = RandomInput(ts_, kMaxTokens, rng_);
  EXPECT_TRUE(Call(stub(), &AarenStub::Score, score).ok());
  // ... and 600 of them (~1.2 MB) exceed --max_message_bytes.
  for (int i = 0; i < 560; ++i) *score.add_sequences() = RandomInput(ts_, kMaxTokens, rng_);
  ASSERT_GT(score.ByteSizeLong(), static_cast<size_t>(kMaxMessageBytes));
  EXPECT_TRUE(HasStatus(Call(stub(), &AarenStub::Score, score).status, Code::RESOURCE_EXHAUSTED));
  ExpectSessionsUnchanged();
}

TEST_F(BadInputTest, GenerateWithABadTemperature) {
  for (float temperature :
       {-1.0f, std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    SCOPED_TRACE(temperature);
    v1::GenerateRequest request;
    request.set_session_id(lm_session_);
    request.set_max_tokens(2);
    request.set_temperature(temperature);
    grpc::ClientContext context;
    auto reader = stub().Generate(&context, request);
    v1::GenerateResponse ignored;
    EXPECT_FALSE(reader->Read(&ignored)) << ignored.DebugString();
    EXPECT_TRUE(HasStatus(reader->Finish(), Code::INVALID_ARGUMENT, {"temperature"}));
  }
  ExpectSessionsUnchanged();
}

TEST_F(BadInputTest, DeletingASessionUnderAnOpenStream) {
  const std::string id = CreateSession(stub(), kLm, Tokens({1, 2, 3}));
  StreamClient stream(stub());
  v1::OpenSession open;
  open.set_session_id(id);
  ASSERT_TRUE(stream.Open(open).has_value()) << StatusString(stream.Finish());
  v1::AppendRequest append;
  *append.mutable_input() = Tokens({4});
  ASSERT_TRUE(stream.Append(append).has_value()) << StatusString(stream.Finish());
  v1::DeleteSessionRequest del;
  del.set_session_id(id);
  ASSERT_TRUE(Call(stub(), &AarenStub::DeleteSession, del).ok());
  EXPECT_FALSE(stream.Append(append).has_value());
  EXPECT_TRUE(HasStatus(stream.Finish(), Code::NOT_FOUND, {id}));
  ExpectSessionsUnchanged();
}

TEST_F(BadInputTest, InvalidClientChosenSessionId) {
  const std::vector<std::string> bad_ids = {"has space", "slash/id", "ünïcode", "semi;colon",
                                            std::string(129, 'a')};
  for (const std::string& id : bad_ids) {
    SCOPED_TRACE(id);
    v1::CreateSessionRequest create;
    create.set_model(kLm);
    create.set_session_id(id);
    EXPECT_TRUE(HasStatus(Call(stub(), &AarenStub::CreateSession, create).status,
                          Code::INVALID_ARGUMENT, {"session_id"}));
    v1::ForkSessionRequest fork;
    fork.set_session_id(lm_session_);
    fork.set_new_session_id(id);
    EXPECT_TRUE(HasStatus(Call(stub(), &AarenStub::ForkSession, fork).status,
                          Code::INVALID_ARGUMENT, {"new_session_id"}));
  }
  // 128 characters of the allowed alphabet is fine.
  v1::CreateSessionRequest create;
  create.set_model(kLm);
  create.set_session_id(std::string(120, 'x') + "A-9._zZ0");
  EXPECT_TRUE(Call(stub(), &AarenStub::CreateSession, create).ok());
  ExpectSessionsUnchanged();
}

TEST_F(BadInputTest, DuplicateSessionId) {
  v1::CreateSessionRequest create;
  create.set_model(kLm);
  create.set_session_id(lm_session_);
  EXPECT_TRUE(HasStatus(Call(stub(), &AarenStub::CreateSession, create).status,
                        Code::ALREADY_EXISTS, {lm_session_}));
  create.set_model(kTs);
  *create.mutable_prefix() = RandomInput(ts_, 2, rng_);
  create.set_session_id(ts_session_);
  EXPECT_TRUE(HasStatus(Call(stub(), &AarenStub::CreateSession, create).status,
                        Code::ALREADY_EXISTS, {ts_session_}));
  v1::ForkSessionRequest fork;
  fork.set_session_id(lm_session_);
  fork.set_new_session_id(ts_session_);
  EXPECT_TRUE(HasStatus(Call(stub(), &AarenStub::ForkSession, fork).status, Code::ALREADY_EXISTS,
                        {ts_session_}));
  v1::ExportSessionRequest exp;
  exp.set_session_id(lm_session_);
  auto exported = Call(stub(), &AarenStub::ExportSession, exp);
  ASSERT_TRUE(exported.ok());
  v1::ImportSessionRequest import;
  *import.mutable_snapshot() = exported.response.snapshot();
  import.set_session_id(lm_session_);
  EXPECT_TRUE(HasStatus(Call(stub(), &AarenStub::ImportSession, import).status,
                        Code::ALREADY_EXISTS, {lm_session_}));
  ExpectSessionsUnchanged();
}

TEST_F(BadInputTest, McaAlphaNegativeOrNotFiniteIsNamed) {
  for (const float alpha :
       {-1.0f, std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    SCOPED_TRACE(alpha);
    v1::AppendRequest append;
    append.set_session_id(lm_session_);
    append.mutable_input()->add_tokens(1);
    append.mutable_mca()->set_enabled(true);
    append.mutable_mca()->set_alpha(alpha);
    EXPECT_TRUE(HasStatus(Call(stub(), &AarenStub::Append, append).status, Code::INVALID_ARGUMENT,
                          {"mca.alpha"}));
    v1::ScoreRequest score;
    score.set_model(kLm);
    *score.add_sequences() = Tokens({1, 2});
    score.set_prefill(true);
    score.mutable_mca()->set_enabled(true);
    score.mutable_mca()->set_alpha(alpha);
    EXPECT_TRUE(HasStatus(Call(stub(), &AarenStub::Score, score).status, Code::INVALID_ARGUMENT,
                          {"mca.alpha"}));
    v1::CreateSessionRequest create;
    create.set_model(kLm);
    *create.mutable_prefix() = Tokens({1, 2});
    create.mutable_mca()->set_enabled(true);
    create.mutable_mca()->set_alpha(alpha);
    EXPECT_TRUE(HasStatus(Call(stub(), &AarenStub::CreateSession, create).status,
                          Code::INVALID_ARGUMENT, {"mca.alpha"}));
  }
  // A disabled McaOptions' alpha is ignored, whatever it holds.
  v1::ScoreRequest ignored;
  ignored.set_model(kLm);
  *ignored.add_sequences() = Tokens({1, 2});
  ignored.mutable_mca()->set_alpha(-1.0f);
  EXPECT_TRUE(Call(stub(), &AarenStub::Score, ignored).ok());
  ExpectSessionsUnchanged();
}

TEST_F(BadInputTest, UnknownOutputModeEnumValue) {
  v1::AppendRequest append;
  append.set_session_id(lm_session_);
  append.mutable_input()->add_tokens(1);
  append.set_output_mode(static_cast<v1::OutputMode>(7));
  EXPECT_TRUE(HasStatus(Call(stub(), &AarenStub::Append, append).status, Code::INVALID_ARGUMENT,
                        {"output_mode"}));
  v1::ScoreRequest score;
  score.set_model(kLm);
  *score.add_sequences() = Tokens({1, 2});
  score.set_output_mode(static_cast<v1::OutputMode>(-3));
  EXPECT_TRUE(HasStatus(Call(stub(), &AarenStub::Score, score).status, Code::INVALID_ARGUMENT,
                        {"output_mode"}));
  ExpectSessionsUnchanged();
}

TEST_F(BadInputTest, BadAppendOnAStreamEndsItAndKeepsTheState) {
  StreamClient stream(stub());
  v1::OpenSession open;
  open.set_session_id(lm_session_);
  ASSERT_TRUE(stream.Open(open).has_value()) << StatusString(stream.Finish());
  v1::AppendRequest append;
  *append.mutable_input() = Tokens({5, 99});
  EXPECT_FALSE(stream.Append(append).has_value());
  EXPECT_TRUE(HasStatus(stream.Finish(), Code::INVALID_ARGUMENT, {"tokens[1]"}));
  ExpectSessionsUnchanged();
}

TEST_F(BadInputTest, StreamAppendBeforeOpenIsRejected) {
  StreamClient stream(stub());
  v1::StreamRequest request;
  request.mutable_append()->set_session_id(lm_session_);
  request.mutable_append()->mutable_input()->add_tokens(1);
  stream.Write(request);
  v1::StreamResponse response;
  EXPECT_FALSE(stream.Read(&response)) << response.DebugString();
  const grpc::Status status = stream.Finish();
  EXPECT_TRUE(status.error_code() == Code::INVALID_ARGUMENT ||
              status.error_code() == Code::FAILED_PRECONDITION)
      << StatusString(status);
  ExpectSessionsUnchanged();
}

TEST_F(BadInputTest, StreamAttachWithAnotherModelIsRejected) {
  StreamClient stream(stub());
  v1::OpenSession open;
  open.set_session_id(lm_session_);
  open.set_model(kTs);
  EXPECT_FALSE(stream.Open(open).has_value());
  const grpc::Status status = stream.Finish();
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.error_message().find("model"), std::string::npos) << StatusString(status);
  ExpectSessionsUnchanged();
}

TEST_F(BadInputTest, GenerateThatDoesNotFitTheModel) {
  auto generate = [&](const v1::GenerateRequest& request) {
    grpc::ClientContext context;
    auto reader = stub().Generate(&context, request);
    v1::GenerateResponse ignored;
    EXPECT_FALSE(reader->Read(&ignored)) << ignored.DebugString();
    return reader->Finish();
  };
  v1::GenerateRequest request;
  request.set_session_id(ts_session_);  // a features model
  request.set_max_tokens(3);
  EXPECT_TRUE(HasStatus(generate(request), Code::FAILED_PRECONDITION));
  const std::string empty = CreateSession(stub(), kLm);  // no tokens and no prompt
  request.set_session_id(empty);
  EXPECT_TRUE(HasStatus(generate(request), Code::FAILED_PRECONDITION));
  request.set_session_id(lm_session_);
  request.set_max_tokens(0);
  EXPECT_TRUE(HasStatus(generate(request), Code::INVALID_ARGUMENT, {"max_tokens"}));
  request.set_max_tokens(2);
  *request.mutable_prompt() = Tokens({3, 43});
  EXPECT_TRUE(HasStatus(generate(request), Code::INVALID_ARGUMENT, {"prompt"}));
  ExpectSessionsUnchanged();
}

TEST_F(BadInputTest, BadSnapshotsAreRejected) {
  v1::ExportSessionRequest exp;
  exp.set_session_id(lm_session_);
  auto exported = Call(stub(), &AarenStub::ExportSession, exp);
  ASSERT_TRUE(exported.ok()) << StatusString(exported.status);
  const v1::SessionSnapshot good = exported.response.snapshot();
  auto import = [&](const v1::SessionSnapshot& snapshot) {
    v1::ImportSessionRequest request;
    *request.mutable_snapshot() = snapshot;
    return Call(stub(), &AarenStub::ImportSession, request).status;
  };
  v1::SessionSnapshot s = good;
  s.set_config_hash(good.config_hash() + "0");
  EXPECT_TRUE(HasStatus(import(s), Code::INVALID_ARGUMENT, {"config_hash"}));
  s = good;
  s.set_model("no-such-model");
  EXPECT_TRUE(HasStatus(import(s), Code::NOT_FOUND, {"model", "no-such-model"}));
  s = good;
  s.set_model(kTs);  // another served model: its config hash differs
  EXPECT_TRUE(HasStatus(import(s), Code::INVALID_ARGUMENT, {}));
  s = good;
  s.mutable_state()->resize(good.state().size() - 4);
  EXPECT_TRUE(HasStatus(import(s), Code::INVALID_ARGUMENT, {"state"}));
  s = good;
  s.mutable_state()->append(4, '\0');
  EXPECT_TRUE(HasStatus(import(s), Code::INVALID_ARGUMENT, {"state"}));
  s = good;
  s.set_n_heads(good.n_heads() * 2);
  s.set_d_head(good.d_head() / 2);
  EXPECT_TRUE(HasStatus(import(s), Code::INVALID_ARGUMENT, {}));
  s = good;
  s.set_format_version(2);
  EXPECT_TRUE(HasStatus(import(s), Code::INVALID_ARGUMENT, {"format_version"}));
  s = good;
  s.mutable_last_output()->resize(good.last_output().size() - 4);
  EXPECT_TRUE(HasStatus(import(s), Code::INVALID_ARGUMENT, {"last_output"}));
  s = good;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  s.mutable_state()->replace(8, 4, reinterpret_cast<const char*>(&nan), 4);  // w[0] of head 0
  EXPECT_TRUE(HasStatus(import(s), Code::INVALID_ARGUMENT, {"state"}));
  s = good;
  s.set_position(-1);
  EXPECT_TRUE(HasStatus(import(s), Code::INVALID_ARGUMENT, {"position"}));
  EXPECT_TRUE(import(good).ok());
  ExpectSessionsUnchanged();
}

}  // namespace
}  // namespace aaren::testing
