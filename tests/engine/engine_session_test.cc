// SPDX-License-Identifier: Apache-2.0
// Engine, the session operations: create/open, delete (and the work queued behind it), fork,
// export/import with snapshot validation, generate, idle expiry and shutdown.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <future>
#include <limits>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "engine/token_sampler.h"
#include "tests/engine/engine_fixture.h"

namespace aaren::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string Msg(const absl::Status& st) { return std::string(st.message()); }

// ---- Create / Open ----

TEST_F(EngineTest, CreateSessionRunsThePrefix) {
  auto engine = MakeEngine();
  const SequenceInput prefix = RandomInput("tok", 30, 1);
  absl::StatusOr<SessionInfo> info = Create(*engine, "tok", prefix, "my-chat");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->session_id, "my-chat");
  EXPECT_EQ(info->model, "tok");
  EXPECT_EQ(info->position, 30);
  EXPECT_EQ(info->tier, Tier::kPool);
  EXPECT_EQ(info->state_bytes, static_cast<uint64_t>(tok_config_.state_bytes()));
  EXPECT_GT(info->created_ms, 0);

  SequenceInput whole = prefix;
  Concat(whole, TokensInput({4}));
  absl::StatusOr<AppendResult> r = Append(*engine, "my-chat", TokensInput({4}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_LT(MaxRelativeError(r->outputs, Rows(Reference("tok", whole), 30, 31, 37)), kTolerance);

  // No prefix: a session at position 0 with a server-made id.
  absl::StatusOr<SessionInfo> empty = Create(*engine, "feat", SequenceInput{});
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(empty->position, 0);
  EXPECT_EQ(empty->session_id.size(), 32u);
}

TEST_F(EngineTest, CreateSessionErrors) {
  EngineOptions options;
  options.max_sequence_tokens = 100;
  auto engine = MakeEngine(options);
  ASSERT_TRUE(Create(*engine, "tok", SequenceInput{}, "taken").ok());

  absl::StatusOr<SessionInfo> r = Create(*engine, "tok", TokensInput({1, 2, 99}));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(r.status()), StartsWith("prefix.tokens[2]"));
  r = Create(*engine, "tok", RandomInput("tok", 101, 1));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(r.status()), StartsWith("prefix: 101 tokens"));
  r = Create(*engine, "nope", SequenceInput{});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Msg(r.status()), HasSubstr("model"));
  r = Create(*engine, "tok", SequenceInput{}, "taken");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(Msg(r.status()), HasSubstr("session_id"));
  r = Create(*engine, "tok", SequenceInput{}, "bad id");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(r.status()), HasSubstr("session_id"));
  EXPECT_EQ(engine->stats().store.created, 1u);
}

TEST_F(EngineTest, CreateSessionWhosePrefixFailsIsRemoved) {
  auto engine = MakeEngine();
  SequenceInput overflow = RandomInput("feat", 5, 1);
  std::fill(overflow.features.begin(), overflow.features.end(), 3e38f);
  absl::StatusOr<SessionInfo> r = Create(*engine, "feat", overflow, "doomed");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(r.status()), StartsWith("prefix: "));
  // The delete was queued before the error was reported; a later tick has run it.
  const std::string id = Open(*engine, "tok").session_id;
  ASSERT_TRUE(Append(*engine, id, TokensInput({1})).ok());
  EXPECT_EQ(engine->GetSession("doomed").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(EngineTest, OpenSessionAttachesOrCreates) {
  auto engine = MakeEngine();
  absl::StatusOr<SessionInfo> a = engine->OpenSession("", "tok", false, 0);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->session_id.size(), 32u);
  EXPECT_EQ(a->idle_ttl_s, StoreLimits{}.default_idle_ttl_s);

  absl::StatusOr<SessionInfo> b = engine->OpenSession(a->session_id, "", false, 0);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->session_id, a->session_id);
  b = engine->OpenSession(a->session_id, "tok", false, 0);
  EXPECT_TRUE(b.ok()) << b.status();

  absl::StatusOr<SessionInfo> c = engine->OpenSession(a->session_id, "feat", true, 0);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(c.status()), StartsWith("open.model"));
  c = engine->OpenSession("absent", "tok", /*create_if_missing=*/false, 0);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Msg(c.status()), StartsWith("open.session_id"));
  c = engine->OpenSession("absent", "", /*create_if_missing=*/true, 0);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(c.status()), StartsWith("open.model"));
  c = engine->OpenSession("absent", "nope", true, 0);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Msg(c.status()), StartsWith("open.model"));
  c = engine->OpenSession("absent", "feat", true, 42);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->session_id, "absent");
  EXPECT_EQ(c->model, "feat");
  EXPECT_EQ(c->idle_ttl_s, 42u);
}

