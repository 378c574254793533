// SPDX-License-Identifier: Apache-2.0
// Engine, the data path: Append and Score against a directly driven backend, idempotent appends
// (expected_position), concurrent appenders, chunked prefill, cancellation, scheduling (a long
// Score does not hold up streaming appends) and eviction/resume under a small pool. The session
// operations (create, fork, export/import, generate, delete, shutdown) are in
// engine_session_test.cc.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "tests/engine/engine_fixture.h"

namespace aaren::testing {
namespace {

using ::testing::HasSubstr;

class EngineDataPathTest : public EngineTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(EngineDataPathTest, AppendOutputsEqualScoreOutputs) {
  const std::string model = GetParam();
  const int64_t nf = ConfigOf(model).n_features;
  const int64_t od = ConfigOf(model).output_dim;
  auto engine = MakeEngine();
  const SequenceInput whole = RandomInput(model, 60, 1);
  const SessionInfo info = Open(*engine, model);
  ASSERT_EQ(info.position, 0);

  std::vector<float> appended;
  int64_t at = 0;
  for (int64_t n : {1, 5, 20, 1, 33}) {
    absl::StatusOr<AppendResult> r = Append(*engine, info.session_id, Slice(whole, at, at + n, nf));
    ASSERT_TRUE(r.ok()) << r.status();
    at += n;
    EXPECT_EQ(r->position, at);
    EXPECT_EQ(r->output_dim, od);
    EXPECT_FALSE(r->replayed);
    ASSERT_EQ(static_cast<int64_t>(r->outputs.size()), n * od);
    appended.insert(appended.end(), r->outputs.begin(), r->outputs.end());
  }
  absl::StatusOr<std::vector<SequenceOutput>> scored = Score(*engine, model, {whole});
  ASSERT_TRUE(scored.ok()) << scored.status();
  ASSERT_EQ(scored->size(), 1u);
  EXPECT_EQ((*scored)[0].position, 60);
  EXPECT_EQ((*scored)[0].output_dim, od);
  EXPECT_TRUE((*scored)[0].session_id.empty());
  EXPECT_LT(MaxRelativeError(appended, (*scored)[0].outputs), kTolerance);
  EXPECT_LT(MaxRelativeError(appended, Reference(model, whole)), kTolerance);
  EXPECT_EQ(engine->GetSession(info.session_id)->position, 60);
}

TEST_P(EngineDataPathTest, OutputModesOfAppendAndScore) {
  const std::string model = GetParam();
  const int64_t nf = ConfigOf(model).n_features;
  const int64_t od = ConfigOf(model).output_dim;
  auto engine = MakeEngine();
  const SequenceInput whole = RandomInput(model, 30, 2);
  const std::vector<float> ref = Reference(model, whole);
  const std::string id = Open(*engine, model).session_id;

  absl::StatusOr<AppendResult> r =
      Append(*engine, id, Slice(whole, 0, 10, nf), std::nullopt, OutputMode::kNone);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->outputs.empty());
  EXPECT_EQ(r->position, 10);
  r = Append(*engine, id, Slice(whole, 10, 30, nf), std::nullopt, OutputMode::kLast);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_LT(MaxRelativeError(r->outputs, Rows(ref, 29, 30, od)), kTolerance);

