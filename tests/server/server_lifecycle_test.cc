// SPDX-License-Identifier: Apache-2.0
// Session lifecycle end to end: eviction to the host tier and transparent resumption
// (--max_sessions), refusal when every tier is full, idle-TTL expiry, a client dropping
// mid-stream, the SIGTERM drain (in-flight work completes, then exit status 0), and limits
// refused at start-up.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <string>
#include <thread>
#include <vector>

#include "tests/server/e2e_support.h"

namespace aaren::testing {
namespace {

constexpr double kTolerance = 1e-5;
constexpr char kLm[] = "demo-lm";
constexpr char kTs[] = "demo-ts";
using Code = grpc::StatusCode;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

ServerFlags DemoFlags(std::vector<std::string> extra) {
  ServerFlags flags;
  flags.model_dirs = {DemoModelDir(kLm).string(), DemoModelDir(kTs).string()};
  flags.extra = {"--threads", "2"};
  flags.extra.insert(flags.extra.end(), extra.begin(), extra.end());
  return flags;
}

v1::Session GetSession(AarenStub& stub, const std::string& id, grpc::Status* status = nullptr) {
  v1::GetSessionRequest get;
  get.set_session_id(id);
  auto got = Call(stub, &AarenStub::GetSession, get);
  if (status != nullptr) {
    *status = got.status;
  } else {
    EXPECT_TRUE(got.ok()) << id << ": " << StatusString(got.status);
  }
  return got.response;
}

// ---- Eviction to the host tier ----

class CapacityTest : public SharedServerTest<CapacityTest> {
 public:
  static ServerFlags Flags() {
    return DemoFlags({"--max_sessions", "8", "--host_tier_sessions", "200"});
  }
};

TEST_F(CapacityTest, HundredSessionsOnEightSlotsAllResumeCorrectly) {
  constexpr int kSessions = 100;
  const v1::ModelInfo info = GetModelInfo(stub(), kLm);
  std::mt19937_64 rng(100);
  std::vector<std::string> ids;
  std::vector<v1::Sequence> history;
  std::string first_snapshot;
  for (int i = 0; i < kSessions; ++i) {
    history.push_back(RandomInput(info, 5 + i % 11, rng));
    ids.push_back(CreateSession(stub(), kLm, history.back()));
    ASSERT_FALSE(ids.back().empty()) << "session " << i;
    if (i == 0) first_snapshot = SnapshotBytes(stub(), ids[0]);
  }
  // Session 0 was evicted long ago: its snapshot from the host tier is its state at creation.
  EXPECT_EQ(GetSession(stub(), ids[0]).tier(), v1::SESSION_TIER_HOST);
  EXPECT_EQ(SnapshotBytes(stub(), ids[0]), first_snapshot) << "eviction changed the state";
  int pool = 0, host = 0;
  for (const std::string& id : ids) {
    const v1::Session s = GetSession(stub(), id);
    pool += s.tier() == v1::SESSION_TIER_POOL ? 1 : 0;
    host += s.tier() == v1::SESSION_TIER_HOST ? 1 : 0;
  }
  EXPECT_LE(pool, 8) << "more pool-resident sessions than --max_sessions";
  EXPECT_EQ(pool + host, kSessions) << "every session reports a tier";
  EXPECT_GE(host, kSessions - 8);

  // Two passes in different orders, so that every session is evicted and resumed again.
  for (int pass = 0; pass < 2; ++pass) {
    std::vector<int> order(kSessions);
    for (int i = 0; i < kSessions; ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), rng);
    for (int i : order) {
      SCOPED_TRACE(::testing::Message() << "pass " << pass << ", session " << i);
      const v1::Session before = GetSession(stub(), ids[i]);
      EXPECT_EQ(before.position(), InputLength(info, history[i]));
      const v1::Sequence x = RandomInput(info, 3, rng);
      v1::AppendRequest append;
      append.set_session_id(ids[i]);
      append.set_expected_position(before.position());
      *append.mutable_input() = x;
      auto appended = Call(stub(), &AarenStub::Append, append);
      ASSERT_TRUE(appended.ok()) << StatusString(appended.status);
      const int64_t end = before.position() + 3;
      EXPECT_EQ(appended.response.position(), end);
      history[i] = ConcatInput(history[i], x);
      EXPECT_LT(RelativeError(ToVector(appended.response.outputs()),
                              Rows(ScoreAll(stub(), kLm, history[i]), 43, end - 3, end)),
                kTolerance);
      EXPECT_EQ(GetSession(stub(), ids[i]).tier(), v1::SESSION_TIER_POOL)
          << "a session that just ran is in the pool";
    }
  }
  // A session evicted long ago resumes on a stream too.
  const v1::Session oldest = GetSession(stub(), ids[0]);
  StreamClient stream(stub());
  v1::OpenSession open;
  open.set_session_id(ids[0]);
  ASSERT_TRUE(stream.Open(open).has_value()) << StatusString(stream.Finish());
  v1::AppendRequest append;
  append.mutable_input()->add_tokens(11);
  std::optional<v1::AppendResponse> reply = stream.Append(append);
  ASSERT_TRUE(reply.has_value()) << StatusString(stream.Finish());
  EXPECT_EQ(reply->position(), oldest.position() + 1);
  history[0].add_tokens(11);
  EXPECT_LT(
      RelativeError(ToVector(reply->outputs()), Rows(ScoreAll(stub(), kLm, history[0]), 43,
                                                     oldest.position(), oldest.position() + 1)),
      kTolerance);
  EXPECT_TRUE(stream.Finish().ok());
}

class FullTiersTest : public SharedServerTest<FullTiersTest> {
 public:
  static ServerFlags Flags() {
    return DemoFlags({"--max_sessions", "4", "--host_tier_sessions", "4"});
  }
};

TEST_F(FullTiersTest, RefusesWithResourceExhaustedOnlyWhenEveryTierIsFull) {
  const v1::ModelInfo info = GetModelInfo(stub(), kLm);
  std::mt19937_64 rng(8);
  std::vector<std::string> ids;
  std::vector<v1::Sequence> history;
  for (int i = 0; i < 8; ++i) {
    history.push_back(RandomInput(info, 4, rng));
    ids.push_back(CreateSession(stub(), kLm, history.back()));
    ASSERT_FALSE(ids.back().empty()) << "session " << i << " of 8 (4 pool + 4 host)";
  }
  v1::CreateSessionRequest create;
  create.set_model(kLm);
  EXPECT_TRUE(
      HasStatus(Call(stub(), &AarenStub::CreateSession, create).status, Code::RESOURCE_EXHAUSTED));
  v1::ScoreRequest prefill;
  prefill.set_model(kLm);
  *prefill.add_sequences() = RandomInput(info, 3, rng);
  prefill.set_prefill(true);
  EXPECT_TRUE(HasStatus(Call(stub(), &AarenStub::Score, prefill).status, Code::RESOURCE_EXHAUSTED));
  v1::ForkSessionRequest fork;
  fork.set_session_id(ids[0]);
  EXPECT_TRUE(
      HasStatus(Call(stub(), &AarenStub::ForkSession, fork).status, Code::RESOURCE_EXHAUSTED));
  // Scoring without prefill needs no session slot.
  prefill.set_prefill(false);
  EXPECT_TRUE(Call(stub(), &AarenStub::Score, prefill).ok());
  // Every existing session still works, in and out of the pool.
  for (int i = 7; i >= 0; --i) {
    v1::AppendRequest append;
    append.set_session_id(ids[i]);
    append.mutable_input()->add_tokens(i);
    auto appended = Call(stub(), &AarenStub::Append, append);
    ASSERT_TRUE(appended.ok()) << "session " << i << ": " << StatusString(appended.status);
    history[i].add_tokens(i);
    EXPECT_LT(RelativeError(ToVector(appended.response.outputs()),
                            Rows(ScoreAll(stub(), kLm, history[i]), 43, 4, 5)),
              kTolerance);
  }
  // Deleting one frees a place.
  v1::DeleteSessionRequest del;
  del.set_session_id(ids[3]);
  ASSERT_TRUE(Call(stub(), &AarenStub::DeleteSession, del).ok());
  EXPECT_TRUE(Call(stub(), &AarenStub::CreateSession, create).ok());
}

// ---- Idle TTL ----

class TtlTest : public SharedServerTest<TtlTest> {
 public:
  static ServerFlags Flags() { return DemoFlags({"--session_idle_ttl", "1s"}); }
};

TEST_F(TtlTest, IdleSessionsExpireAndSayso) {
  const v1::ModelInfo info = GetModelInfo(stub(), kLm);
  std::mt19937_64 rng(1);
  const std::string idle = CreateSession(stub(), kLm, RandomInput(info, 3, rng));
  EXPECT_EQ(GetSession(stub(), idle).idle_ttl_seconds(), 1u);
  v1::CreateSessionRequest create;
  create.set_model(kLm);
  create.set_idle_ttl_seconds(60);
  auto long_lived = Call(stub(), &AarenStub::CreateSession, create);
  ASSERT_TRUE(long_lived.ok()) << StatusString(long_lived.status);
  const std::string busy = CreateSession(stub(), kLm);

  // `busy` is used every 300 ms, `idle` never, for 2.5 s.
  const auto start = Clock::now();
  int64_t busy_position = 0;
  while (Clock::now() - start < milliseconds(2500)) {
    v1::AppendRequest append;
    append.set_session_id(busy);
    append.mutable_input()->add_tokens(1);
    auto appended = Call(stub(), &AarenStub::Append, append);
    ASSERT_TRUE(appended.ok()) << "a session in use expired: " << StatusString(appended.status);
    busy_position = appended.response.position();
    std::this_thread::sleep_for(milliseconds(300));
  }
  grpc::Status status;
  GetSession(stub(), idle, &status);
  EXPECT_TRUE(HasStatus(status, Code::NOT_FOUND, {"expired", idle}));
  v1::AppendRequest append;
  append.set_session_id(idle);
  append.mutable_input()->add_tokens(1);
  EXPECT_TRUE(
      HasStatus(Call(stub(), &AarenStub::Append, append).status, Code::NOT_FOUND, {"expired"}));
  EXPECT_EQ(GetSession(stub(), long_lived.response.session_id()).position(), 0);
  EXPECT_EQ(GetSession(stub(), busy).position(), busy_position);
}

// ---- Clients that drop ----

class DropTest : public SharedServerTest<DropTest> {
 public:
  static ServerFlags Flags() { return DemoFlags({}); }
};

TEST_F(DropTest, ClientDroppingMidStreamLeavesItsSessionIntact) {
  const v1::ModelInfo info = GetModelInfo(stub(), kLm);
  std::mt19937_64 rng(2);
  v1::Sequence history = RandomInput(info, 6, rng);
  const std::string id = CreateSession(stub(), kLm, history);
  {
    auto other_stub = NewAarenStub(*server_);
    StreamClient stream(*other_stub);
    v1::OpenSession open;
    open.set_session_id(id);
    ASSERT_TRUE(stream.Open(open).has_value()) << StatusString(stream.Finish());
    for (int t = 0; t < 5; ++t) {
      v1::AppendRequest append;
      append.mutable_input()->add_tokens(t + 20);
      ASSERT_TRUE(stream.Append(append).has_value()) << StatusString(stream.Finish());
      history.add_tokens(t + 20);
    }
    stream.Cancel();  // no WritesDone, no Finish: the client vanishes
  }
  EXPECT_EQ(GetSession(stub(), id).position(), 11);
  // Another client continues at the right position with the right state.
  v1::AppendRequest append;
  append.set_session_id(id);
  append.set_expected_position(11);
  append.mutable_input()->add_tokens(30);
  auto appended = Call(stub(), &AarenStub::Append, append);
  ASSERT_TRUE(appended.ok()) << StatusString(appended.status);
  history.add_tokens(30);
  EXPECT_LT(RelativeError(ToVector(appended.response.outputs()),
                          Rows(ScoreAll(stub(), kLm, history), 43, 11, 12)),
            kTolerance);
}

TEST_F(DropTest, ClientDroppingWithAnAppendInFlightAppliesItWhollyOrNotAtAll) {
  const v1::ModelInfo info = GetModelInfo(stub(), kTs);
  std::mt19937_64 rng(3);
  v1::Sequence history = RandomInput(info, 4, rng);
  const std::string id = CreateSession(stub(), kTs, history);
  const v1::Sequence in_flight = RandomInput(info, 50, rng);
  for (int round = 0; round < 5; ++round) {
    const int64_t before = GetSession(stub(), id).position();
    {
      auto other_stub = NewAarenStub(*server_);
      StreamClient stream(*other_stub);
      v1::OpenSession open;
      open.set_session_id(id);
      ASSERT_TRUE(stream.Open(open).has_value()) << StatusString(stream.Finish());
      v1::StreamRequest request;
      *request.mutable_append()->mutable_input() = in_flight;
      stream.Write(request);
      if (round > 0) std::this_thread::sleep_for(milliseconds(round));
      stream.Cancel();
    }
    // Let the server finish whatever it accepted, then look.
    std::this_thread::sleep_for(milliseconds(100));
    const int64_t after = GetSession(stub(), id).position();
    ASSERT_TRUE(after == before || after == before + 50)
        << "round " << round << ": position " << before << " -> " << after;
    if (after == before + 50) history = ConcatInput(history, in_flight);
  }
  // Whatever was applied, the state is that of the applied inputs.
  const v1::Sequence x = RandomInput(info, 2, rng);
  v1::AppendRequest append;
  append.set_session_id(id);
  *append.mutable_input() = x;
  auto appended = Call(stub(), &AarenStub::Append, append);
  ASSERT_TRUE(appended.ok()) << StatusString(appended.status);
  const int64_t n = InputLength(info, history);
  EXPECT_LT(RelativeError(ToVector(appended.response.outputs()),
                          Rows(ScoreAll(stub(), kTs, ConcatInput(history, x)), 1, n, n + 2)),
            kTolerance);
}

TEST_F(DropTest, ClientCancellingGenerateLeavesAUsableSession) {
  const v1::ModelInfo info = GetModelInfo(stub(), kLm);
  std::mt19937_64 rng(4);
  const std::string id = CreateSession(stub(), kLm, RandomInput(info, 5, rng));
  {
    grpc::ClientContext context;
    v1::GenerateRequest request;
    request.set_session_id(id);
    request.set_max_tokens(4096);  // --max_generate_tokens' default
    auto reader = stub().Generate(&context, request);
    v1::GenerateResponse response;
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(reader->Read(&response));
    context.TryCancel();
    while (reader->Read(&response)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), Code::CANCELLED);
  }
  std::this_thread::sleep_for(milliseconds(100));
  const int64_t position = GetSession(stub(), id).position();
  EXPECT_GE(position, 8);
  EXPECT_LT(position, 5 + 4096) << "generation went on after the client cancelled";
  v1::AppendRequest append;
  append.set_session_id(id);
  append.set_expected_position(position);
  append.mutable_input()->add_tokens(1);
  auto appended = Call(stub(), &AarenStub::Append, append);
  ASSERT_TRUE(appended.ok()) << StatusString(appended.status);
  EXPECT_EQ(appended.response.position(), position + 1);
}