TEST_F(EngineTest, BothTiersFullIsResourceExhausted) {
  EngineOptions options;
  options.store.pool_sessions = 1;
  options.store.host_sessions = 1;
  auto engine = MakeEngine(options);
  Open(*engine, "tok");
  Open(*engine, "tok");
  absl::StatusOr<SessionInfo> r = engine->OpenSession("", "tok", true, 0);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  absl::StatusOr<std::vector<SequenceOutput>> s =
      Score(*engine, "tok", {TokensInput({1})}, OutputMode::kLast, /*prefill=*/true);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kResourceExhausted);
  // Scoring without prefill needs no session slot.
  EXPECT_TRUE(Score(*engine, "tok", {TokensInput({1})}).ok());
}

// ---- Delete ----

TEST_F(EngineTest, DeleteFailsTheWorkQueuedBehindItWithNotFound) {
  auto engine = MakeEngine();
  const std::string id = Open(*engine, "tok", "victim").session_id;
  ASSERT_TRUE(Append(*engine, id, TokensInput({1, 2, 3})).ok());
  std::future<absl::StatusOr<AppendResult>> before, behind;
  std::future<absl::Status> deleted;
  std::future<absl::StatusOr<SessionSnapshot>> exported;
  std::future<absl::StatusOr<SessionInfo>> forked;
  std::future<GenerateResult> generated;
  {
    auto held = HoldScheduler(*engine);
    before = AppendAsync(*engine, id, TokensInput({4}));
    deleted = DeleteAsync(*engine, id);
    behind = AppendAsync(*engine, id, TokensInput({5}));
    exported = ExportAsync(*engine, id);
    forked = ForkAsync(*engine, id, "child");
    Engine::GenerateParams g;
    g.session_id = id;
    g.max_tokens = 3;
    generated = GenerateAsync(*engine, std::move(g));
  }
  absl::StatusOr<AppendResult> r = Await(before);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->position, 4);
  EXPECT_TRUE(Await(deleted).ok());
  r = Await(behind);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Msg(r.status()), HasSubstr("'victim' was deleted"));
  EXPECT_EQ(Await(exported).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Await(forked).status().code(), absl::StatusCode::kNotFound);
  GenerateResult gen = Await(generated);
  EXPECT_EQ(gen.status.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(gen.tokens.empty());

  EXPECT_EQ(engine->GetSession(id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(engine->GetSession("child").status().code(), absl::StatusCode::kNotFound);
  r = Append(*engine, id, TokensInput({6}));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(engine->stats().store.deleted, 1u);
  std::future<absl::Status> again = DeleteAsync(*engine, id);
  EXPECT_EQ(Await(again).code(), absl::StatusCode::kNotFound);
}

// Two Generates queued on a session whose clients never read (flow control: a window of one
// token, never acknowledged): a delete ends both, the one waiting its turn too, and runs
// promptly rather than waiting behind the second.
TEST_F(EngineTest, DeleteEndsEveryGenerateQueuedAheadOfIt) {
  auto engine = MakeEngine();
  const std::string id = Open(*engine, "tok", "gen-twice").session_id;
  ASSERT_TRUE(Append(*engine, id, TokensInput({1, 2})).ok());
  std::vector<std::future<GenerateResult>> gens;
  std::vector<std::shared_ptr<GenerateFlow>> flows;
  for (int i = 0; i < 2; ++i) {
    Engine::GenerateParams g;
    g.session_id = id;
    g.max_tokens = 1000;
    g.flow = std::make_shared<GenerateFlow>(1);
    flows.push_back(g.flow);
    gens.push_back(GenerateAsync(*engine, std::move(g)));
  }
  // The first is parked after its first token (never acknowledged).
  for (int i = 0; i < 200 && engine->GetSession(id)->position < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(engine->GetSession(id)->position, 3);
  std::future<absl::Status> deleted = DeleteAsync(*engine, id);
  ASSERT_EQ(deleted.wait_for(std::chrono::seconds(20)), std::future_status::ready)
      << "the delete waited behind the queued Generate";
  EXPECT_TRUE(deleted.get().ok());
  for (auto& g : gens) {
    GenerateResult r = Await(g);
    EXPECT_EQ(r.status.code(), absl::StatusCode::kNotFound) << r.status;
    EXPECT_LE(r.tokens.size(), 1u);
  }
  EXPECT_EQ(engine->GetSession(id).status().code(), absl::StatusCode::kNotFound);
}

// Work cancelled before it is queued (its call's cancel hook ran while the engine was still
// validating it, so the sweep found nothing) is answered, not left behind a parked Generate.
TEST_F(EngineTest, WorkCancelledBeforeItIsQueuedIsAnsweredBehindAParkedGenerate) {
  auto engine = MakeEngine();
  const std::string id = Open(*engine, "tok", "parked").session_id;
  ASSERT_TRUE(Append(*engine, id, TokensInput({1, 2})).ok());
  Engine::GenerateParams g;
  g.session_id = id;
  g.max_tokens = 1000;
  g.flow = std::make_shared<GenerateFlow>(1);
  auto cancel_gen = std::make_shared<CancelFlag>(false);
  g.cancel = cancel_gen;
  std::future<GenerateResult> gen = GenerateAsync(*engine, std::move(g));
  for (int i = 0; i < 200 && engine->GetSession(id)->position < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(engine->GetSession(id)->position, 3);  // parked after its first token
  auto cancel = std::make_shared<CancelFlag>(true);
  std::future<absl::StatusOr<AppendResult>> late =
      AppendAsync(*engine, id, TokensInput({4}), std::nullopt, OutputMode::kAll, cancel);
  ASSERT_EQ(late.wait_for(std::chrono::seconds(5)), std::future_status::ready)
      << "a cancelled append waited behind the parked Generate";
  EXPECT_EQ(late.get().status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(engine->GetSession(id)->position, 3);
  cancel_gen->store(true);
  engine->SweepCancelled(SessionRef("", id));
  EXPECT_EQ(Await(gen).status.code(), absl::StatusCode::kCancelled);
}

// DeleteSession with an expected uid deletes only that incarnation of the id; an append naming
// a model deletes nothing either and is refused when the session serves another.
TEST_F(EngineTest, DeleteOfAnotherIncarnationAndAppendNamingAnotherModelChangeNothing) {
  auto engine = MakeEngine();
  const SessionInfo first = Open(*engine, "tok", "again");
  std::future<absl::Status> gone = DeleteAsync(*engine, "again");
  ASSERT_TRUE(Await(gone).ok());
  const SessionInfo second = Open(*engine, "tok", "again");
  ASSERT_NE(first.uid, second.uid);
  std::promise<absl::Status> p;
  engine->DeleteSession(
      "again", [&](absl::Status st) { p.set_value(st); }, nullptr, first.uid);
  absl::Status st = p.get_future().get();
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound) << st;
  EXPECT_THAT(Msg(st), HasSubstr("now names a new session"));
  ASSERT_TRUE(engine->GetSession("again").ok());
  EXPECT_EQ(engine->GetSession("again")->uid, second.uid);

  std::promise<absl::StatusOr<AppendResult>> pa;
  Engine::AppendParams a;
  a.session_id = "again";
  a.model = "feat";
  a.input = TokensInput({1});
  engine->Append(std::move(a), [&](absl::StatusOr<AppendResult> r) { pa.set_value(r); });
  absl::StatusOr<AppendResult> r = pa.get_future().get();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Msg(r.status()), HasSubstr("serves model 'tok', not 'feat'"));
  EXPECT_EQ(engine->GetSession("again")->position, 0);
  Engine::AppendParams ok;
  ok.session_id = "again";
  ok.model = "tok";
  ok.input = TokensInput({1});
  std::promise<absl::StatusOr<AppendResult>> pb;
  engine->Append(std::move(ok), [&](absl::StatusOr<AppendResult> x) { pb.set_value(x); });
  ASSERT_TRUE(pb.get_future().get().ok());
  EXPECT_EQ(engine->GetSession("again")->position, 1);
}

// CheckNewSessionCosts (KServe v2's START on an existing sequence): under a budget with room
// for one session more but not its work, a new session is refused unless it replaces one that
// the caller deletes first; the reply size is checked first. It reserves nothing.
TEST_F(EngineTest, NewSessionCostsCountAReplacedSessionAsFree) {
  const ServedModel& m = *registry_->Find("tok");
  EngineOptions options;
  // Room for the session made below and half a session more: a one-token append's work
  // (sizeof(Work) and its buffers) fits only when the new session's bytes are freed.
  options.memory_budget_bytes =
      2 * SessionStore::SessionBytes(m) + SessionStore::SessionBytes(m) / 2;
  options.max_reply_bytes = 4096;
  auto engine = MakeEngine(options);
  Open(*engine, "tok", "old");
  const SequenceInput one = TokensInput({1});
  absl::Status st = engine->CheckNewSessionCosts(m, one, OutputMode::kAll, "TOKENS", "absent");
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
  EXPECT_THAT(Msg(st), HasSubstr("--memory_budget_bytes"));
  st = engine->CheckNewSessionCosts(m, one, OutputMode::kAll, "TOKENS", "old");
  EXPECT_TRUE(st.ok()) << st;
  const SequenceInput many = RandomInput("tok", 4096, 3);
  st = engine->CheckNewSessionCosts(m, many, OutputMode::kAll, "TOKENS", "old");
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
  EXPECT_THAT(Msg(st), HasSubstr("TOKENS: the reply would be"));
}

// ---- Fork ----

TEST_F(EngineTest, ForkCopiesTheState) {
  auto engine = MakeEngine();
  const SequenceInput prefix = RandomInput("tok", 20, 2);
  absl::StatusOr<SessionInfo> parent = Create(*engine, "tok", prefix, "parent");
  ASSERT_TRUE(parent.ok()) << parent.status();
  absl::StatusOr<SessionInfo> child = Fork(*engine, "parent", "child");
  ASSERT_TRUE(child.ok()) << child.status();
  EXPECT_EQ(child->session_id, "child");
  EXPECT_EQ(child->position, 20);
  EXPECT_EQ(child->model, "tok");
  EXPECT_EQ(child->idle_ttl_s, parent->idle_ttl_s);

  absl::StatusOr<SessionSnapshot> ps = Export(*engine, "parent");
  absl::StatusOr<SessionSnapshot> cs = Export(*engine, "child");
  ASSERT_TRUE(ps.ok() && cs.ok());
  EXPECT_EQ(std::memcmp(ps->state.data(), cs->state.data(), ps->state.size() * sizeof(float)), 0);
  EXPECT_EQ(ps->last_output, cs->last_output);

  const SequenceInput next = RandomInput("tok", 4, 3);
  absl::StatusOr<AppendResult> rp = Append(*engine, "parent", next);
  absl::StatusOr<AppendResult> rc = Append(*engine, "child", next);
  ASSERT_TRUE(rp.ok() && rc.ok());
  EXPECT_LT(MaxRelativeError(rc->outputs, rp->outputs), kTolerance);
  // Independent from here on.
  ASSERT_TRUE(Append(*engine, "child", TokensInput({1})).ok());
  EXPECT_EQ(engine->GetSession("child")->position, 25);
  EXPECT_EQ(engine->GetSession("parent")->position, 24);

  absl::StatusOr<SessionInfo> fresh = Fork(*engine, "parent", "", /*idle_ttl_s=*/9);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(fresh->session_id.size(), 32u);
  EXPECT_EQ(fresh->idle_ttl_s, 9u);
  absl::StatusOr<SessionInfo> dup = Fork(*engine, "parent", "child");
  EXPECT_EQ(dup.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(Msg(dup.status()), HasSubstr("new_session_id"));
  absl::StatusOr<SessionInfo> bad = Fork(*engine, "parent", "bad/id");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(bad.status()), HasSubstr("new_session_id"));
  absl::StatusOr<SessionInfo> missing = Fork(*engine, "absent", "x");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Msg(missing.status()), HasSubstr("session_id"));
}

// ---- Export / Import ----

class EngineSnapshotTest : public EngineTest {
 public:
  void SetUp() override {
    EngineTest::SetUp();
    engine_ = MakeEngine();
    prefix_ = RandomInput("tok", 25, 4);
    ASSERT_TRUE(Create(*engine_, "tok", prefix_, "src").ok());
    absl::StatusOr<SessionSnapshot> snap = Export(*engine_, "src");
    ASSERT_TRUE(snap.ok()) << snap.status();
    snap_ = *snap;
  }

  absl::Status ImportError(const SessionSnapshot& s) {
    return engine_->ImportSession(s, "", 0).status();
  }

  std::unique_ptr<Engine> engine_;
  SequenceInput prefix_;
  SessionSnapshot snap_;
};

TEST_F(EngineSnapshotTest, ExportDescribesTheSession) {
  const ServedModel* m = registry_->Find("tok");
  EXPECT_EQ(snap_.format_version, SessionSnapshot::kFormatVersion);
  EXPECT_EQ(snap_.model, "tok");
  EXPECT_EQ(snap_.config_hash, m->config_hash);
  EXPECT_EQ(snap_.position, 25);
  EXPECT_EQ(snap_.layout.n_layers, m->layout.n_layers);
  EXPECT_EQ(snap_.layout.n_heads, m->layout.n_heads);
  EXPECT_EQ(snap_.layout.d_head, m->layout.d_head);
  EXPECT_EQ(static_cast<int64_t>(snap_.state.size()), m->state_floats);
  EXPECT_EQ(snap_.output_dim, 37);
  std::vector<float> ref_state;
  const std::vector<float> ref = Reference("tok", prefix_, &ref_state);
  EXPECT_LT(MaxRelativeError(snap_.state, ref_state), kTolerance);
  EXPECT_LT(MaxRelativeError(snap_.last_output, Rows(ref, 24, 25, 37)), kTolerance);

  // A fresh session: no last output.
  Open(*engine_, "tok", "fresh");
  absl::StatusOr<SessionSnapshot> fresh = Export(*engine_, "fresh");
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(fresh->position, 0);
  EXPECT_TRUE(fresh->last_output.empty());
  EXPECT_EQ(Export(*engine_, "absent").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(EngineSnapshotTest, ImportRoundTripsIntoAnotherEngine) {
  auto other = MakeEngine();
  absl::StatusOr<SessionInfo> info = other->ImportSession(snap_, "copy", 30);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->session_id, "copy");
  EXPECT_EQ(info->position, 25);
  EXPECT_EQ(info->idle_ttl_s, 30u);
  absl::StatusOr<SessionSnapshot> back = Export(*other, "copy");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->position, snap_.position);
  EXPECT_EQ(back->config_hash, snap_.config_hash);
  ASSERT_EQ(back->state.size(), snap_.state.size());
  EXPECT_EQ(std::memcmp(back->state.data(), snap_.state.data(), snap_.state.size() * 4), 0);
  EXPECT_EQ(back->last_output, snap_.last_output);

  const SequenceInput next = RandomInput("tok", 3, 5);
  absl::StatusOr<AppendResult> a = Append(*engine_, "src", next);
  absl::StatusOr<AppendResult> b = Append(*other, "copy", next);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_LT(MaxRelativeError(b->outputs, a->outputs), kTolerance);

  // A position-0 snapshot (no last output) imports too; an existing id does not.
  Open(*engine_, "tok", "fresh");
  absl::StatusOr<SessionSnapshot> fresh = Export(*engine_, "fresh");
  ASSERT_TRUE(fresh.ok());
  EXPECT_TRUE(other->ImportSession(*fresh, "", 0).ok());
  EXPECT_EQ(other->ImportSession(snap_, "copy", 0).status().code(),
            absl::StatusCode::kAlreadyExists);
}

TEST_F(EngineSnapshotTest, ImportRejectsAWrongConfigHash) {
  SessionSnapshot s = snap_;
  s.config_hash = "0123456789abcdef";
  const absl::Status st = ImportError(s);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(st), StartsWith("snapshot.config_hash"));
}

TEST_F(EngineSnapshotTest, ImportRejectsAWrongLayout) {
  SessionSnapshot s = snap_;
  s.layout.n_heads += 1;
  absl::Status st = ImportError(s);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(st), StartsWith("snapshot.n_layers/n_heads/d_head"));
  s = snap_;
  s.layout.d_head = 1;
  EXPECT_THAT(Msg(ImportError(s)), StartsWith("snapshot.n_layers/n_heads/d_head"));
  s = snap_;
  s.state.pop_back();
  st = ImportError(s);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(st), StartsWith("snapshot.state"));
  s = snap_;
  s.output_dim = 5;
  st = ImportError(s);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(st), StartsWith("snapshot.output_dim"));
  s = snap_;
  s.last_output.clear();  // position > 0 needs the last output row
  st = ImportError(s);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(st), StartsWith("snapshot.last_output"));
}