  absl::StatusOr<std::vector<SequenceOutput>> last =
      Score(*engine, model, {whole, Slice(whole, 0, 1, nf)}, OutputMode::kLast);
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_LT(MaxRelativeError((*last)[0].outputs, Rows(ref, 29, 30, od)), kTolerance);
  EXPECT_LT(MaxRelativeError((*last)[1].outputs, Rows(ref, 0, 1, od)), kTolerance);
  absl::StatusOr<std::vector<SequenceOutput>> none =
      Score(*engine, model, {whole}, OutputMode::kNone);
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE((*none)[0].outputs.empty());
  EXPECT_EQ((*none)[0].position, 30);
}

INSTANTIATE_TEST_SUITE_P(Models, EngineDataPathTest, ::testing::Values("tok", "feat"));

TEST_F(EngineTest, ScoreSeveralSequencesOfDifferentLengths) {
  auto engine = MakeEngine(MaxBatchTokens(128));
  std::vector<SequenceInput> seqs;
  for (int64_t n : {1, 17, 300, 64}) seqs.push_back(RandomInput("tok", n, 100 + n));
  absl::StatusOr<std::vector<SequenceOutput>> scored = Score(*engine, "tok", seqs);
  ASSERT_TRUE(scored.ok()) << scored.status();
  ASSERT_EQ(scored->size(), seqs.size());
  for (size_t i = 0; i < seqs.size(); ++i) {
    EXPECT_EQ((*scored)[i].position, static_cast<int64_t>(seqs[i].tokens.size()));
    EXPECT_LT(MaxRelativeError((*scored)[i].outputs, Reference("tok", seqs[i])), kTolerance)
        << "sequence " << i;
  }
  // Scoring creates no session.
  EXPECT_EQ(engine->stats().store.created, 0u);
}

TEST_F(EngineTest, ScoreWithPrefillCreatesSessionsThatContinue) {
  auto engine = MakeEngine();
  const SequenceInput a = RandomInput("tok", 12, 5);
  const SequenceInput b = RandomInput("tok", 40, 6);
  absl::StatusOr<std::vector<SequenceOutput>> scored =
      Score(*engine, "tok", {a, b}, OutputMode::kLast, /*prefill=*/true);
  ASSERT_TRUE(scored.ok()) << scored.status();
  for (size_t i = 0; i < 2; ++i) {
    const SequenceOutput& out = (*scored)[i];
    ASSERT_EQ(out.session_id.size(), 32u);
    absl::StatusOr<SessionInfo> info = engine->GetSession(out.session_id);
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->position, out.position);
    EXPECT_EQ(info->model, "tok");
  }
  SequenceInput b_more = b;
  Concat(b_more, TokensInput({3, 4}));
  absl::StatusOr<AppendResult> r = Append(*engine, (*scored)[1].session_id, TokensInput({3, 4}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->position, 42);
  EXPECT_LT(MaxRelativeError(r->outputs, Rows(Reference("tok", b_more), 40, 42, 37)), kTolerance);
}

TEST_F(EngineTest, ScoreWithPrefillIsAllOrNothing) {
  auto engine = MakeEngine();
  SequenceInput overflow = RandomInput("feat", 4, 8);
  std::fill(overflow.features.begin(), overflow.features.end(), 3e38f);  // finite, overflows
  absl::StatusOr<std::vector<SequenceOutput>> scored =
      Score(*engine, "feat", {RandomInput("feat", 10, 7), overflow}, OutputMode::kLast,
            /*prefill=*/true);
  ASSERT_FALSE(scored.ok());
  EXPECT_EQ(scored.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(scored.status().message()), HasSubstr("sequences[1]"));
  // The failed Score queued the deletes of its sessions before it reported; any later tick
  // has run them.
  const std::string id = Open(*engine, "tok").session_id;
  ASSERT_TRUE(Append(*engine, id, TokensInput({1})).ok());
  const EngineStats stats = engine->stats();
  EXPECT_EQ(stats.store.created, 3u);
  EXPECT_EQ(stats.store.deleted, 2u);
  EXPECT_EQ(stats.store.pool, 1);
}

TEST_F(EngineTest, RequestErrorsNameTheField) {
  EngineOptions options;
  options.max_sequence_tokens = 50;
  auto engine = MakeEngine(options);
  const std::string id = Open(*engine, "tok").session_id;

  absl::StatusOr<AppendResult> r = Append(*engine, "missing", TokensInput({1}));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("session_id"));
  r = Append(*engine, id, TokensInput({1, 37}));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("input.tokens[1]"));
  r = Append(*engine, id, SequenceInput{});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("input.tokens"));
  r = Append(*engine, id, FeaturesInput({1.0f}));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("input.features"));
  r = Append(*engine, id, RandomInput("tok", 51, 1));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("input: 51 tokens"));
  r = Append(*engine, id, TokensInput({1}), /*expected_position=*/-1);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("expected_position"));

  absl::StatusOr<std::vector<SequenceOutput>> s = Score(*engine, "nope", {TokensInput({1})});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("model"));
  s = Score(*engine, "tok", {});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("sequences"));
  s = Score(*engine, "tok", {TokensInput({1}), TokensInput({-4})});
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("sequences[1].tokens[0]"));

  // Nothing was run or changed.
  EXPECT_EQ(engine->GetSession(id)->position, 0);
  EXPECT_EQ(engine->stats().tokens_run, 0u);
}