TEST_F(DropTest, AppendWhoseDeadlinePassesWhileQueuedIsNotApplied) {
  const v1::ModelInfo info = GetModelInfo(stub(), kTs);
  std::mt19937_64 rng(6);
  const v1::Sequence prefix = RandomInput(info, 4, rng);
  const std::string id = CreateSession(stub(), kTs, prefix);
  const std::string before = SnapshotBytes(stub(), id);
  // Keep the engine busy with a long Score, then send a long append with a short deadline.
  v1::ScoreRequest busy;
  busy.set_model(kTs);
  for (int i = 0; i < 8; ++i) *busy.add_sequences() = RandomInput(info, 20000, rng);
  busy.set_output_mode(v1::OUTPUT_MODE_NONE);
  std::thread busy_client([&] {
    auto busy_stub = NewAarenStub(*server_);
    EXPECT_TRUE(Call(*busy_stub, &AarenStub::Score, busy).ok());
  });
  std::this_thread::sleep_for(milliseconds(100));
  v1::AppendRequest append;
  append.set_session_id(id);
  *append.mutable_input() = RandomInput(info, 20000, rng);
  auto late = Call(stub(), &AarenStub::Append, append, milliseconds(5));
  EXPECT_EQ(late.status.error_code(), Code::DEADLINE_EXCEEDED) << StatusString(late.status);
  busy_client.join();
  std::this_thread::sleep_for(milliseconds(100));
  EXPECT_EQ(SnapshotBytes(stub(), id), before)
      << "an append whose client gave up (deadline) was still applied";
}