TEST_F(EngineSnapshotTest, ImportRejectsNonFiniteOrInvalidValues) {
  const int64_t head = snap_.layout.head_floats();
  struct Case {
    size_t index;
    float value;
  };
  const Case state_cases[] = {
      {3, std::numeric_limits<float>::quiet_NaN()},                             // a w value
      {static_cast<size_t>(head) + 2, std::numeric_limits<float>::infinity()},  // next record's w
      {0, std::numeric_limits<float>::infinity()},                              // m = +inf
      {1, -1.0f},                                                               // u < 0
  };
  for (const Case& c : state_cases) {
    SessionSnapshot s = snap_;
    s.state[c.index] = c.value;
    const absl::Status st = ImportError(s);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.index << " " << c.value;
    EXPECT_THAT(Msg(st), StartsWith("snapshot.state")) << c.index << " " << c.value;
  }
  SessionSnapshot s = snap_;
  s.last_output[2] = std::numeric_limits<float>::quiet_NaN();
  absl::Status st = ImportError(s);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(st), StartsWith("snapshot.last_output[2]"));
  s = snap_;
  s.position = -1;
  st = ImportError(s);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(st), StartsWith("snapshot.position"));
  s = snap_;
  s.format_version = 99;
  st = ImportError(s);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(st), StartsWith("snapshot.format_version"));
  // Nothing was imported.
  EXPECT_EQ(engine_->stats().store.created, 1u);
}

