// SPDX-License-Identifier: Apache-2.0
// Durability in the engine (engine.h, engine_durability.cc) over a MemoryStore, whose
// FailCommits makes every commit fail: replies under --durability=ack are released only once
// their change is in the store, a failed commit changes nothing, recovery loads exactly what was
// stored and a retry after it replays. Outputs after recovery are checked against a reference
// run of the whole history on a CpuBackend of its own.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/functional/function_ref.h"
#include "core/state_bounds.h"
#include "engine/store/memory_store.h"
#include "engine/store/session_record.h"
#include "tests/engine/engine_fixture.h"

namespace aaren::testing {
namespace {

using ::testing::HasSubstr;

class DurabilityTest : public EngineTest {
 protected:
  EngineOptions Options(Durability d, int64_t interval_ms = 1000) {
    EngineOptions o;
    o.state_store = &store_;
    o.durability = d;
    o.checkpoint_interval_ms = interval_ms;
    return o;
  }

  // With the scheduler held, CreateSession("a") and a 300-token append to it, so that both wait
  // for one tick (the append's first chunk); `arm` runs just before the scheduler goes on.
  // `on_created` runs on the scheduler thread.
  std::future<absl::StatusOr<AppendResult>> CreateWithChunkedAppend(
      Engine& e, absl::AnyInvocable<void(absl::StatusOr<SessionInfo>)> on_created,
      absl::FunctionRef<void()> arm) {
    auto held = HoldScheduler(e);
    Engine::CreateParams p;
    p.model = "tok";
    p.session_id = "a";
    e.CreateSession(std::move(p), std::move(on_created));
    std::future<absl::StatusOr<AppendResult>> appended =
        AppendAsync(e, "a", RandomInput("tok", 300, 2));
    arm();
    return appended;
  }

  // The session's record in the store (nullopt: none).
  std::optional<SessionRecord> Stored(const std::string& id, const std::string& tenant = "") {
    absl::StatusOr<std::optional<std::string>> v = store_.Get(SessionKey(tenant, id));
    EXPECT_TRUE(v.ok()) << v.status();
    if (!v.ok() || !v->has_value()) return std::nullopt;
    absl::StatusOr<SessionRecord> r = DecodeSessionRecord(**v);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? std::optional<SessionRecord>(*r) : std::nullopt;
  }

  int64_t StoredCount() {
    int64_t n = 0;
    EXPECT_TRUE(store_
                    .Scan(kSessionKeyPrefix,
                          [&](absl::string_view, absl::string_view) {
                            ++n;
                            return absl::OkStatus();
                          })
                    .ok());
    return n;
  }

  static void ExpectNear(const std::vector<float>& got, const std::vector<float>& want) {
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_NEAR(got[i], want[i], kTolerance * (1 + std::abs(want[i]))) << "at " << i;
    }
  }

  MemoryStore store_;
};

TEST_F(DurabilityTest, AckRepliesOnlyAfterTheirStateIsStored) {
  auto e = MakeEngine(Options(Durability::kAck));
  constexpr int kSessions = 8, kAppends = 12;
  for (int s = 0; s < kSessions; ++s) Open(*e, "tok", "s" + std::to_string(s));
  std::atomic<int> checked{0}, stale{0};
  std::vector<std::future<absl::StatusOr<AppendResult>>> pending;
  std::vector<std::shared_ptr<std::promise<void>>> done;
  // Everything is queued while the scheduler is held, so the group commit below does not hang
  // on how fast this thread queues against the scheduler (a loaded CI machine ticked once per
  // append: 104 commits for 96 replies).
  std::unique_ptr<HeldScheduler> held = HoldScheduler(*e);
  const int64_t commits_before = store_.commits();
  for (int k = 0; k < kAppends; ++k) {
    for (int s = 0; s < kSessions; ++s) {
      const std::string id = "s" + std::to_string(s);
      auto p = std::make_shared<std::promise<void>>();
      done.push_back(p);
      Engine::AppendParams params;
      params.session_id = id;
      params.input = RandomInput("tok", 1 + k % 3, 100 * s + k);
      e->Append(std::move(params), [&, id, p](absl::StatusOr<AppendResult> r) {
        ASSERT_TRUE(r.ok()) << r.status();
        // At the moment the reply is released, the store holds this position (or later).
        absl::StatusOr<std::optional<std::string>> v = store_.Get(SessionKey("", id));
        if (!v.ok() || !v->has_value()) {
          ++stale;
        } else {
          absl::StatusOr<SessionRecord> rec = DecodeSessionRecord(**v);
          if (!rec.ok() || rec->position < r->position) ++stale;
        }
        ++checked;
        p->set_value();
      });
    }
  }
  held->Release();
  for (auto& p : done) p->get_future().wait();
  EXPECT_EQ(checked.load(), kSessions * kAppends);
  EXPECT_EQ(stale.load(), 0);
  // Group commit: one commit per tick, not per reply (a tick takes one append of each session).
  EXPECT_LE(store_.commits() - commits_before, kAppends + 2);
  // The stored state is the session's state.
  absl::StatusOr<SessionSnapshot> snap = Export(*e, "s3");
  ASSERT_TRUE(snap.ok());
  std::optional<SessionRecord> rec = Stored("s3");
  ASSERT_TRUE(rec.has_value());
  EXPECT_EQ(rec->position, snap->position);
  EXPECT_EQ(rec->state, snap->state);
  EXPECT_EQ(rec->last_output, snap->last_output);
}

TEST_F(DurabilityTest, KeysCarryTheTenant) {
  auto e = MakeEngine(Options(Durability::kAck));
  ASSERT_TRUE(e->OpenSession(SessionRef("alice", "x"), "tok", true, 0).ok());
  ASSERT_TRUE(e->OpenSession(SessionRef("", "x"), "tok", true, 0).ok());
  std::optional<SessionRecord> a = Stored("x", "alice");
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->tenant, "alice");
  ASSERT_TRUE(Stored("x", "").has_value());
  EXPECT_EQ(StoredCount(), 2);
  EXPECT_EQ(SessionKey("alice", "x"), "s/alice/x");
}

