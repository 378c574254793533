// SPDX-License-Identifier: Apache-2.0
// Concurrency end to end: many streaming clients on distinct sessions get exactly the outputs a
// single client gets (continuous batching must not mix sessions up), and concurrent appends to
// one session are applied in order, each exactly once, with expected_position arbitrating.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <latch>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tests/server/e2e_support.h"

namespace aaren::testing {
namespace {

constexpr double kTolerance = 1e-5;
constexpr char kLm[] = "demo-lm";
constexpr char kTs[] = "demo-ts";

class ConcurrencyTest : public SharedServerTest<ConcurrencyTest> {
 public:
  static ServerFlags Flags() {
    ServerFlags flags;
    flags.model_dirs = {DemoModelDir(kLm).string(), DemoModelDir(kTs).string()};
    flags.extra = {"--threads", "2"};
    return flags;
  }
};

TEST_F(ConcurrencyTest, SixtyFourStreamsEachGetTheSingleClientOutputs) {
  constexpr int kClients = 64;
  constexpr int64_t kTokens = 200;
  const v1::ModelInfo lm = GetModelInfo(stub(), kLm);
  const v1::ModelInfo ts = GetModelInfo(stub(), kTs);
  std::mt19937_64 rng(64);
  std::vector<const v1::ModelInfo*> models;
  std::vector<v1::Sequence> inputs;
  std::vector<std::vector<float>> expected;
  for (int c = 0; c < kClients; ++c) {
    models.push_back(c % 4 == 3 ? &ts : &lm);  // both models batched side by side
    inputs.push_back(RandomInput(*models.back(), kTokens, rng));
    expected.push_back(ScoreAll(stub(), models.back()->name(), inputs.back()));
  }

  std::vector<std::vector<float>> streamed(kClients);
  std::vector<std::string> errors(kClients);
  // Start together so that the appends really interleave. Every client counts down, opened
  // or not (one that failed must not leave the others waiting), and blocks rather than spins
  // (64 spinning threads would starve the server on a 2-core machine).
  std::latch opened(kClients);
  std::vector<std::thread> threads;
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      // Each client on its own connection, connected before its stream opens: one of 64
      // connects at once can fail on a loaded machine (the channel then retries), and the open
      // would have taken that for the server's answer.
      std::shared_ptr<grpc::Channel> channel = server_->NewChannel();
      const bool connected =
          channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(60));
      auto client_stub = v1::Aaren::NewStub(channel);
      StreamClient stream(*client_stub, std::chrono::seconds(120));
      v1::OpenSession open;
      open.set_model(models[c]->name());
      const bool ok = connected && stream.Open(open).has_value();
      opened.arrive_and_wait();
      if (!ok) {
        errors[c] = connected ? "open: " + StatusString(stream.Finish()) : "connect: timed out";
        return;
      }
      for (int64_t t = 0; t < kTokens; ++t) {
        v1::AppendRequest append;
        *append.mutable_input() = SliceInput(*models[c], inputs[c], t, t + 1);
        std::optional<v1::AppendResponse> reply = stream.Append(append);
        if (!reply) {
          errors[c] = "token " + std::to_string(t) + ": " + StatusString(stream.Finish());
          return;
        }
        if (reply->position() != t + 1) {
          errors[c] =
              "token " + std::to_string(t) + ": position " + std::to_string(reply->position());
          return;
        }
        streamed[c].insert(streamed[c].end(), reply->outputs().begin(), reply->outputs().end());
      }
      const grpc::Status finished = stream.Finish();
      if (!finished.ok()) errors[c] = "finish: " + StatusString(finished);
    });
  }
  for (std::thread& t : threads) t.join();
  for (int c = 0; c < kClients; ++c) {
    EXPECT_EQ(errors[c], "") << "client " << c;
    EXPECT_LT(RelativeError(streamed[c], expected[c]), kTolerance)
        << "client " << c << " (" << models[c]->name() << ")";
  }
}

// One append a client made, as the server acknowledged it.
struct AppliedAppend {
  int64_t start = 0;  // the session position it was applied at
  std::vector<int32_t> tokens;
  std::vector<float> outputs;
};