TEST_F(EngineTest, RuntimeInputErrorFailsOnlyThatAppend) {
  auto engine = MakeEngine();
  const std::string bad = Open(*engine, "feat").session_id;
  const std::string good = Open(*engine, "feat").session_id;
  SequenceInput overflow = RandomInput("feat", 3, 1);
  std::fill(overflow.features.begin(), overflow.features.end(), -3e38f);
  const SequenceInput fine = RandomInput("feat", 3, 2);
  std::future<absl::StatusOr<AppendResult>> fb, fg;
  {
    auto held = HoldScheduler(*engine);  // both in one Forward
    fb = AppendAsync(*engine, bad, overflow);
    fg = AppendAsync(*engine, good, fine);
  }
  absl::StatusOr<AppendResult> rb = Await(fb);
  EXPECT_EQ(rb.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(rb.status().message()), HasSubstr("input"));
  EXPECT_THAT(std::string(rb.status().message()), ::testing::Not(HasSubstr("spans[")));
  absl::StatusOr<AppendResult> rg = Await(fg);
  ASSERT_TRUE(rg.ok()) << rg.status();
  EXPECT_LT(MaxRelativeError(rg->outputs, Reference("feat", fine)), kTolerance);
  EXPECT_EQ(engine->GetSession(bad)->position, 0);
}

// ---- expected_position ----

TEST_F(EngineTest, ReplayedAppendReturnsTheSameOutputsWithoutRunningAgain) {
  auto engine = MakeEngine();
  const std::string id = Open(*engine, "tok").session_id;
  const SequenceInput ten = RandomInput("tok", 10, 3);
  absl::StatusOr<AppendResult> first = Append(*engine, id, ten, /*expected_position=*/0);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE(first->replayed);
  EXPECT_EQ(first->position, 10);
  const uint64_t tokens_run = engine->stats().tokens_run;

  absl::StatusOr<AppendResult> again = Append(*engine, id, ten, /*expected_position=*/0);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->replayed);
  EXPECT_EQ(again->position, 10);
  EXPECT_EQ(again->output_dim, first->output_dim);
  EXPECT_EQ(again->outputs, first->outputs);  // bit for bit
  EXPECT_EQ(engine->GetSession(id)->position, 10);
  EXPECT_EQ(engine->stats().tokens_run, tokens_run);

  // One token, LAST: the replay is the session's last output row.
  absl::StatusOr<AppendResult> one =
      Append(*engine, id, TokensInput({7}), /*expected_position=*/10, OutputMode::kLast);
  ASSERT_TRUE(one.ok()) << one.status();
  absl::StatusOr<AppendResult> one_again =
      Append(*engine, id, TokensInput({7}), /*expected_position=*/10, OutputMode::kLast);
  ASSERT_TRUE(one_again.ok()) << one_again.status();
  EXPECT_TRUE(one_again->replayed);
  EXPECT_EQ(one_again->outputs, one->outputs);
  EXPECT_EQ(one_again->position, 11);

  // NONE: nothing to return but the position.
  ASSERT_TRUE(Append(*engine, id, TokensInput({1, 2}), 11, OutputMode::kNone).ok());
  absl::StatusOr<AppendResult> none_again =
      Append(*engine, id, TokensInput({1, 2}), 11, OutputMode::kNone);
  ASSERT_TRUE(none_again.ok()) << none_again.status();
  EXPECT_TRUE(none_again->replayed);
  EXPECT_TRUE(none_again->outputs.empty());
  EXPECT_EQ(none_again->position, 13);
  EXPECT_EQ(engine->GetSession(id)->position, 13);
}

TEST_F(EngineTest, StaleExpectedPositionIsAbortedNamingTheCurrentPosition) {
  auto engine = MakeEngine();
  const std::string id = Open(*engine, "tok").session_id;
  ASSERT_TRUE(Append(*engine, id, RandomInput("tok", 10, 4), 0).ok());

  // Not the last append's input (a different one at the same position): not a retry.
  absl::StatusOr<AppendResult> r = Append(*engine, id, TokensInput({5}), 0);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("expected_position: 0"));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("current position 10"));
  r = Append(*engine, id, TokensInput({5}), 3);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("current position 10"));
  r = Append(*engine, id, TokensInput({5}), 11);  // ahead of the session
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAborted);
  // The same input in another output mode is not the same request either.
  r = Append(*engine, id, RandomInput("tok", 10, 4), 0, OutputMode::kLast);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(engine->GetSession(id)->position, 10);

  // After another append, the first can no longer be replayed.
  ASSERT_TRUE(Append(*engine, id, TokensInput({6})).ok());
  r = Append(*engine, id, RandomInput("tok", 10, 4), 0);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("current position 11"));
  EXPECT_EQ(engine->GetSession(id)->position, 11);
}