TEST_F(DurabilityTest, RecoveryContinuesExactlyAndRetriesReplay) {
  const SequenceInput history = RandomInput("tok", 40, 7);
  const SequenceInput more = RandomInput("tok", 9, 8);
  SessionInfo before;
  absl::StatusOr<AppendResult> last;
  {
    auto e = MakeEngine(Options(Durability::kCheckpoint, 60000));
    ASSERT_TRUE(e->OpenSession(SessionRef("t1", "a"), "tok", true, 777).ok());
    Engine::AppendParams p;
    // 30 tokens plainly, the last 10 with expected_position (so a retry can replay).
    auto head = Slice(history, 0, 30, 0);
    auto tail = Slice(history, 30, 40, 0);
    std::promise<absl::StatusOr<AppendResult>> p1, p2;
    Engine::AppendParams a1;
    a1.tenant = "t1";
    a1.session_id = "a";
    a1.input = head;
    e->Append(std::move(a1), [&](absl::StatusOr<AppendResult> r) { p1.set_value(r); });
    ASSERT_TRUE(p1.get_future().get().ok());
    Engine::AppendParams a2;
    a2.tenant = "t1";
    a2.session_id = "a";
    a2.input = tail;
    a2.expected_position = 30;
    e->Append(std::move(a2), [&](absl::StatusOr<AppendResult> r) { p2.set_value(r); });
    last = p2.get_future().get();
    ASSERT_TRUE(last.ok()) << last.status();
    before = *e->GetSession(SessionRef("t1", "a"));
    e->Shutdown();  // checkpoint: written at shutdown
  }
  auto e = MakeEngine(Options(Durability::kCheckpoint, 60000));
  absl::StatusOr<RecoveryReport> report = e->Recover();
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->recovered, 1);
  EXPECT_EQ(report->skipped(), 0);
  absl::StatusOr<SessionInfo> after = e->GetSession(SessionRef("t1", "a"));
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->position, 40);
  EXPECT_EQ(after->uid, before.uid);
  EXPECT_EQ(after->idle_ttl_s, 777u);
  EXPECT_EQ(after->created_ms, before.created_ms);
  // Another tenant does not see it.
  EXPECT_EQ(e->GetSession(SessionRef("", "a")).status().code(), absl::StatusCode::kNotFound);

  // The retry of the last append replays its reply.
  std::promise<absl::StatusOr<AppendResult>> pr;
  Engine::AppendParams retry;
  retry.tenant = "t1";
  retry.session_id = "a";
  retry.input = Slice(history, 30, 40, 0);
  retry.expected_position = 30;
  e->Append(std::move(retry), [&](absl::StatusOr<AppendResult> r) { pr.set_value(r); });
  absl::StatusOr<AppendResult> replay = pr.get_future().get();
  ASSERT_TRUE(replay.ok()) << replay.status();
  EXPECT_TRUE(replay->replayed);
  EXPECT_EQ(replay->position, 40);
  EXPECT_EQ(replay->outputs, last->outputs);

  // Continuing gives what the whole history gives from the empty state.
  std::promise<absl::StatusOr<AppendResult>> pm;
  Engine::AppendParams cont;
  cont.tenant = "t1";
  cont.session_id = "a";
  cont.input = more;
  e->Append(std::move(cont), [&](absl::StatusOr<AppendResult> r) { pm.set_value(r); });
  absl::StatusOr<AppendResult> next = pm.get_future().get();
  ASSERT_TRUE(next.ok()) << next.status();
  SequenceInput whole = history;
  Concat(whole, more);
  const int64_t od = tok_config_.output_dim;
  ExpectNear(next->outputs, Rows(Reference("tok", whole), 40, 49, od));
}