// Checks that `applied` tiles [0, total) without gaps or overlaps, that the session's position
// is `total`, and that every acknowledged output equals Score over the recorded token order.
void ExpectAppliedInOrderOnce(AarenStub& stub, const std::string& session_id,
                              std::vector<AppliedAppend> applied, size_t expected_count) {
  ASSERT_EQ(applied.size(), expected_count) << "acknowledged appends";
  std::sort(applied.begin(), applied.end(),
            [](const AppliedAppend& a, const AppliedAppend& b) { return a.start < b.start; });
  v1::Sequence order;
  for (const AppliedAppend& a : applied) {
    ASSERT_EQ(a.start, order.tokens_size()) << "a gap or an overlap: an append applied twice, "
                                               "lost, or at the wrong position";
    order.mutable_tokens()->Add(a.tokens.begin(), a.tokens.end());
  }
  v1::GetSessionRequest get;
  get.set_session_id(session_id);
  auto session = Call(stub, &AarenStub::GetSession, get);
  ASSERT_TRUE(session.ok()) << StatusString(session.status);
  EXPECT_EQ(session.response.position(), order.tokens_size());

  const std::vector<float> expected = ScoreAll(stub, kLm, order);
  for (const AppliedAppend& a : applied) {
    const int64_t end = a.start + static_cast<int64_t>(a.tokens.size());
    EXPECT_LT(RelativeError(a.outputs, Rows(expected, 43, a.start, end)), kTolerance)
        << "append at " << a.start;
  }
  // The final state is the state of the recorded order: the next token's output agrees.
  v1::AppendRequest next;
  next.set_session_id(session_id);
  next.mutable_input()->add_tokens(7);
  auto appended = Call(stub, &AarenStub::Append, next);
  ASSERT_TRUE(appended.ok()) << StatusString(appended.status);
  order.add_tokens(7);
  EXPECT_LT(RelativeError(
                ToVector(appended.response.outputs()),
                Rows(ScoreAll(stub, kLm, order), 43, order.tokens_size() - 1, order.tokens_size())),
            kTolerance);
}