TEST_F(EngineSnapshotTest, ImportOfAnotherModelsSnapshotNamesTheField) {
  SessionSnapshot s = snap_;
  s.model = "feat";  // served, but a different model: its hash differs
  absl::Status st = ImportError(s);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(st), StartsWith("snapshot.config_hash"));
  s.model = "not-served";
  st = ImportError(s);
  EXPECT_FALSE(st.ok());
  EXPECT_THAT(Msg(st), StartsWith("snapshot.model"));
}

// ---- Generate ----

TEST_F(EngineTest, GenerateWithTheSameSeedOnTwoForksGivesTheSameTokens) {
  auto engine = MakeEngine();
  ASSERT_TRUE(Create(*engine, "tok", RandomInput("tok", 10, 6), "base").ok());
  absl::StatusOr<SessionSnapshot> base = Export(*engine, "base");
  ASSERT_TRUE(base.ok());
  ASSERT_TRUE(Fork(*engine, "base", "f1").ok());
  ASSERT_TRUE(Fork(*engine, "base", "f2").ok());
  const SampleOptions sampling{.temperature = 0.9f, .top_k = 8};
  const GenerateResult g1 = Generate(*engine, "f1", 12, sampling, /*seed=*/42);
  const GenerateResult g2 = Generate(*engine, "f2", 12, sampling, /*seed=*/42);
  ASSERT_TRUE(g1.status.ok()) << g1.status;
  ASSERT_TRUE(g2.status.ok()) << g2.status;
  ASSERT_EQ(g1.tokens.size(), 12u);
  ASSERT_EQ(g2.tokens.size(), 12u);
  for (size_t i = 0; i < 12; ++i) {
    EXPECT_EQ(g1.tokens[i].token, g2.tokens[i].token) << i;
    EXPECT_EQ(g1.tokens[i].position, 11 + static_cast<int64_t>(i)) << i;
    EXPECT_EQ(g2.tokens[i].position, g1.tokens[i].position) << i;
    EXPECT_NEAR(g1.tokens[i].logprob, g2.tokens[i].logprob, 1e-5) << i;
  }
  EXPECT_EQ(engine->GetSession("f1")->position, 22);
  EXPECT_EQ(engine->GetSession("base")->position, 10);

  // The first token is the sampler's draw from the session's last output with that seed.
  std::mt19937_64 rng(42);
  EXPECT_EQ(g1.tokens[0].token, SampleToken(base->last_output, sampling, rng).token);
}