// ---- SIGTERM drain ----

TEST(DrainTest, InFlightScoreCompletesAndServerExitsZero) {
  constexpr int kSequences = 16;
  constexpr int64_t kTokens = 20000;
  const int metrics_port = FreePort();
  auto started = ServerProcess::Start(DemoFlags(
      {"--max_message_bytes", "268435456", "--metrics_port", std::to_string(metrics_port)}));
  ASSERT_TRUE(started.ok()) << started.status();
  std::unique_ptr<ServerProcess> server = std::move(*started);
  auto stub = NewAarenStub(*server);
  const v1::ModelInfo info = GetModelInfo(*stub, kTs);
  std::mt19937_64 rng(5);
  v1::ScoreRequest request;
  request.set_model(kTs);
  for (int i = 0; i < kSequences; ++i) *request.add_sequences() = RandomInput(info, kTokens, rng);

  // A first run gives the expected outputs and how long the Score takes. On a fast backend (the
  // GPU scores this in milliseconds) the request is doubled until it takes long enough to still be
  // in flight when SIGTERM arrives.
  CallResult<v1::ScoreResponse> expected;
  Clock::duration duration{};
  auto calibrate = [&] {
    const auto start = Clock::now();
    expected = Call(*stub, &AarenStub::Score, request);
    duration = Clock::now() - start;
  };
  calibrate();
  ASSERT_TRUE(expected.ok()) << StatusString(expected.status);
  for (int doubling = 0; doubling < 4 && duration < milliseconds(300); ++doubling) {
    const int n = request.sequences_size();
    for (int i = 0; i < n; ++i) *request.add_sequences() = request.sequences(i);
    calibrate();
    ASSERT_TRUE(expected.ok()) << StatusString(expected.status);
  }
  RecordProperty("score_ms",
                 static_cast<int>(std::chrono::duration_cast<milliseconds>(duration).count()));

  // The second run is in flight when SIGTERM arrives: its first Forward has run (a fixed wait
  // raced the request's own transfer on a loaded machine, and the server, draining before it
  // had the request, reset the connection).
  auto ticks = [&] {
    const double n =
        MetricValue(ScrapeMetrics(metrics_port), "aaren_scheduler_batch_tokens_count", "");
    return std::isnan(n) ? 0.0 : n;
  };
  const double ticks_before = ticks();
  CallResult<v1::ScoreResponse> drained;
  std::atomic<bool> done{false};
  Clock::time_point finished_at;
  std::thread client([&] {
    auto own_stub = NewAarenStub(*server);
    drained = Call(*own_stub, &AarenStub::Score, request);
    finished_at = Clock::now();
    done = true;
  });
  const auto give_up = Clock::now() + std::chrono::seconds(60);
  while (ticks() == ticks_before && !done.load() && Clock::now() < give_up) {
    std::this_thread::sleep_for(milliseconds(2));
  }
  ASSERT_FALSE(done.load()) << "the Score finished before SIGTERM: nothing to drain";
  const auto signalled_at = Clock::now();
  server->Signal(SIGTERM);

  // New work is refused while draining (or the server is already gone): UNAVAILABLE.
  std::this_thread::sleep_for(milliseconds(20));
  {
    auto late_stub = NewAarenStub(*server);
    v1::CreateSessionRequest create;
    create.set_model(kLm);
    auto late = Call(*late_stub, &AarenStub::CreateSession, create, milliseconds(5000));
    EXPECT_EQ(late.status.error_code(), Code::UNAVAILABLE) << StatusString(late.status);
  }
  client.join();
  ASSERT_TRUE(drained.ok()) << "in-flight Score during drain: " << StatusString(drained.status);
  EXPECT_GT(finished_at, signalled_at);
  ASSERT_EQ(drained.response.results_size(), request.sequences_size());
  for (int i = 0; i < request.sequences_size(); ++i) {
    EXPECT_LT(RelativeError(ToVector(drained.response.results(i).outputs()),
                            ToVector(expected.response.results(i).outputs())),
              1e-6)
        << "sequence " << i;
  }
  const std::optional<int> exit_status = server->WaitForExit(std::chrono::seconds(60));
  ASSERT_TRUE(exit_status.has_value()) << "still running 60 s after SIGTERM";
  EXPECT_TRUE(WIFEXITED(*exit_status) && WEXITSTATUS(*exit_status) == 0)
      << DescribeExit(*exit_status);
}