// Eight writers share one session; each append says where it expects the session to be and
// retries after ABORTED. Every append lands exactly once, at a distinct position, and its outputs
// are those of the whole sequence in landing order.
TEST_F(EngineTest, ConcurrentAppendersWithExpectedPositionNeitherLoseNorDuplicate) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 25;
  constexpr int64_t kLen = 2;
  auto engine = MakeEngine();
  const std::string id = Open(*engine, "tok").session_id;
  struct Landed {
    int64_t position_before;
    std::vector<int32_t> tokens;
    std::vector<float> outputs;
  };
  std::mutex mu;
  std::vector<Landed> landed;
  std::atomic<int> aborted{0};
  std::atomic<int> unexpected{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const std::vector<int32_t> tokens = {t, i};  // unique per append
        while (true) {
          absl::StatusOr<SessionInfo> info = engine->GetSession(id);
          if (!info.ok()) {
            ++unexpected;
            return;
          }
          absl::StatusOr<AppendResult> r = Append(*engine, id, TokensInput(tokens), info->position);
          if (r.ok()) {
            if (r->replayed) ++unexpected;
            std::lock_guard<std::mutex> lock(mu);
            landed.push_back({r->position - kLen, tokens, r->outputs});
            break;
          }
          if (r.status().code() != absl::StatusCode::kAborted) {
            ADD_FAILURE() << r.status();
            ++unexpected;
            return;
          }
          ++aborted;
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  ASSERT_EQ(unexpected.load(), 0);
  ASSERT_EQ(landed.size(), static_cast<size_t>(kThreads * kPerThread));
  std::sort(landed.begin(), landed.end(),
            [](const Landed& a, const Landed& b) { return a.position_before < b.position_before; });
  SequenceInput whole;
  for (size_t k = 0; k < landed.size(); ++k) {
    ASSERT_EQ(landed[k].position_before, static_cast<int64_t>(k) * kLen) << "gap or duplicate";
    Concat(whole, TokensInput(landed[k].tokens));
  }
  EXPECT_EQ(engine->GetSession(id)->position, kThreads * kPerThread * kLen);
  const std::vector<float> ref = Reference("tok", whole);
  for (size_t k = 0; k < landed.size(); ++k) {
    const int64_t p = landed[k].position_before;
    ASSERT_LT(MaxRelativeError(landed[k].outputs, Rows(ref, p, p + kLen, 37)), kTolerance)
        << "append landing at " << p;
  }
  // Contention is likely but not guaranteed: nothing is asserted about `aborted`.
  RecordProperty("aborted_retries", aborted.load());
}

// ---- Chunking and scheduling ----

TEST_F(EngineTest, ChunkedPrefillGivesTheSameStateAsOneChunk) {
  const SequenceInput prefix = RandomInput("tok", 1000, 9);
  const SequenceInput next = RandomInput("tok", 5, 10);
  auto run = [&](int64_t max_batch_tokens, EngineStats* stats) {
    auto engine = MakeEngine(MaxBatchTokens(max_batch_tokens));
    absl::StatusOr<SessionInfo> info = Create(*engine, "tok", prefix);
    EXPECT_TRUE(info.ok()) << info.status();
    if (!info.ok()) return std::make_pair(SessionSnapshot{}, std::vector<float>{});
    EXPECT_EQ(info->position, 1000);
    absl::StatusOr<SessionSnapshot> snap = Export(*engine, info->session_id);
    absl::StatusOr<AppendResult> r = Append(*engine, info->session_id, next);
    EXPECT_TRUE(snap.ok() && r.ok()) << snap.status() << " " << r.status();
    if (!snap.ok() || !r.ok()) return std::make_pair(SessionSnapshot{}, std::vector<float>{});
    *stats = engine->stats();
    return std::make_pair(*snap, r->outputs);
  };
  EngineStats chunked_stats, whole_stats;
  const auto [chunked, chunked_next] = run(64, &chunked_stats);
  const auto [whole, whole_next] = run(8192, &whole_stats);
  EXPECT_EQ(chunked.position, 1000);
  EXPECT_LT(MaxRelativeError(chunked.state, whole.state), kTolerance);
  EXPECT_LT(MaxRelativeError(chunked.last_output, whole.last_output), kTolerance);
  EXPECT_LT(MaxRelativeError(chunked_next, whole_next), kTolerance);
  std::vector<float> ref_state;
  Reference("tok", prefix, &ref_state);
  EXPECT_LT(MaxRelativeError(chunked.state, ref_state), kTolerance);
  // The 1000 tokens really ran in chunks of at most 64 (and exactly once).
  EXPECT_GE(chunked_stats.ticks, 1000u / 64u + 1u);
  EXPECT_EQ(chunked_stats.tokens_run, 1005u);
  EXPECT_EQ(whole_stats.tokens_run, 1005u);
}

// Counts every OnMcaFlops report.
class McaCountingObserver : public EngineObserver {
 public:
  void OnForward(const ServedModel&, bool, int64_t, double) override {}
  void OnQueueWait(const ServedModel&, double) override {}
  void OnTokens(const ServedModel&, bool, int64_t) override {}
  void OnMcaFlops(const ServedModel&, const McaCounts& counts) override {
    std::lock_guard<std::mutex> lock(mu);
    ++calls;
    total += counts;
  }
  std::mutex mu;
  int calls = 0;
  McaCounts total;
};

TEST_F(EngineTest, McaCountsAddUpOverChunksAndReachTheObserver) {
  McaCountingObserver observer;
  EngineOptions options = MaxBatchTokens(64);
  options.observer = &observer;
  auto chunked = MakeEngine(options);
  auto whole = MakeEngine();
  const SequenceInput x = RandomInput("tok", 300, 21);
  const ModelConfig& c = ConfigOf("tok");
  const int64_t exact = 2 * c.d_model * c.d_model * c.n_layers * 300;
  auto score = [&](Engine& e, McaOptions mca) {
    Engine::ScoreParams p;
    p.model = "tok";
    p.sequences = {x};
    p.mca = mca;
    auto f = ScoreAsync(e, std::move(p));
    return Await(f);
  };
  const McaOptions mca{true, 0.5f, 4};
  absl::StatusOr<std::vector<SequenceOutput>> a = score(*chunked, mca);
  absl::StatusOr<std::vector<SequenceOutput>> b = score(*whole, mca);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status() << " " << b.status();
  EXPECT_EQ((*a)[0].mca.value_flops_exact, exact);
  EXPECT_GT((*a)[0].mca.value_flops, 0);
  EXPECT_LT((*a)[0].mca.value_flops, exact);
  // Samples are keyed by position: chunking changes nothing.
  EXPECT_EQ((*b)[0].mca.value_flops_exact, exact);
  EXPECT_LT(MaxRelativeError((*a)[0].outputs, (*b)[0].outputs), kTolerance);
  {
    std::lock_guard<std::mutex> lock(observer.mu);
    EXPECT_EQ(observer.calls, 1);
    EXPECT_EQ(observer.total.value_flops, (*a)[0].mca.value_flops);
    EXPECT_EQ(observer.total.value_flops_exact, exact);
  }
  // Without MCA: spent == exact, reported too.
  absl::StatusOr<std::vector<SequenceOutput>> off = score(*chunked, McaOptions{});
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_EQ((*off)[0].mca.value_flops, exact);
  EXPECT_EQ((*off)[0].mca.value_flops_exact, exact);
  // A bad alpha is refused before anything runs.
  absl::StatusOr<std::vector<SequenceOutput>> bad = score(*chunked, McaOptions{true, -1.0f, 0});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), ::testing::StartsWith("mca.alpha: "));
  std::lock_guard<std::mutex> lock(observer.mu);
  EXPECT_EQ(observer.calls, 2);
}