TEST_F(EngineTest, GreedyGenerateFollowsTheArgmaxOfTheOutputs) {
  auto engine = MakeEngine();
  const SequenceInput prefix = RandomInput("tok", 10, 7);
  ASSERT_TRUE(Create(*engine, "tok", prefix, "s").ok());
  absl::StatusOr<SessionSnapshot> snap = Export(*engine, "s");
  ASSERT_TRUE(snap.ok());
  const SampleOptions greedy{.temperature = 0.0f, .top_k = 0};
  const GenerateResult g = Generate(*engine, "s", 6, greedy, /*seed=*/1);
  ASSERT_TRUE(g.status.ok()) << g.status;
  ASSERT_EQ(g.tokens.size(), 6u);
  EXPECT_EQ(g.tokens[0].token, ArgMax(snap->last_output));

  // Each token is the argmax of the outputs after the tokens before it (the reference runs the
  // prefix and the generated tokens as one sequence).
  SequenceInput whole = prefix;
  for (const GeneratedToken& t : g.tokens) whole.tokens.push_back(t.token);
  const std::vector<float> ref = Reference("tok", whole);
  for (size_t i = 0; i < g.tokens.size(); ++i) {
    const int64_t row = 9 + static_cast<int64_t>(i);
    const std::vector<float> logits = Rows(ref, row, row + 1, 37);
    EXPECT_EQ(g.tokens[i].token, ArgMax(logits)) << i;
    EXPECT_NEAR(g.tokens[i].logprob, LogSoftmax(logits, static_cast<size_t>(g.tokens[i].token)),
                1e-4)
        << i;
  }
  EXPECT_EQ(engine->GetSession("s")->position, 16);
}