TEST(DrainTest, OpenStreamsEndWithUnavailableAtOnceNotAtTheDeadline) {
  // A replica being replaced: its Stream clients must reconnect elsewhere now, with a status
  // that says to, not be cut off with CANCELLED when --drain_timeout runs out.
  auto started = ServerProcess::Start(DemoFlags({"--drain_timeout", "60s"}));
  ASSERT_TRUE(started.ok()) << started.status();
  std::unique_ptr<ServerProcess> server = std::move(*started);
  auto stub = NewAarenStub(*server);
  std::vector<std::unique_ptr<StreamClient>> streams;
  for (int i = 0; i < 4; ++i) {
    streams.push_back(std::make_unique<StreamClient>(*stub));
    v1::OpenSession open;
    open.set_model(kLm);
    ASSERT_TRUE(streams.back()->Open(open).has_value());
    v1::AppendRequest append;
    append.mutable_input()->add_tokens(1);
    ASSERT_TRUE(streams.back()->Append(append).has_value());
  }
  const auto start = Clock::now();
  server->Signal(SIGTERM);
  for (auto& stream : streams) {
    v1::StreamResponse response;
    EXPECT_FALSE(stream->Read(&response)) << "a reply after SIGTERM without an append";
    const grpc::Status st = stream->Finish();
    EXPECT_EQ(st.error_code(), Code::UNAVAILABLE) << StatusString(st);
    EXPECT_NE(st.error_message().find("shutting down"), std::string::npos) << st.error_message();
  }
  const std::optional<int> exit_status = server->WaitForExit(std::chrono::seconds(60));
  ASSERT_TRUE(exit_status.has_value()) << "still running 60 s after SIGTERM";
  EXPECT_TRUE(WIFEXITED(*exit_status) && WEXITSTATUS(*exit_status) == 0)
      << DescribeExit(*exit_status);
  // Far inside the 60 s drain deadline (the streams did not hold it up).
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(30));
}