TEST_F(ConcurrencyTest, EightClientsOnOneSessionWithExpectedPosition) {
  constexpr int kClients = 8;
  constexpr int kAppendsEach = 25;
  const std::string id = CreateSession(stub(), kLm);
  ASSERT_FALSE(id.empty());
  std::mutex mu;
  std::vector<AppliedAppend> applied;
  std::vector<std::string> errors(kClients);
  std::atomic<int> aborted{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      auto client_stub = NewAarenStub(*server_);
      int64_t known = 0;  // the position this client believes the session has
      for (int j = 0; j < kAppendsEach; ++j) {
        // Unique across clients (first two tokens), so no one's append looks like another's retry.
        std::vector<int32_t> tokens = {c, j};
        if (j % 2 == 1) tokens.push_back((c * kAppendsEach + j) % 43);
        v1::AppendRequest append;
        append.set_session_id(id);
        append.mutable_input()->mutable_tokens()->Add(tokens.begin(), tokens.end());
        for (int attempt = 0;; ++attempt) {
          if (attempt > 10000) {
            errors[c] = "append " + std::to_string(j) + " never applied";
            return;
          }
          append.set_expected_position(known);
          auto result = Call(*client_stub, &AarenStub::Append, append);
          if (result.ok()) {
            if (result.response.replayed()) {
              errors[c] = "append " + std::to_string(j) + " came back replayed";
              return;
            }
            AppliedAppend a;
            a.start = known;
            a.tokens = tokens;
            a.outputs = ToVector(result.response.outputs());
            if (result.response.position() != known + static_cast<int64_t>(tokens.size())) {
              errors[c] = "append " + std::to_string(j) + " at " + std::to_string(known) +
                          " returned position " + std::to_string(result.response.position());
              return;
            }
            known = result.response.position();
            std::lock_guard<std::mutex> lock(mu);
            applied.push_back(std::move(a));
            break;
          }
          if (result.status.error_code() != grpc::StatusCode::ABORTED) {
            errors[c] = "append " + std::to_string(j) + ": " + StatusString(result.status);
            return;
          }
          aborted.fetch_add(1);
          v1::GetSessionRequest get;
          get.set_session_id(id);
          auto session = Call(*client_stub, &AarenStub::GetSession, get);
          if (!session.ok()) {
            errors[c] = "get: " + StatusString(session.status);
            return;
          }
          known = session.response.position();
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int c = 0; c < kClients; ++c) EXPECT_EQ(errors[c], "") << "client " << c;
  RecordProperty("aborted_appends", aborted.load());
  ExpectAppliedInOrderOnce(stub(), id, applied, kClients * kAppendsEach);
}

TEST_F(ConcurrencyTest, EightClientsOnOneSessionWithoutExpectedPosition) {
  constexpr int kClients = 8;
  constexpr int kAppendsEach = 25;
  const std::string id = CreateSession(stub(), kLm);
  ASSERT_FALSE(id.empty());
  std::mutex mu;
  std::vector<AppliedAppend> applied;
  std::vector<std::string> errors(kClients);
  std::vector<std::thread> threads;
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      auto client_stub = NewAarenStub(*server_);
      for (int j = 0; j < kAppendsEach; ++j) {
        std::vector<int32_t> tokens = {c, j};
        if (j % 3 == 0) tokens.push_back(42 - c);
        v1::AppendRequest append;
        append.set_session_id(id);
        append.mutable_input()->mutable_tokens()->Add(tokens.begin(), tokens.end());
        auto result = Call(*client_stub, &AarenStub::Append, append);
        if (!result.ok()) {
          errors[c] = "append " + std::to_string(j) + ": " + StatusString(result.status);
          return;
        }
        AppliedAppend a;
        a.start = result.response.position() - static_cast<int64_t>(tokens.size());
        a.tokens = tokens;
        a.outputs = ToVector(result.response.outputs());
        std::lock_guard<std::mutex> lock(mu);
        applied.push_back(std::move(a));
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int c = 0; c < kClients; ++c) EXPECT_EQ(errors[c], "") << "client " << c;
  ExpectAppliedInOrderOnce(stub(), id, applied, kClients * kAppendsEach);
}

TEST_F(ConcurrencyTest, ForkAndExportDuringStreamingSeeConsistentStates) {
  constexpr int64_t kTokens = 400;
  const v1::ModelInfo info = GetModelInfo(stub(), kLm);
  std::mt19937_64 rng(11);
  const v1::Sequence x = RandomInput(info, kTokens, rng);
  const std::vector<float> expected = ScoreAll(stub(), kLm, x);
  const std::string id = CreateSession(stub(), kLm);
  std::atomic<bool> streaming{true};
  std::string stream_error;
  std::thread writer([&] {
    auto writer_stub = NewAarenStub(*server_);
    StreamClient stream(*writer_stub);
    v1::OpenSession open;
    open.set_session_id(id);
    if (!stream.Open(open)) {
      stream_error = StatusString(stream.Finish());
    } else {
      for (int64_t t = 0; t < kTokens; ++t) {
        v1::AppendRequest append;
        *append.mutable_input() = SliceInput(info, x, t, t + 1);
        if (!stream.Append(append)) {
          stream_error = StatusString(stream.Finish());
          break;
        }
      }
      if (stream_error.empty()) (void)stream.Finish();
    }
    streaming = false;
  });
  // While the stream runs, forks and exports must each capture the state of exactly `position`
  // tokens: their last output is Score's row position - 1.
  int checked = 0;
  while (streaming.load()) {
    v1::ForkSessionRequest fork;
    fork.set_session_id(id);
    auto forked = Call(stub(), &AarenStub::ForkSession, fork);
    ASSERT_TRUE(forked.ok()) << StatusString(forked.status);
    v1::ExportSessionRequest exp;
    exp.set_session_id(forked.response.session_id());
    auto exported = Call(stub(), &AarenStub::ExportSession, exp);
    ASSERT_TRUE(exported.ok()) << StatusString(exported.status);
    const v1::SessionSnapshot& snapshot = exported.response.snapshot();
    const int64_t p = snapshot.position();
    EXPECT_EQ(p, forked.response.position());
    if (p > 0) {
      std::vector<float> last(snapshot.last_output().size() / sizeof(float));
      std::memcpy(last.data(), snapshot.last_output().data(), last.size() * sizeof(float));
      EXPECT_LT(RelativeError(last, Rows(expected, 43, p - 1, p)), kTolerance)
          << "fork at position " << p;
      ++checked;
    }
    v1::DeleteSessionRequest del;
    del.set_session_id(forked.response.session_id());
    EXPECT_TRUE(Call(stub(), &AarenStub::DeleteSession, del).ok());
  }
  writer.join();
  EXPECT_EQ(stream_error, "");
  EXPECT_GT(checked, 0);
  RecordProperty("forks_checked", checked);
}

}  // namespace
}  // namespace aaren::testing