TEST_F(EngineTest, CancelledQueuedAppendLeavesTheStateUnchanged) {
  auto engine = MakeEngine();
  const std::string id = Open(*engine, "tok").session_id;
  ASSERT_TRUE(Append(*engine, id, RandomInput("tok", 7, 1)).ok());
  auto cancel = std::make_shared<CancelFlag>(false);
  std::future<absl::StatusOr<SessionSnapshot>> before, after;
  std::future<absl::StatusOr<AppendResult>> cancelled;
  {
    auto held = HoldScheduler(*engine);  // nothing below can start before the flag is set
    before = ExportAsync(*engine, id);
    cancelled =
        AppendAsync(*engine, id, RandomInput("tok", 30, 2), std::nullopt, OutputMode::kAll, cancel);
    after = ExportAsync(*engine, id);
    cancel->store(true);
  }
  absl::StatusOr<AppendResult> r = Await(cancelled);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
  absl::StatusOr<SessionSnapshot> b = Await(before), a = Await(after);
  ASSERT_TRUE(b.ok() && a.ok());
  EXPECT_EQ(a->position, 7);
  ASSERT_EQ(a->state.size(), b->state.size());
  EXPECT_EQ(std::memcmp(a->state.data(), b->state.data(), a->state.size() * sizeof(float)), 0);
  EXPECT_EQ(a->last_output, b->last_output);
  EXPECT_EQ(engine->GetSession(id)->position, 7);
}