// Under kAck, CreateSession holds its reply until the commit instead of waiting for it, so a
// completion on the scheduler thread may call it (KServe v2's START after deleting the old
// sequence does): it used to wait there for a commit only that thread could make.
TEST_F(DurabilityTest, CreateFromACompletionUnderAckDoesNotBlockTheScheduler) {
  auto e = MakeEngine(Options(Durability::kAck));
  Open(*e, "tok", "again");
  auto made = std::make_shared<std::promise<absl::StatusOr<SessionInfo>>>();
  Engine* engine = e.get();
  e->DeleteSession("again", [engine, made](absl::Status st) {
    if (!st.ok()) return made->set_value(st);
    Engine::CreateParams p;
    p.model = "tok";
    p.session_id = "again";
    engine->CreateSession(std::move(p),
                          [made](absl::StatusOr<SessionInfo> info) { made->set_value(info); });
  });
  std::future<absl::StatusOr<SessionInfo>> f = made->get_future();
  absl::StatusOr<SessionInfo> info = Await(f);
  ASSERT_TRUE(info.ok()) << info.status();
  // Its reply came after its record was stored.
  std::optional<SessionRecord> rec = Stored("again");
  ASSERT_TRUE(rec.has_value());
  EXPECT_EQ(rec->uid, info->uid);
  // And a failed commit still fails the create and leaves no session.
  store_.FailCommits(absl::UnavailableError("state store memory: injected failure"));
  std::promise<absl::StatusOr<SessionInfo>> p2;
  Engine::CreateParams c;
  c.model = "tok";
  c.session_id = "refused";
  e->CreateSession(std::move(c), [&](absl::StatusOr<SessionInfo> r) { p2.set_value(r); });
  absl::StatusOr<SessionInfo> refused = p2.get_future().get();
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable) << refused.status();
  EXPECT_EQ(e->GetSession("refused").status().code(), absl::StatusCode::kNotFound);
  store_.FailCommits(absl::OkStatus());
}