TEST(DrainTest, IdleServerExitsZeroOnSigterm) {
  auto started = ServerProcess::Start(DemoFlags({}));
  ASSERT_TRUE(started.ok()) << started.status();
  std::unique_ptr<ServerProcess> server = std::move(*started);
  const auto start = Clock::now();
  server->Signal(SIGTERM);
  const std::optional<int> exit_status = server->WaitForExit(std::chrono::seconds(30));
  ASSERT_TRUE(exit_status.has_value()) << "still running 30 s after SIGTERM";
  EXPECT_TRUE(WIFEXITED(*exit_status) && WEXITSTATUS(*exit_status) == 0)
      << DescribeExit(*exit_status);
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(5)) << "an idle server drains at once";
}

// Limits that the engine could not honour are start-up errors naming the flag: an append's retry
// record holds its length in 32 bits, so no sequence may be longer than 2^31 - 1 tokens.
TEST(StartupTest, SequenceLimitBeyondThirtyTwoBitsIsRefusedNamingTheFlag) {
  for (const char* bad : {"2147483648", "0"}) {
    ServerFlags flags =
        DemoFlags({"--max_sequence_tokens", bad, "--max_request_tokens", "4294967296"});
    flags.start_timeout = std::chrono::seconds(20);
    auto refused = ServerProcess::Start(flags);
    ASSERT_FALSE(refused.ok()) << "started with --max_sequence_tokens " << bad;
    EXPECT_THAT(std::string(refused.status().message()),
                ::testing::HasSubstr("--max_sequence_tokens: " + std::string(bad)));
  }
  // The largest allowed value starts.
  auto started = ServerProcess::Start(
      DemoFlags({"--max_sequence_tokens", "2147483647", "--max_request_tokens", "4294967296"}));
  ASSERT_TRUE(started.ok()) << started.status();
}

}  // namespace
}  // namespace aaren::testing