TEST_F(EngineTest, GenerateRunsThePromptFirstAndStopsAtAStopToken) {
  auto engine = MakeEngine();
  const SequenceInput prompt = RandomInput("tok", 5, 8);
  const std::string id = Open(*engine, "tok").session_id;
  const SampleOptions greedy{.temperature = 0.0f, .top_k = 0};
  ASSERT_TRUE(Fork(*engine, id, "copy").ok());
  const GenerateResult g = Generate(*engine, id, 3, greedy, 0, prompt);
  ASSERT_TRUE(g.status.ok()) << g.status;
  ASSERT_EQ(g.tokens.size(), 3u);
  SequenceInput whole = prompt;
  for (const GeneratedToken& t : g.tokens) whole.tokens.push_back(t.token);
  const std::vector<float> ref = Reference("tok", whole);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(g.tokens[i].position, 6 + static_cast<int64_t>(i));
    EXPECT_EQ(g.tokens[i].token,
              ArgMax(Rows(ref, 4 + static_cast<int64_t>(i), 5 + static_cast<int64_t>(i), 37)));
  }
  // The same prompt with the first greedy token as a stop token: one token, then done.
  const GenerateResult stopped = Generate(*engine, "copy", 10, greedy, 0, prompt,
                                          {(g.tokens[0].token + 1) % 37, g.tokens[0].token});
  ASSERT_TRUE(stopped.status.ok()) << stopped.status;
  ASSERT_EQ(stopped.tokens.size(), 1u);
  EXPECT_EQ(stopped.tokens[0].token, g.tokens[0].token);
  EXPECT_EQ(engine->GetSession("copy")->position, 6);
}