// A stream's appends share one CancelFlag, which the stream sets when one of them fails. An append
// queued behind a failed one in the same tick must not run before that failure's completion has
// run (it ran in the same tick, and the stream then dropped its reply: applied, never answered).
TEST_F(EngineTest, WorkQueuedBehindAFailedAppendWaitsForTheFailureToBeSeen) {
  auto engine = MakeEngine();
  const std::string id = Open(*engine, "tok").session_id;
  ASSERT_TRUE(Append(*engine, id, RandomInput("tok", 5, 1)).ok());
  auto cancel = std::make_shared<CancelFlag>(false);
  std::promise<absl::Status> failed;
  std::future<absl::StatusOr<AppendResult>> behind;
  {
    auto held = HoldScheduler(*engine);
    Engine::AppendParams stale;
    stale.session_id = id;
    stale.input = TokensInput({1});
    stale.expected_position = 0;  // the session is at 5: ABORTED
    stale.cancel = cancel;
    engine->Append(std::move(stale), [&, cancel](absl::StatusOr<AppendResult> r) {
      cancel->store(true);  // what the stream does with its first error
      failed.set_value(r.status());
    });
    behind = AppendAsync(*engine, id, TokensInput({2}), std::nullopt, OutputMode::kAll, cancel);
  }
  EXPECT_EQ(failed.get_future().get().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(Await(behind).status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(engine->GetSession(id)->position, 5);
  // Work of another call queued behind the failure still runs (the next tick).
  auto other = AppendAsync(*engine, id, TokensInput({3}));
  ASSERT_TRUE(Await(other).ok());
  EXPECT_EQ(engine->GetSession(id)->position, 6);
}

// What CancelHalfWay saw: the session's snapshot just before the long append started, how many
// of its tokens had run when it was cancelled, and how it ended.
struct HalfRunAppend {
  absl::StatusOr<SessionSnapshot> before;
  int64_t tokens_run_before_cancel = 0;
  absl::StatusOr<AppendResult> result;
};

// With the scheduler held (`held`), queues a long append on session `id` and a one-token append
// on `pacer_id`; both run in the next tick (the long one as its first chunk), and the pacer's
// completion then holds the scheduler again. While it is held the long append is half-way; its
// cancel flag is set, then the scheduler is let go.
HalfRunAppend CancelHalfWay(Engine& engine, const std::string& id, const SequenceInput& long_input,
                            std::unique_ptr<EngineTest::HeldScheduler> held,
                            const std::string& pacer_id) {
  auto pacer_gate = std::make_shared<Gate>();
  Engine::AppendParams p;
  p.session_id = pacer_id;
  p.input = TokensInput({2});
  auto before = EngineTest::ExportAsync(engine, id);
  auto cancel = std::make_shared<CancelFlag>(false);
  auto long_append =
      EngineTest::AppendAsync(engine, id, long_input, std::nullopt, OutputMode::kNone, cancel);
  engine.Append(std::move(p), [pacer_gate](absl::StatusOr<AppendResult>) { pacer_gate->Enter(); });
  const uint64_t tokens_before = engine.stats().tokens_run;
  held->Release();
  pacer_gate->WaitEntered();
  HalfRunAppend out;
  // The pacer's token, then the long append's first chunk.
  out.tokens_run_before_cancel =
      static_cast<int64_t>(engine.stats().tokens_run - tokens_before) - 1;
  EXPECT_EQ(engine.GetSession(id)->position, 0);  // not finished: the position has not moved
  cancel->store(true);
  pacer_gate->Open();
  out.before = Await(before);
  out.result = Await(long_append);
  return out;
}

TEST_F(EngineTest, CancelledChunkedAppendRestoresTheStateExactly) {
  auto engine = MakeEngine(MaxBatchTokens(64));
  const std::string id = Open(*engine, "tok").session_id;
  const std::string pacer = Open(*engine, "tok").session_id;
  auto held = HoldScheduler(*engine);
  HalfRunAppend half =
      CancelHalfWay(*engine, id, RandomInput("tok", 1000, 3), std::move(held), pacer);
  EXPECT_EQ(half.result.status().code(), absl::StatusCode::kCancelled);
  EXPECT_GT(half.tokens_run_before_cancel, 0);  // it was cancelled half-way, not while queued
  EXPECT_LT(half.tokens_run_before_cancel, 1000);
  ASSERT_TRUE(half.before.ok());
  absl::StatusOr<SessionSnapshot> after = Export(*engine, id);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->position, 0);
  ASSERT_EQ(after->state.size(), half.before->state.size());
  EXPECT_EQ(std::memcmp(after->state.data(), half.before->state.data(),
                        after->state.size() * sizeof(float)),
            0);
  // And the session carries on as if the cancelled append never happened.
  const SequenceInput more = RandomInput("tok", 4, 4);
  absl::StatusOr<AppendResult> r = Append(*engine, id, more);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_LT(MaxRelativeError(r->outputs, Reference("tok", more)), kTolerance);
}

// The store's contract: when the pool is full, the least recently used idle session moves to the
// host tier. A session whose chunked append was cancelled half-way is idle again and must be
// evictable like any other.
TEST_F(EngineTest, SessionWithCancelledChunkedAppendStaysEvictable) {
  EngineOptions options = MaxBatchTokens(64);
  options.store.pool_sessions = 3;
  auto engine = MakeEngine(options);
  const std::string id = Open(*engine, "tok").session_id;
  const std::string pacer = Open(*engine, "tok").session_id;
  auto held = HoldScheduler(*engine);  // the third pool session
  HalfRunAppend half =
      CancelHalfWay(*engine, id, RandomInput("tok", 1000, 3), std::move(held), pacer);
  ASSERT_EQ(half.result.status().code(), absl::StatusCode::kCancelled);
  ASSERT_GT(half.tokens_run_before_cancel, 0);
  // Three new sessions need three slots: every older idle session must make way.
  for (int i = 0; i < 3; ++i) Open(*engine, "tok");
  EXPECT_EQ(engine->GetSession(pacer)->tier, Tier::kHost);
  EXPECT_EQ(engine->GetSession(id)->tier, Tier::kHost)
      << "the session was left out of the pool's LRU list: it can never be evicted";
}

// Both tiers full, and the only session that could leave the pool serves another model: the
// host-tier session must still get to run (by moving the other one out), not wait until that
// session happens to be deleted or expire. The wait below is a liveness bound (the append
// normally takes about a millisecond), not a performance threshold; after it the blocking
// session is deleted so that a failure cannot hang the suite.
TEST_F(EngineTest, HostTierSessionRunsWhenThePoolHoldsAnotherModelsSession) {
  EngineOptions options;
  options.store.pool_sessions = 1;
  options.store.host_sessions = 1;
  auto engine = MakeEngine(options);
  const std::string a = Open(*engine, "tok").session_id;
  const std::string b = Open(*engine, "feat").session_id;  // a moves to the host tier
  ASSERT_EQ(engine->GetSession(a)->tier, Tier::kHost);
  auto appended = AppendAsync(*engine, a, TokensInput({1, 2}));
  const bool ran = appended.wait_for(std::chrono::seconds(5)) == std::future_status::ready;
  EXPECT_TRUE(ran) << "append to a host-tier session starved: both tiers full and the pool's "
                      "only evictable session serves another model";
  if (!ran) {
    auto deleted = DeleteAsync(*engine, b);
    EXPECT_TRUE(Await(deleted).ok());
  }
  absl::StatusOr<AppendResult> r = Await(appended);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_LT(MaxRelativeError(r->outputs, Reference("tok", TokensInput({1, 2}))), kTolerance);
}

// A long Score runs in chunks; streaming appends of another session, issued one after the other
// while it runs, each complete in the next tick. The Score's completion flag is read inside each
// append's completion (both on the scheduler thread), so the order is exact.
TEST_F(EngineTest, LongScoreDoesNotBlockSmallAppendsOfAnotherSession) {
  constexpr int kAppends = 10;
  auto engine = MakeEngine(MaxBatchTokens(64));
  const std::string id = Open(*engine, "tok").session_id;
  const SequenceInput long_seq = RandomInput("tok", 4000, 20);
  const SequenceInput stream = RandomInput("tok", kAppends, 21);

  struct Chain {
    Engine* engine;
    std::string id;
    SequenceInput stream;
    std::atomic<bool> score_done{false};
    std::vector<bool> score_done_at_append;
    std::vector<float> outputs;
    absl::Status status;
    std::promise<void> finished;
    void Next(size_t k) {
      Engine::AppendParams p;
      p.session_id = id;
      p.input = TokensInput({stream.tokens[k]});
      engine->Append(std::move(p), [this, k](absl::StatusOr<AppendResult> r) {
        score_done_at_append.push_back(score_done.load());
        if (!r.ok()) {
          status = r.status();
          finished.set_value();
          return;
        }
        outputs.insert(outputs.end(), r->outputs.begin(), r->outputs.end());
        if (k + 1 < stream.tokens.size()) {
          Next(k + 1);
        } else {
          finished.set_value();
        }
      });
    }
  };
  Chain chain;
  chain.engine = engine.get();
  chain.id = id;
  chain.stream = stream;
  std::future<void> chain_done = chain.finished.get_future();

  auto score_promise =
      std::make_shared<std::promise<absl::StatusOr<std::vector<SequenceOutput>>>>();
  auto score_future = score_promise->get_future();
  {
    auto held = HoldScheduler(*engine);
    Engine::ScoreParams p;
    p.model = "tok";
    p.sequences = {long_seq};
    p.mode = OutputMode::kLast;
    engine->Score(std::move(p), [&chain, score_promise](auto r) {
      chain.score_done.store(true);
      score_promise->set_value(std::move(r));
    });
    chain.Next(0);
  }
  Await(chain_done);
  absl::StatusOr<std::vector<SequenceOutput>> scored = Await(score_future);
  ASSERT_TRUE(chain.status.ok()) << chain.status;
  ASSERT_EQ(chain.score_done_at_append.size(), static_cast<size_t>(kAppends));
  for (int k = 0; k < kAppends; ++k) {
    EXPECT_FALSE(chain.score_done_at_append[static_cast<size_t>(k)])
        << "append " << k << " completed only after the long Score";
  }
  ASSERT_TRUE(scored.ok()) << scored.status();
  const std::vector<float> ref = Reference("tok", long_seq);
  EXPECT_LT(MaxRelativeError((*scored)[0].outputs, Rows(ref, 3999, 4000, 37)), kTolerance);
  EXPECT_LT(MaxRelativeError(chain.outputs, Reference("tok", stream)), kTolerance);
}

// Fifty sessions of two models share four pool slots; rounds of appends to all of them at once
// force evictions and resumes, and every output is still that of the session's own sequence.
TEST_F(EngineTest, FiftySessionsOverFourPoolSlotsStayCorrect) {
  constexpr int kSessions = 50;
  constexpr int kRounds = 4;
  EngineOptions options;
  options.store.pool_sessions = 4;
  options.store.host_sessions = 100;
  auto engine = MakeEngine(options);
  struct Tracked {
    std::string model;
    std::string id;
    SequenceInput whole;
    int64_t prefix = 0;
    std::vector<float> outputs;  // every appended row, in order
  };
  std::vector<Tracked> sessions(kSessions);
  for (int i = 0; i < kSessions; ++i) {
    Tracked& t = sessions[static_cast<size_t>(i)];
    t.model = i % 2 == 0 ? "tok" : "feat";
    t.prefix = 3 + i % 7;
    t.whole = RandomInput(t.model, t.prefix, 1000 + static_cast<uint64_t>(i));
    absl::StatusOr<SessionInfo> info = Create(*engine, t.model, t.whole);
    ASSERT_TRUE(info.ok()) << info.status();
    ASSERT_EQ(info->position, t.prefix);
    t.id = info->session_id;
  }
  for (int round = 0; round < kRounds; ++round) {
    std::vector<std::future<absl::StatusOr<AppendResult>>> futures;
    for (int i = 0; i < kSessions; ++i) {
      Tracked& t = sessions[static_cast<size_t>(i)];
      const SequenceInput more =
          RandomInput(t.model, 3, 5000 + static_cast<uint64_t>(round * kSessions + i));
      Concat(t.whole, more);
      futures.push_back(AppendAsync(*engine, t.id, more));
    }
    for (int i = 0; i < kSessions; ++i) {
      absl::StatusOr<AppendResult> r = Await(futures[static_cast<size_t>(i)]);
      ASSERT_TRUE(r.ok()) << "round " << round << " session " << i << ": " << r.status();
      Tracked& t = sessions[static_cast<size_t>(i)];
      EXPECT_EQ(r->position, t.prefix + 3 * (round + 1));
      t.outputs.insert(t.outputs.end(), r->outputs.begin(), r->outputs.end());
    }
  }
  for (int i = 0; i < kSessions; ++i) {
    const Tracked& t = sessions[static_cast<size_t>(i)];
    const int64_t od = ConfigOf(t.model).output_dim;
    const int64_t n = t.prefix + 3 * kRounds;
    EXPECT_LT(MaxRelativeError(t.outputs, Rows(Reference(t.model, t.whole), t.prefix, n, od)),
              kTolerance)
        << "session " << i;
  }
  const EngineStats stats = engine->stats();
  EXPECT_EQ(stats.store.pool, 4);
  EXPECT_EQ(stats.store.host, kSessions - 4);
  EXPECT_GT(stats.store.evicted, 0u);
}

}  // namespace
}  // namespace aaren::testing