// A commit that fails after its batch reached the store (a WAL written, then its sync failed):
// the calls fail and memory is put back, and the next commit writes what memory holds over
// what the failed one left: the appended session back at its old position, the made one
// deleted, the deleted one back.
TEST_F(DurabilityTest, AFailedCommitThatReachedTheStoreIsOverwrittenByTheNext) {
  auto e = MakeEngine(Options(Durability::kAck));
  Open(*e, "tok", "kept");
  Open(*e, "tok", "gone");
  ASSERT_TRUE(Append(*e, "kept", RandomInput("tok", 3, 1)).ok());
  const SessionRecord before = *Stored("kept");
  ASSERT_EQ(before.position, 3);
  const absl::Status sync_failed =
      absl::UnavailableError("state store memory: injected sync failure");
  int heals = 0;
  auto heal = [&] {  // the next commit, with the store working again
    store_.FailCommits(absl::OkStatus());
    Open(*e, "tok", "other-" + std::to_string(heals++));
  };

  store_.FailCommits(sync_failed, /*apply=*/true);
  EXPECT_EQ(Append(*e, "kept", RandomInput("tok", 2, 2)).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(e->GetSession("kept")->position, 3);
  EXPECT_EQ(Stored("kept")->position, 5);  // what the failed commit left
  heal();
  std::optional<SessionRecord> kept = Stored("kept");
  ASSERT_TRUE(kept.has_value());
  EXPECT_EQ(kept->position, 3);
  EXPECT_EQ(kept->state, before.state);

  store_.FailCommits(sync_failed, /*apply=*/true);
  std::promise<absl::StatusOr<SessionInfo>> made;
  Engine::CreateParams c;
  c.model = "tok";
  c.session_id = "made";
  e->CreateSession(std::move(c), [&](absl::StatusOr<SessionInfo> r) { made.set_value(r); });
  EXPECT_EQ(made.get_future().get().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(e->GetSession("made").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(Stored("made").has_value());
  heal();
  EXPECT_FALSE(Stored("made").has_value());

  store_.FailCommits(sync_failed, /*apply=*/true);
  std::future<absl::Status> deleted = DeleteAsync(*e, "gone");
  EXPECT_EQ(Await(deleted).code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(e->GetSession("gone").ok());
  EXPECT_FALSE(Stored("gone").has_value());
  heal();
  EXPECT_TRUE(Stored("gone").has_value());
}

// A failed commit ends the Generate whose token it carried, not one queued behind the append
// it carried (that one has applied nothing yet and goes on once the store works again).
TEST_F(DurabilityTest, AFailedCommitEndsOnlyAGenerateWhoseTokenItCarried) {
  auto e = MakeEngine(Options(Durability::kAck));
  Open(*e, "tok", "g");
  ASSERT_TRUE(Append(*e, "g", RandomInput("tok", 2, 1)).ok());
  std::future<absl::StatusOr<AppendResult>> first;
  std::future<GenerateResult> gen;
  {
    auto held = HoldScheduler(*e);
    store_.FailCommits(absl::UnavailableError("state store memory: injected failure"));
    auto p = std::make_shared<std::promise<absl::StatusOr<AppendResult>>>();
    first = p->get_future();
    Engine::AppendParams a;
    a.session_id = "g";
    a.input = RandomInput("tok", 1, 2);
    // (Its reply runs after the failed commit, before the next tick: the store works again.)
    e->Append(std::move(a), [this, p](absl::StatusOr<AppendResult> r) {
      store_.FailCommits(absl::OkStatus());
      p->set_value(std::move(r));
    });
    Engine::GenerateParams g;
    g.session_id = "g";
    g.max_tokens = 2;
    gen = GenerateAsync(*e, std::move(g));
  }
  EXPECT_EQ(Await(first).status().code(), absl::StatusCode::kUnavailable);
  GenerateResult r = Await(gen);
  EXPECT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.tokens.size(), 2u);
  EXPECT_EQ(e->GetSession("g")->position, 4);
  EXPECT_EQ(Stored("g")->position, 4);
}

// A chunked append on a session that something else marked for writing while it ran (here a
// fork of it in the same tick): its record is written half-way (as before the append), and the
// append keeps its undo, so when the commit of its last chunk fails the session is put back as
// it was, not removed as if it had been made in that window.
TEST_F(DurabilityTest, AChunkedAppendWrittenHalfWayKeepsItsUndo) {
  EngineOptions o = Options(Durability::kAck);
  o.max_batch_tokens = 64;  // the append below runs in 5 chunks
  auto e = MakeEngine(o);
  Open(*e, "tok", "a");
  ASSERT_TRUE(Append(*e, "a", RandomInput("tok", 3, 1)).ok());
  const SessionRecord before = *Stored("a");
  std::future<absl::StatusOr<SessionInfo>> forked;
  std::future<absl::StatusOr<AppendResult>> appended;
  {
    auto held = HoldScheduler(*e);
    forked = ForkAsync(*e, "a", "b");
    appended = AppendAsync(*e, "a", RandomInput("tok", 300, 2));
    // The fork's commit succeeds; the next (the append's last chunk) fails.
    store_.FailCommitsAfter(1, absl::UnavailableError("state store memory: injected failure"));
  }
  EXPECT_TRUE(Await(forked).ok());
  absl::StatusOr<AppendResult> r = Await(appended);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  store_.FailCommits(absl::OkStatus());
  absl::StatusOr<SessionInfo> a = e->GetSession("a");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->position, 3);
  absl::StatusOr<SessionSnapshot> snap = Export(*e, "a");
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ(snap->state, before.state);
  Open(*e, "tok", "next");  // a commit
  ASSERT_TRUE(Stored("a").has_value());
  EXPECT_EQ(Stored("a")->position, 3);
}

// A session made and at once given a chunked append: its record is written half-way (as before
// the append) and its create acknowledged then, so when the commit of the append's last chunk
// fails the session is put back as it was when acknowledged (position 0), not removed as if its
// create had failed too.
TEST_F(DurabilityTest, ACreateAcknowledgedHalfWayThroughItsChunkedAppendOutlivesTheAppend) {
  EngineOptions o = Options(Durability::kAck);
  o.max_batch_tokens = 64;  // the append below runs in 5 chunks
  auto e = MakeEngine(o);
  std::promise<absl::StatusOr<SessionInfo>> made;
  std::future<absl::StatusOr<AppendResult>> appended = CreateWithChunkedAppend(
      *e, [&](absl::StatusOr<SessionInfo> r) { made.set_value(r); },
      [&] {
        // The create's commit (with the first chunk) succeeds; the next (the last chunk's) fails.
        store_.FailCommitsAfter(1, absl::UnavailableError("state store memory: injected failure"));
      });
  absl::StatusOr<SessionInfo> created = made.get_future().get();
  ASSERT_TRUE(created.ok()) << created.status();
  absl::StatusOr<AppendResult> r = Await(appended);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  store_.FailCommits(absl::OkStatus());
  absl::StatusOr<SessionInfo> a = e->GetSession("a");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->position, 0);
  EXPECT_EQ(a->uid, created->uid);
  Open(*e, "tok", "next");  // a commit
  ASSERT_TRUE(Stored("a").has_value());
  EXPECT_EQ(Stored("a")->position, 0);
}

// As above, but the create's own commit fails (the append goes on): the create was answered
// UNAVAILABLE, so a later write of the session half-way through the append acknowledges
// nothing, and when the commit of the append's end fails too the session is removed, not put
// back to that write's record.
TEST_F(DurabilityTest, ACreateThatFailedHalfWayThroughItsChunkedAppendIsNotKeptByALaterWrite) {
  EngineOptions o = Options(Durability::kAck);
  o.max_batch_tokens = 64;  // the append below runs in 5 chunks
  auto e = MakeEngine(o);
  std::promise<absl::StatusOr<SessionInfo>> made;
  std::future<absl::StatusOr<AppendResult>> appended = CreateWithChunkedAppend(
      *e,
      [&](absl::StatusOr<SessionInfo> r) {
        // (On the scheduler thread, before the next chunk: the next commit, a rewrite of the
        // session half-way, succeeds; the one after, the append's last, fails.)
        store_.FailCommitsAfter(1, absl::UnavailableError("state store memory: injected failure"));
        made.set_value(r);
      },
      [&] {
        store_.FailOneCommitAfter(0,
                                  absl::UnavailableError("state store memory: injected failure"));
      });
  absl::StatusOr<SessionInfo> created = made.get_future().get();
  EXPECT_EQ(created.status().code(), absl::StatusCode::kUnavailable) << created.status();
  absl::StatusOr<AppendResult> r = Await(appended);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  store_.FailCommits(absl::OkStatus());
  EXPECT_EQ(e->GetSession("a").status().code(), absl::StatusCode::kNotFound);
  Open(*e, "tok", "next");  // a commit
  EXPECT_FALSE(Stored("a").has_value());
}

// Under kAck, work queued behind a delete is answered with the delete: NOT_FOUND once the
// delete is durable; when its commit fails, the same failure (the session is back and they
// were not applied), never a NOT_FOUND for a session that still exists.
TEST_F(DurabilityTest, WorkQueuedBehindADeleteIsAnsweredWhenTheDeleteIs) {
  auto e = MakeEngine(Options(Durability::kAck));
  for (const bool fails : {true, false}) {
    SCOPED_TRACE(fails ? "the delete's commit fails" : "the delete's commit succeeds");
    Open(*e, "tok", "d");
    std::future<absl::Status> deleted;
    std::future<absl::StatusOr<AppendResult>> behind;
    {
      auto held = HoldScheduler(*e);
      deleted = DeleteAsync(*e, "d");
      behind = AppendAsync(*e, "d", RandomInput("tok", 1, 3));
      if (fails) store_.FailCommits(absl::UnavailableError("state store memory: injected failure"));
    }
    const absl::Status del = Await(deleted);
    absl::StatusOr<AppendResult> r = Await(behind);
    store_.FailCommits(absl::OkStatus());
    if (fails) {
      EXPECT_EQ(del.code(), absl::StatusCode::kUnavailable) << del;
      EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
      ASSERT_TRUE(e->GetSession("d").ok());
      EXPECT_EQ(e->GetSession("d")->position, 0);
      std::future<absl::Status> again = DeleteAsync(*e, "d");
      ASSERT_TRUE(Await(again).ok());
    } else {
      EXPECT_TRUE(del.ok()) << del;
      EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound) << r.status();
      EXPECT_FALSE(Stored("d").has_value());
    }
  }
}