TEST_F(EngineTest, GenerateErrors) {
  auto engine = MakeEngine();
  const std::string fresh = Open(*engine, "tok").session_id;
  const SampleOptions greedy{.temperature = 0.0f, .top_k = 0};
  GenerateResult g = Generate(*engine, fresh, 3, greedy, 0);  // position 0, no prompt
  EXPECT_EQ(g.status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Msg(g.status), HasSubstr("prompt"));
  EXPECT_EQ(engine->GetSession(fresh)->position, 0);

  g = Generate(*engine, fresh, 0, greedy, 0, TokensInput({1}));
  EXPECT_EQ(g.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(g.status), StartsWith("max_tokens"));
  for (float t :
       {-1.0f, std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    g = Generate(*engine, fresh, 1, {.temperature = t, .top_k = 0}, 0, TokensInput({1}));
    EXPECT_EQ(g.status.code(), absl::StatusCode::kInvalidArgument) << t;
    EXPECT_THAT(Msg(g.status), StartsWith("temperature")) << t;
  }
  g = Generate(*engine, fresh, 1, greedy, 0, TokensInput({40}));
  EXPECT_EQ(g.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(g.status), StartsWith("prompt.tokens[0]"));
  g = Generate(*engine, fresh, 1, greedy, 0, TokensInput({1}), {3, 37});
  EXPECT_EQ(g.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Msg(g.status), StartsWith("stop_tokens[1]"));
  g = Generate(*engine, "absent", 1, greedy, 0, TokensInput({1}));
  EXPECT_EQ(g.status.code(), absl::StatusCode::kNotFound);

  const std::string feat = Open(*engine, "feat").session_id;
  g = Generate(*engine, feat, 1, greedy, 0);
  EXPECT_EQ(g.status.code(), absl::StatusCode::kFailedPrecondition);
  const std::string cls = Open(*engine, "cls").session_id;
  g = Generate(*engine, cls, 1, greedy, 0, TokensInput({1}));
  EXPECT_EQ(g.status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Msg(g.status), HasSubstr("output_dim"));
  for (const auto& t : g.tokens) ADD_FAILURE() << "token " << t.token;
  EXPECT_EQ(engine->stats().tokens_run, 0u);
}

// ---- Expiry and shutdown ----

TEST_F(EngineTest, IdleSessionsExpireAndLookupsSaySo) {
  auto engine = MakeEngine();
  absl::StatusOr<SessionInfo> brief = engine->OpenSession("brief", "tok", true, /*idle_ttl_s=*/1);
  ASSERT_TRUE(brief.ok());
  Open(*engine, "tok", "lasting");
  // The scheduler sweeps about once a second; the TTL is one second. Poll, bounded.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  absl::Status st;
  while (std::chrono::steady_clock::now() < deadline) {
    st = engine->GetSession("brief").status();
    if (!st.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(st.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Msg(st), HasSubstr("expired"));
  absl::StatusOr<AppendResult> r = Append(*engine, "brief", TokensInput({1}));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Msg(r.status()), HasSubstr("expired"));
  EXPECT_TRUE(engine->GetSession("lasting").ok());
  EXPECT_EQ(engine->stats().store.expired, 1u);
}

TEST_F(EngineTest, ShutdownFinishesQueuedWorkThenRefusesNewRequests) {
  auto engine = MakeEngine();
  const std::string id = Open(*engine, "tok", "s").session_id;
  std::vector<std::future<absl::StatusOr<AppendResult>>> queued;
  std::thread stopper;
  {
    auto held = HoldScheduler(*engine);
    for (int i = 0; i < 3; ++i) queued.push_back(AppendAsync(*engine, id, TokensInput({i})));
    stopper = std::thread([&] { engine->Shutdown(); });
    // Wait (bounded) until the engine has stopped accepting work.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (engine->OpenSession(id, "", false, 0).ok() &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  stopper.join();
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<AppendResult> r = Await(queued[static_cast<size_t>(i)]);
    ASSERT_TRUE(r.ok()) << "queued append " << i << ": " << r.status();
    EXPECT_EQ(r->position, i + 1);
  }

  const auto unavailable = absl::StatusCode::kUnavailable;
  EXPECT_EQ(Append(*engine, id, TokensInput({1})).status().code(), unavailable);
  EXPECT_EQ(engine->OpenSession(id, "", false, 0).status().code(), unavailable);
  EXPECT_EQ(engine->OpenSession("", "tok", true, 0).status().code(), unavailable);
  EXPECT_EQ(Create(*engine, "tok", SequenceInput{}).status().code(), unavailable);
  EXPECT_EQ(Score(*engine, "tok", {TokensInput({1})}).status().code(), unavailable);
  EXPECT_EQ(Fork(*engine, id, "f").status().code(), unavailable);
  EXPECT_EQ(Export(*engine, id).status().code(), unavailable);
  auto deleted = DeleteAsync(*engine, id);
  EXPECT_EQ(Await(deleted).code(), unavailable);
  EXPECT_EQ(Generate(*engine, id, 1, {.temperature = 0.0f, .top_k = 0}, 0).status.code(),
            unavailable);
  SessionSnapshot snap;
  snap.model = "tok";
  snap.config_hash = registry_->Find("tok")->config_hash;
  snap.layout = registry_->Find("tok")->layout;
  snap.state.assign(static_cast<size_t>(registry_->Find("tok")->state_floats), 0.0f);
  ResetState(snap.state.data(), snap.layout);  // a valid position-0 snapshot
  snap.output_dim = 37;
  EXPECT_EQ(engine->ImportSession(snap, "", 0).status().code(), unavailable);
  engine->Shutdown();  // idempotent
}

}  // namespace
}  // namespace aaren::testing