// A session used only as a fork source is written at each fork (its last use), so recovery
// does not judge it expired by the time of its last append.
TEST_F(DurabilityTest, ForkSourceLastUseIsStored) {
  auto e = MakeEngine(Options(Durability::kAck));
  Open(*e, "tok", "prompt");
  std::optional<SessionRecord> before = Stored("prompt");
  ASSERT_TRUE(before.has_value());
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(Fork(*e, "prompt", "child").ok());
  std::optional<SessionRecord> after = Stored("prompt");
  ASSERT_TRUE(after.has_value());
  EXPECT_GT(after->last_used_ms, before->last_used_ms);
  EXPECT_EQ(after->position, before->position);
}

// A record whose retry entry cannot be replayed exactly (a multi-row ALL append stored without
// its rows, or with the wrong number of them, as a damaged or foreign writer could leave it) is
// recovered without it: the retry gets ABORTED, never a crash or the wrong outputs, and the
// session continues. With its rows intact the same record replays them.
TEST_F(DurabilityTest, RecoveredRetryWithoutItsRowsIsAbortedNotReplayed) {
  const SequenceInput history = RandomInput("tok", 12, 21);
  {
    auto e = MakeEngine(Options(Durability::kCheckpoint, 60000));
    Open(*e, "tok", "r");
    std::promise<absl::StatusOr<AppendResult>> p;
    Engine::AppendParams a;
    a.session_id = "r";
    a.input = Slice(history, 0, 4, 0);
    a.expected_position = 0;
    e->Append(std::move(a), [&](absl::StatusOr<AppendResult> r) { p.set_value(r); });
    ASSERT_TRUE(p.get_future().get().ok());
    e->Shutdown();
  }
  std::optional<SessionRecord> rec = Stored("r");
  ASSERT_TRUE(rec.has_value());
  ASSERT_EQ(rec->retry_length, 4);
  const int64_t od = tok_config_.output_dim;
  ASSERT_EQ(static_cast<int64_t>(rec->retry_outputs.size()), 4 * od);
  const std::vector<float> rows = rec->retry_outputs;

  auto retry = [&](Engine& e) {
    std::promise<absl::StatusOr<AppendResult>> p;
    Engine::AppendParams a;
    a.session_id = "r";
    a.input = Slice(history, 0, 4, 0);
    a.expected_position = 0;
    e.Append(std::move(a), [&](absl::StatusOr<AppendResult> r) { p.set_value(r); });
    return p.get_future().get();
  };
  for (const size_t kept : {size_t{0}, rows.size() - 1, rows.size()}) {
    SessionRecord damaged = *rec;
    damaged.retry_outputs.assign(rows.begin(), rows.begin() + static_cast<int64_t>(kept));
    ASSERT_TRUE(store_.Commit({{SessionKey("", "r"), EncodeSessionRecord(damaged)}}).ok());
    auto e = MakeEngine(Options(Durability::kCheckpoint, 60000));
    absl::StatusOr<RecoveryReport> report = e->Recover();
    ASSERT_TRUE(report.ok()) << report.status();
    ASSERT_EQ(report->recovered, 1);
    absl::StatusOr<AppendResult> r = retry(*e);
    if (kept == rows.size()) {
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_TRUE(r->replayed);
      EXPECT_EQ(r->outputs, rows);
    } else {
      EXPECT_EQ(r.status().code(), absl::StatusCode::kAborted) << kept << ": " << r.status();
      EXPECT_THAT(std::string(r.status().message()), HasSubstr("expected_position"));
    }
    // The session continues exactly either way.
    std::promise<absl::StatusOr<AppendResult>> pm;
    Engine::AppendParams cont;
    cont.session_id = "r";
    cont.input = Slice(history, 4, 12, 0);
    e->Append(std::move(cont), [&](absl::StatusOr<AppendResult> x) { pm.set_value(x); });
    absl::StatusOr<AppendResult> next = pm.get_future().get();
    ASSERT_TRUE(next.ok()) << next.status();
    ExpectNear(next->outputs, Rows(Reference("tok", history), 4, 12, od));
    e->Shutdown();
    ASSERT_TRUE(store_.Commit({{SessionKey("", "r"), EncodeSessionRecord(*rec)}}).ok());
  }
}

// Each operation that changes a session, with every commit failing: UNAVAILABLE naming the
// store, and the engine as before the call. Then the same call succeeds.
TEST_F(DurabilityTest, AckFailedCommitChangesNothing) {
  auto e = MakeEngine(Options(Durability::kAck));
  Open(*e, "tok", "base");
  ASSERT_TRUE(Append(*e, "base", RandomInput("tok", 5, 1)).ok());
  const SessionSnapshot snap0 = *Export(*e, "base");
  const int64_t count0 = e->stats().store.pool + e->stats().store.host;
  const absl::Status down = absl::UnavailableError("state store memory: injected failure");
  store_.FailCommits(down);

  auto expect_unavailable = [&](const absl::Status& st, const char* what) {
    EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << what << ": " << st;
    EXPECT_THAT(std::string(st.message()), HasSubstr("state store")) << what;
  };
  auto expect_unchanged = [&](const char* what) {
    absl::StatusOr<SessionSnapshot> now = Export(*e, "base");
    ASSERT_TRUE(now.ok()) << what << ": " << now.status();
    EXPECT_EQ(now->position, snap0.position) << what;
    EXPECT_EQ(now->state, snap0.state) << what;
    EXPECT_EQ(now->last_output, snap0.last_output) << what;
    EXPECT_EQ(e->stats().store.pool + e->stats().store.host, count0) << what;
  };

  expect_unavailable(Append(*e, "base", RandomInput("tok", 3, 2)).status(), "append");
  expect_unchanged("append");
  expect_unavailable(Append(*e, "base", RandomInput("tok", 3, 2), snap0.position).status(),
                     "append with expected_position");
  expect_unchanged("append with expected_position");
  expect_unavailable(e->OpenSession("new", "tok", true, 0).status(), "open");
  expect_unchanged("open");
  EXPECT_EQ(e->GetSession("new").status().code(), absl::StatusCode::kNotFound);
  expect_unavailable(Create(*e, "tok", RandomInput("tok", 4, 3), "pre").status(),
                     "create with prefix");
  expect_unchanged("create with prefix");
  EXPECT_EQ(e->GetSession("pre").status().code(), absl::StatusCode::kNotFound);
  expect_unavailable(Fork(*e, "base", "forked").status(), "fork");
  expect_unchanged("fork");
  EXPECT_EQ(e->GetSession("forked").status().code(), absl::StatusCode::kNotFound);
  expect_unavailable(e->ImportSession(snap0, "imported", 0).status(), "import");
  expect_unchanged("import");
  expect_unavailable(Score(*e, "tok", {RandomInput("tok", 4, 5)}, OutputMode::kLast, true).status(),
                     "prefill");
  expect_unchanged("prefill");
  {
    auto f = DeleteAsync(*e, "base");
    expect_unavailable(Await(f), "delete");
  }
  expect_unchanged("delete");
  GenerateResult g = Generate(*e, "base", 4, SampleOptions{}, 1);
  expect_unavailable(g.status, "generate");
  EXPECT_TRUE(g.tokens.empty());
  expect_unchanged("generate");
  // Score without prefill stores nothing: it works while the store is down.
  EXPECT_TRUE(Score(*e, "tok", {RandomInput("tok", 4, 5)}).ok());

  // The store is back: everything works, and the store has what the engine has.
  store_.FailCommits(absl::OkStatus());
  absl::StatusOr<AppendResult> r = Append(*e, "base", RandomInput("tok", 3, 2), snap0.position);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->replayed);
  EXPECT_EQ(r->position, snap0.position + 3);
  EXPECT_EQ(Stored("base")->position, snap0.position + 3);
  ASSERT_TRUE(Fork(*e, "base", "forked").ok());
  EXPECT_TRUE(Stored("forked").has_value());
  auto f = DeleteAsync(*e, "forked");
  ASSERT_TRUE(Await(f).ok());
  EXPECT_FALSE(Stored("forked").has_value());
}

TEST_F(DurabilityTest, DeleteForkImportPrefillAndExpiryArePersisted) {
  auto e = MakeEngine(Options(Durability::kAck));
  Open(*e, "tok", "a");
  ASSERT_TRUE(Append(*e, "a", RandomInput("tok", 6, 1)).ok());
  ASSERT_TRUE(Fork(*e, "a", "b").ok());
  EXPECT_EQ(Stored("b")->position, 6);
  EXPECT_EQ(Stored("b")->state, Stored("a")->state);
  absl::StatusOr<SessionSnapshot> snap = Export(*e, "a");
  ASSERT_TRUE(e->ImportSession(*snap, "c", 0).ok());
  EXPECT_EQ(Stored("c")->state, snap->state);
  absl::StatusOr<std::vector<SequenceOutput>> pre =
      Score(*e, "tok", {RandomInput("tok", 5, 2)}, OutputMode::kLast, /*prefill=*/true);
  ASSERT_TRUE(pre.ok());
  EXPECT_EQ(Stored((*pre)[0].session_id)->position, 5);
  auto d = DeleteAsync(*e, "a");
  ASSERT_TRUE(Await(d).ok());
  EXPECT_FALSE(Stored("a").has_value());
  // Expiry: a 1 s TTL; the sweep removes it and the delete reaches the store.
  ASSERT_TRUE(e->OpenSession("short", "tok", true, 1).ok());
  ASSERT_TRUE(Stored("short").has_value());
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (Stored("short").has_value() && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_FALSE(Stored("short").has_value());
}

TEST_F(DurabilityTest, GenerateTokensAreDurable) {
  auto e = MakeEngine(Options(Durability::kAck));
  Open(*e, "tok", "g");
  std::atomic<int> stale{0};
  Engine::GenerateParams p;
  p.session_id = "g";
  p.max_tokens = 6;
  p.prompt = RandomInput("tok", 3, 4);
  std::promise<absl::Status> done;
  e->Generate(
      std::move(p),
      [&](const GeneratedToken& t) {
        std::optional<SessionRecord> r = Stored("g");
        if (!r.has_value() || r->position < t.position) ++stale;
      },
      [&](absl::Status st) { done.set_value(st); });
  ASSERT_TRUE(done.get_future().get().ok());
  EXPECT_EQ(stale.load(), 0);
  EXPECT_EQ(Stored("g")->position, 9);
}

TEST_F(DurabilityTest, CheckpointWritesWithinTheIntervalAndAtShutdown) {
  {
    auto e = MakeEngine(Options(Durability::kCheckpoint, 200));
    Open(*e, "tok", "a");
    ASSERT_TRUE(Append(*e, "a", RandomInput("tok", 4, 1)).ok());
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while ((!Stored("a").has_value() || Stored("a")->position != 4) &&
           std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ASSERT_TRUE(Stored("a").has_value());
    EXPECT_EQ(Stored("a")->position, 4);
  }
  {
    // A long interval: nothing before shutdown, everything at it.
    auto e = MakeEngine(Options(Durability::kCheckpoint, 600000));
    ASSERT_TRUE(Append(*e, "a", RandomInput("tok", 3, 2)).status().code() ==
                absl::StatusCode::kNotFound);  // not recovered yet
    ASSERT_TRUE(e->Recover().ok());
    ASSERT_TRUE(Append(*e, "a", RandomInput("tok", 3, 2)).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    EXPECT_EQ(Stored("a")->position, 4);
    e->Shutdown();
    EXPECT_EQ(Stored("a")->position, 7);
  }
}

TEST_F(DurabilityTest, CheckpointRetriesAFailedCommit) {
  auto e = MakeEngine(Options(Durability::kCheckpoint, 50));
  store_.FailCommits(absl::UnavailableError("state store memory: injected failure"));
  Open(*e, "tok", "a");
  ASSERT_TRUE(Append(*e, "a", RandomInput("tok", 4, 1)).ok());  // replies at once
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(Stored("a").has_value());
  store_.FailCommits(absl::OkStatus());
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!Stored("a").has_value() && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(Stored("a").has_value());
  EXPECT_EQ(Stored("a")->position, 4);
}

// kCheckpoint's commit runs beside the ticks: a store that stalls (a long fsync, a paused
// Redis) holds back the checkpoint only, never an append's reply (before, the scheduler waited
// in the store and every session with it).
TEST_F(DurabilityTest, AStalledCheckpointHoldsBackNoReply) {
  auto e = MakeEngine(Options(Durability::kCheckpoint, 50));
  absl::Cleanup release = [this] {
    store_.HoldNextCommits(0);
    store_.ReleaseHeldCommits();
  };  // (before e shuts down)
  const SequenceInput history = RandomInput("tok", 24, 5);
  const std::vector<float> want = Reference("tok", history);
  const int64_t od = tok_config_.output_dim;
  Open(*e, "tok", "a");
  ASSERT_TRUE(Append(*e, "a", Slice(history, 0, 4, 0)).ok());
  ASSERT_TRUE(WaitFor([&] { return Stored("a").has_value() && Stored("a")->position == 4; }));
  store_.HoldNextCommits(1);
  Open(*e, "tok", "b");  // marks a change: the next checkpoint takes it, and waits in the store
  ASSERT_TRUE(WaitFor([&] { return store_.held_commits() == 1; }));
  for (int64_t k = 1; k < 6; ++k) {
    std::future<absl::StatusOr<AppendResult>> f =
        AppendAsync(*e, "a", Slice(history, 4 * k, 4 * (k + 1), 0));
    ASSERT_EQ(f.wait_for(std::chrono::seconds(10)), std::future_status::ready)
        << "append " << k << " waited for the store";
    absl::StatusOr<AppendResult> r = f.get();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->position, 4 * (k + 1));
    ExpectNear(r->outputs, Rows(want, 4 * k, 4 * (k + 1), od));
  }
  EXPECT_EQ(store_.held_commits(), 1);
  EXPECT_EQ(Stored("a")->position, 4);
  EXPECT_FALSE(Stored("b").has_value());
  store_.ReleaseHeldCommits();
  // The held checkpoint lands, then the next one writes what came meanwhile.
  ASSERT_TRUE(WaitFor([&] { return Stored("a")->position == 24 && Stored("b").has_value(); }));
}

TEST_F(DurabilityTest, RecoveryKeepsForeignAndDamagedRecordsAndDropsExpiredOnes) {
  {
    auto e = MakeEngine(Options(Durability::kAck));
    Open(*e, "tok", "live");
    ASSERT_TRUE(Append(*e, "live", RandomInput("tok", 3, 1)).ok());
    ASSERT_TRUE(e->OpenSession("old", "tok", true, 5).ok());
  }
  SessionRecord foreign = *Stored("live");
  foreign.id = "foreign";
  foreign.model = "not-served";
  SessionRecord rehashed = *Stored("live");
  rehashed.id = "rehashed";
  rehashed.config_hash = "other-weights";
  SessionRecord old = *Stored("old");
  old.last_used_ms -= 3600 * 1000;  // an hour idle, TTL 5 s
  std::string damaged = EncodeSessionRecord(*Stored("live"));
  damaged[damaged.size() / 2] ^= 0x20;
  // Well formed, its checksum right, but a state no sequence can produce (a faulty writer's):
  // a normaliser of 0 under a huge value sum, and a position past kMaxPosition.
  SessionRecord unreachable = *Stored("live");
  unreachable.id = "unreachable";
  unreachable.state[0] = 1e30f;  // m
  unreachable.state[1] = 0.0f;   // u
  unreachable.state[2] = 3e38f;  // w[0]
  SessionRecord far = *Stored("live");
  far.id = "far";
  far.position = kMaxPosition + 1;
  // A last output ImportSession would refuse (a retry would replay it, Generate sample from it),
  // and a last use at INT64_MIN (the idle time computed from it overflowed): corrupt, expired.
  SessionRecord nan_output = *Stored("live");
  nan_output.id = "nanout";
  nan_output.last_output[0] = std::numeric_limits<float>::quiet_NaN();
  SessionRecord epoch = *Stored("live");
  epoch.id = "epoch";
  epoch.last_used_ms = std::numeric_limits<int64_t>::min();
  ASSERT_TRUE(store_
                  .Commit({{SessionKey("", "foreign"), EncodeSessionRecord(foreign)},
                           {SessionKey("", "rehashed"), EncodeSessionRecord(rehashed)},
                           {SessionKey("", "old"), EncodeSessionRecord(old)},
                           {SessionKey("", "damaged"), damaged},
                           {SessionKey("", "garbage"), std::string("not a record")},
                           {SessionKey("", "unreachable"), EncodeSessionRecord(unreachable)},
                           {SessionKey("", "far"), EncodeSessionRecord(far)},
                           {SessionKey("", "nanout"), EncodeSessionRecord(nan_output)},
                           {SessionKey("", "epoch"), EncodeSessionRecord(epoch)}})
                  .ok());
  auto e = MakeEngine(Options(Durability::kAck));
  absl::StatusOr<RecoveryReport> report = e->Recover();
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->records, 10);
  EXPECT_EQ(report->recovered, 1);
  EXPECT_EQ(report->expired, 2);
  EXPECT_EQ(report->other_model, 2);
  EXPECT_EQ(report->corrupt, 5);
  EXPECT_EQ(report->problems.size(), 7u);
  EXPECT_FALSE(e->GetSession("unreachable").ok());
  EXPECT_FALSE(e->GetSession("nanout").ok());
  EXPECT_FALSE(e->GetSession("epoch").ok());
  EXPECT_FALSE(e->GetSession("far").ok());
  EXPECT_TRUE(e->GetSession("live").ok());
  EXPECT_FALSE(e->GetSession("foreign").ok());
  // Kept: another deployment may serve them; dropped: the expired one.
  EXPECT_TRUE(Stored("foreign").has_value());
  EXPECT_TRUE(Stored("rehashed").has_value());
  EXPECT_TRUE(store_.Get(SessionKey("", "damaged"))->has_value());
  EXPECT_FALSE(Stored("old").has_value());
}

}  // namespace
}  // namespace aaren::testing
