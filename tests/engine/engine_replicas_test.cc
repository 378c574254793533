// SPDX-License-Identifier: Apache-2.0
// Replicas in the engine (engine.h "Shared stores"): two engines over one shared MemoryStore,
// as two aaren-server processes share Redis. A session moves between them with nothing lost,
// a stale copy is refreshed before use, a race is lost with ABORTED (never a fork), a create of
// an id the other made is ALREADY_EXISTS, and concurrent conditional appends on both apply each
// acknowledged append exactly once. Outputs are checked against a reference run of the whole
// history on a CpuBackend of its own.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "engine/store/memory_store.h"
#include "engine/store/session_record.h"
#include "tests/engine/engine_fixture.h"

namespace aaren::testing {
namespace {

using ::testing::HasSubstr;

class ReplicasTest : public EngineTest {
 protected:
  std::unique_ptr<Engine> Replica(const std::string& name) {
    EngineOptions o;
    o.state_store = &store_;
    o.durability = Durability::kAck;
    o.replica_id = name;
    return MakeEngine(o);
  }

  // kCheckpoint every 50 ms (the tests of a commit in flight beside the ticks).
  std::unique_ptr<Engine> CheckpointReplica(const std::string& name, EngineOptions o = {}) {
    o.state_store = &store_;
    o.durability = Durability::kCheckpoint;
    o.checkpoint_interval_ms = 50;
    o.replica_id = name;
    return MakeEngine(o);
  }

  void ExpectNear(const std::vector<float>& got, const std::vector<float>& want) {
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_NEAR(got[i], want[i], kTolerance * (1 + std::abs(want[i]))) << "at " << i;
    }
  }

  MemoryStore store_{/*shared=*/true};
};

TEST_F(ReplicasTest, ASessionMovesBetweenReplicasWithNothingLost) {
  auto a = Replica("a");
  auto b = Replica("b");
  auto c = Replica("c");
  const SequenceInput history = RandomInput("tok", 40, 7);
  const int64_t od = tok_config_.output_dim;
  const std::vector<float> want = Reference("tok", history);
  Open(*a, "tok", "x");
  // 10 tokens on each replica in turn, then back on A (whose copy is stale by then).
  Engine* order[] = {a.get(), b.get(), c.get(), a.get()};
  for (int k = 0; k < 4; ++k) {
    absl::StatusOr<AppendResult> r =
        Append(*order[k], "x", Slice(history, 10 * k, 10 * (k + 1), 0));
    ASSERT_TRUE(r.ok()) << "step " << k << ": " << r.status();
    EXPECT_EQ(r->position, 10 * (k + 1));
    ExpectNear(r->outputs, Rows(want, 10 * k, 10 * (k + 1), od));
  }
  std::optional<std::string> v = *store_.Get(SessionKey("", "x"));
  ASSERT_TRUE(v.has_value());
  absl::StatusOr<SessionRecord> rec = DecodeSessionRecord(*v);
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(rec->position, 40);
  EXPECT_EQ(rec->writer, "a");
  // Reads on a replica that never held it load it too.
  auto d = Replica("d");
  absl::StatusOr<SessionInfo> info = d->GetSession(SessionRef("", "x"));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->position, 40);
}

TEST_F(ReplicasTest, ALostRaceIsAbortedAndTheLoserTakesTheWinnersState) {
  auto a = Replica("a");
  auto b = Replica("b");
  const SequenceInput history = RandomInput("tok", 30, 11);
  const int64_t od = tok_config_.output_dim;
  Open(*a, "tok", "r");
  ASSERT_TRUE(Append(*a, "r", Slice(history, 0, 10, 0)).ok());
  ASSERT_TRUE(b->GetSession(SessionRef("", "r")).ok());  // B holds a fresh copy
  // B's append runs on its copy while A advances the session: B loses at its commit.
  std::future<absl::StatusOr<AppendResult>> losing;
  {
    auto held = HoldScheduler(*b);
    losing = AppendAsync(*b, "r", RandomInput("tok", 5, 99));
    absl::StatusOr<AppendResult> won = Append(*a, "r", Slice(history, 10, 20, 0));
    ASSERT_TRUE(won.ok()) << won.status();
    held->Release();
  }
  absl::StatusOr<AppendResult> lost = Await(losing);
  ASSERT_FALSE(lost.ok());
  EXPECT_EQ(lost.status().code(), absl::StatusCode::kAborted) << lost.status();
  EXPECT_THAT(lost.status().message(), HasSubstr("another replica"));
  EXPECT_THAT(lost.status().message(), HasSubstr("position 20"));
  // Nothing of B's append is anywhere: B now holds A's state and continues from it.
  absl::StatusOr<AppendResult> next = Append(*b, "r", Slice(history, 20, 30, 0));
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->position, 30);
  ExpectNear(next->outputs, Rows(Reference("tok", history), 20, 30, od));
}

TEST_F(ReplicasTest, CreatingAnIdTheOtherReplicaMadeIsAlreadyExists) {
  auto a = Replica("a");
  auto b = Replica("b");
  Open(*a, "tok", "y");
  absl::StatusOr<SessionInfo> again = b->OpenSession(SessionRef("", "y"), "tok", false, 0);
  ASSERT_TRUE(again.ok()) << again.status();  // opening it on B finds A's
  Engine::CreateParams p;
  p.model = "tok";
  p.session_id = "y";
  std::promise<absl::StatusOr<SessionInfo>> made;
  b->CreateSession(std::move(p), [&](absl::StatusOr<SessionInfo> r) { made.set_value(r); });
  absl::StatusOr<SessionInfo> r = made.get_future().get();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAlreadyExists) << r.status();

  // Both create "z" at once: one wins, the other gets ALREADY_EXISTS, and both then see the
  // winner's session.
  std::future<absl::StatusOr<SessionInfo>> on_b;
  {
    auto held = HoldScheduler(*b);
    on_b = std::async(std::launch::async, [&] {
      return b->OpenSession(SessionRef("", "z"), "tok", /*create_if_missing=*/true, 0);
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // B's create waits to commit
    Open(*a, "tok", "z");
    held->Release();
  }
  absl::StatusOr<SessionInfo> b_made = on_b.get();
  ASSERT_FALSE(b_made.ok());
  EXPECT_EQ(b_made.status().code(), absl::StatusCode::kAlreadyExists) << b_made.status();
  absl::StatusOr<SessionInfo> a_info = a->GetSession(SessionRef("", "z"));
  absl::StatusOr<SessionInfo> b_info = b->GetSession(SessionRef("", "z"));
  ASSERT_TRUE(a_info.ok() && b_info.ok());
  EXPECT_EQ(a_info->uid, b_info->uid);
}

TEST_F(ReplicasTest, ADeleteOnOneReplicaIsSeenByTheOther) {
  auto a = Replica("a");
  auto b = Replica("b");
  Open(*a, "tok", "d");
  ASSERT_TRUE(Append(*a, "d", RandomInput("tok", 3, 1)).ok());
  ASSERT_TRUE(b->GetSession(SessionRef("", "d")).ok());
  ASSERT_TRUE(DeleteAsync(*a, "d").get().ok());
  EXPECT_EQ(store_.Get(SessionKey("", "d"))->has_value(), false);
  absl::StatusOr<SessionInfo> gone = b->GetSession(SessionRef("", "d"));
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kNotFound) << gone.status();
  absl::StatusOr<AppendResult> app = Append(*b, "d", RandomInput("tok", 1, 2));
  EXPECT_EQ(app.status().code(), absl::StatusCode::kNotFound) << app.status();
}

// KServe v2's END deletes the incarnation its sequence made (expected_uid) from the scheduler
// thread: held here, it is deleted without a store read first; the compare-and-set still keeps a
// record another replica advanced meanwhile.
TEST_F(ReplicasTest, ADeleteOfTheIncarnationHeldHereDoesNotReadTheStoreFirst) {
  auto a = Replica("a");
  auto b = Replica("b");
  auto delete_uid = [&](Engine& e, const std::string& id, uint64_t uid) {
    std::promise<absl::Status> p;
    auto f = p.get_future();
    e.DeleteSession(
        SessionRef("", id), [&p](absl::Status st) { p.set_value(std::move(st)); }, nullptr, uid);
    return Await(f);
  };
  const SessionInfo e = Open(*a, "tok", "e");
  ASSERT_TRUE(Append(*a, "e", RandomInput("tok", 3, 1)).ok());
  int64_t reads = store_.reads();
  ASSERT_TRUE(delete_uid(*a, "e", e.uid).ok());
  EXPECT_EQ(store_.reads(), reads) << "the delete read the store";
  EXPECT_FALSE(store_.Get(SessionKey("", "e"))->has_value());
  // Without the uid a delete reads first (the copy may be stale).
  Open(*a, "tok", "f");
  reads = store_.reads();
  ASSERT_TRUE(DeleteAsync(*a, "f").get().ok());
  EXPECT_GT(store_.reads(), reads);
  // b advances the session after a's last write: a's unread delete loses the compare-and-set,
  // and b's record stays, with a's copy replaced by it.
  const SessionInfo g = Open(*a, "tok", "g");
  ASSERT_TRUE(Append(*a, "g", RandomInput("tok", 3, 3)).ok());
  ASSERT_TRUE(Append(*b, "g", RandomInput("tok", 2, 4)).ok());
  absl::Status lost = delete_uid(*a, "g", g.uid);
  EXPECT_EQ(lost.code(), absl::StatusCode::kAborted) << lost;
  absl::StatusOr<std::optional<std::string>> kept = store_.Get(SessionKey("", "g"));
  ASSERT_TRUE(kept.ok() && kept->has_value()) << "the advanced record was deleted";
  absl::StatusOr<SessionRecord> record = DecodeSessionRecord(**kept);
  ASSERT_TRUE(record.ok()) << record.status();
  EXPECT_EQ(record->position, 5);
  absl::StatusOr<SessionInfo> seen = a->GetSession(SessionRef("", "g"));
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ(seen->position, 5);
  // The copy taken from b's record is the same incarnation: a second try (v2's END makes one)
  // deletes it, again without a read.
  EXPECT_EQ(seen->uid, g.uid);
  reads = store_.reads();
  ASSERT_TRUE(delete_uid(*a, "g", g.uid).ok());
  EXPECT_EQ(store_.reads(), reads);
  EXPECT_FALSE(store_.Get(SessionKey("", "g"))->has_value());
}

TEST_F(ReplicasTest, AnIdMadeAgainForAnotherModelReplacesTheStaleCopySafely) {
  // A holds "m" on the tokens model; on B it is deleted and made again on the features model
  // (other state and output sizes). A must load the new session, not copy it into the old one.
  auto a = Replica("a");
  auto b = Replica("b");
  Open(*a, "tok", "m");
  ASSERT_TRUE(Append(*a, "m", RandomInput("tok", 4, 3)).ok());
  ASSERT_TRUE(b->GetSession(SessionRef("", "m")).ok());
  ASSERT_TRUE(DeleteAsync(*b, "m").get().ok());
  Open(*b, "feat", "m");
  const SequenceInput in = RandomInput("feat", 6, 4);
  absl::StatusOr<AppendResult> on_b = Append(*b, "m", in);
  ASSERT_TRUE(on_b.ok()) << on_b.status();
  absl::StatusOr<SessionInfo> info = a->GetSession(SessionRef("", "m"));
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->model, "feat");
  EXPECT_EQ(info->position, 6);
  absl::StatusOr<SessionSnapshot> snap = Export(*a, "m");
  ASSERT_TRUE(snap.ok()) << snap.status();
  std::vector<float> want_state;
  Reference("feat", in, &want_state);
  ExpectNear(snap->state, want_state);
}

TEST_F(ReplicasTest, ConcurrentConditionalAppendsApplyEachAcknowledgedOneExactlyOnce) {
  auto a = Replica("a");
  auto b = Replica("b");
  Open(*a, "tok", "c");
  // Two clients, one per replica, each appending 3-token chunks at the position it last saw.
  std::mutex mu;
  std::map<int64_t, SequenceInput> acked;  // position before -> tokens
  std::atomic<int> aborted{0}, other_errors{0};
  auto client = [&](Engine* e, uint64_t seed) {
    for (int i = 0; i < 25; ++i) {
      SequenceInput in = RandomInput("tok", 3, seed * 1000 + i);
      for (int attempt = 0; attempt < 50; ++attempt) {
        absl::StatusOr<SessionInfo> info = e->GetSession(SessionRef("", "c"));
        if (!info.ok()) {
          ++other_errors;
          break;
        }
        const int64_t at = info->position;
        absl::StatusOr<AppendResult> r = Append(*e, "c", in, at);
        if (r.ok()) {
          std::lock_guard<std::mutex> lock(mu);
          EXPECT_FALSE(acked.contains(at)) << "position " << at << " acknowledged twice";
          acked[at] = in;
          break;
        }
        if (r.status().code() == absl::StatusCode::kAborted) {
          ++aborted;
          continue;
        }
        ++other_errors;
        break;
      }
    }
  };
  std::thread t1(client, a.get(), 1), t2(client, b.get(), 2);
  t1.join();
  t2.join();
  EXPECT_EQ(other_errors.load(), 0);
  // The acknowledged appends tile the history with no gap and no overlap.
  SequenceInput whole;
  int64_t pos = 0;
  for (const auto& [at, in] : acked) {
    ASSERT_EQ(at, pos) << "a gap or an overlap at " << pos;
    Concat(whole, in);
    pos += 3;
  }
  EXPECT_EQ(acked.size(), 50u);
  // Both replicas end at that history's state.
  std::vector<float> want_state;
  const std::vector<float> want = Reference("tok", whole, &want_state);
  for (Engine* e : {a.get(), b.get()}) {
    absl::StatusOr<SessionInfo> info = e->GetSession(SessionRef("", "c"));
    ASSERT_TRUE(info.ok());
    ASSERT_EQ(info->position, pos);
    absl::StatusOr<SessionSnapshot> snap = Export(*e, "c");
    ASSERT_TRUE(snap.ok()) << snap.status();
    ExpectNear(snap->state, want_state);
  }
  std::cerr << "conditional appends: " << acked.size() << " acknowledged, " << aborted.load()
            << " ABORTED and retried\n";
}

// An append checked against its session's position (expected_position) but not picked that tick
// (the batch was full), whose session then loses a compare-and-set: it is checked again against
// the winner's position, not run from the old one (it ran at position 3 on the winner's state
// at 8, ended at 7, and the other replica then read 7).
TEST_F(ReplicasTest, AnAppendCheckedBeforeALostRaceIsCheckedAgainstTheWinnersPosition) {
  EngineOptions o;
  o.state_store = &store_;
  o.durability = Durability::kAck;
  o.replica_id = "a";
  o.max_batch_tokens = 8;
  o.interactive_tokens = 1;
  auto a = MakeEngine(o);
  auto b = Replica("b");
  Open(*a, "tok", "s");
  Open(*a, "tok", "other");
  ASSERT_TRUE(Append(*a, "s", RandomInput("tok", 3, 1)).ok());
  std::future<absl::StatusOr<AppendResult>> bulk, checked;
  std::future<absl::StatusOr<SessionInfo>> fork;
  {
    auto held = HoldScheduler(*a);
    bulk = AppendAsync(*a, "other", RandomInput("tok", 20, 2));  // fills the next tick
    fork = ForkAsync(*a, "s", "s2");                             // marks s written that tick
    checked = AppendAsync(*a, "s", RandomInput("tok", 4, 3), /*expected_position=*/3);
    // Meanwhile B moves s on to 8.
    absl::StatusOr<AppendResult> moved = Append(*b, "s", RandomInput("tok", 5, 4));
    ASSERT_TRUE(moved.ok()) << moved.status();
    ASSERT_EQ(moved->position, 8);
  }
  ASSERT_TRUE(Await(bulk).ok());
  (void)Await(fork);  // either outcome: it only marks s written in that tick
  absl::StatusOr<AppendResult> r = Await(checked);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAborted) << (r.ok() ? r->position : -1);
  absl::StatusOr<SessionInfo> on_b = b->GetSession(SessionRef("", "s"));
  ASSERT_TRUE(on_b.ok()) << on_b.status();
  EXPECT_EQ(on_b->position, 8);
}

// A record past its idle TTL that no replica holds (its holder went away) is gone for GetSession
// and for a create of its id alike (the create used to conflict with it: ALREADY_EXISTS).
TEST_F(ReplicasTest, AnExpiredRecordNobodyHoldsDoesNotBlockMakingItsIdAgain) {
  {
    auto a = Replica("a");
    ASSERT_TRUE(a->OpenSession(SessionRef("", "brief"), "tok", true, /*idle_ttl_s=*/1).ok());
  }
  ASSERT_TRUE(store_.Get(SessionKey("", "brief"))->has_value());
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  auto b = Replica("b");
  EXPECT_EQ(b->GetSession(SessionRef("", "brief")).status().code(), absl::StatusCode::kNotFound);
  Engine::CreateParams p;
  p.model = "tok";
  p.session_id = "brief";
  std::promise<absl::StatusOr<SessionInfo>> made;
  b->CreateSession(std::move(p), [&](absl::StatusOr<SessionInfo> r) { made.set_value(r); });
  absl::StatusOr<SessionInfo> r = made.get_future().get();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->position, 0);
}

// A commit that applied but reported failure (Redis ran the batch, then its reply was lost): the
// next compare-and-set meets this replica's own write, not another's, and must not take it in
// place of the live copy (that rolled back the appends acknowledged since: position 5, not 6).
TEST_F(ReplicasTest, ACommitThatAppliedButFailedIsNotMistakenForAnotherReplicasWrite) {
  auto a = CheckpointReplica("a");
  auto stored_position = [&]() -> int64_t {
    std::optional<std::string> v = *store_.Get(SessionKey("", "x"));
    if (!v.has_value()) return -1;
    absl::StatusOr<SessionRecord> r = DecodeSessionRecord(*v);
    return r.ok() ? r->position : -2;
  };
  auto wait_for = [&](int64_t position) {
    for (int i = 0; i < 300 && stored_position() != position; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return stored_position();
  };
  Open(*a, "tok", "x");
  ASSERT_TRUE(Append(*a, "x", RandomInput("tok", 3, 1)).ok());
  ASSERT_EQ(wait_for(3), 3);
  store_.FailCommits(absl::UnavailableError("reply lost"), /*apply=*/true);
  ASSERT_TRUE(Append(*a, "x", RandomInput("tok", 2, 2)).ok());
  ASSERT_EQ(wait_for(5), 5);  // applied, yet reported failed
  store_.FailCommits(absl::UnavailableError("down"), /*apply=*/false);
  absl::StatusOr<AppendResult> last = Append(*a, "x", RandomInput("tok", 1, 3));
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_EQ(last->position, 6);
  store_.FailCommits(absl::OkStatus());
  EXPECT_EQ(wait_for(6), 6);
  EXPECT_EQ(a->GetSession(SessionRef("", "x"))->position, 6);
}

// kAck, a create whose commit applied but reported failure (Redis ran the script, its reply was
// lost): the caller was told UNAVAILABLE, so the session must not exist. The record that did
// land is deleted by this replica (it knows the write was its own), so neither a retried create
// here (it used to be ALREADY_EXISTS) nor another replica finds it.
TEST_F(ReplicasTest, AnAckCreateThatAppliedButFailedLeavesNoSession) {
  auto a = Replica("a");
  auto b = Replica("b");
  auto create = [](Engine& e, const std::string& id) {
    Engine::CreateParams p;
    p.model = "tok";
    p.session_id = id;
    std::promise<absl::StatusOr<SessionInfo>> made;
    e.CreateSession(std::move(p), [&](absl::StatusOr<SessionInfo> r) { made.set_value(r); });
    return made.get_future().get();
  };
  store_.FailCommits(absl::UnavailableError("reply lost"), /*apply=*/true);
  absl::StatusOr<SessionInfo> failed = create(*a, "x");
  ASSERT_EQ(failed.status().code(), absl::StatusCode::kUnavailable) << failed.status();
  ASSERT_TRUE(store_.Get(SessionKey("", "x"))->has_value());  // it landed all the same
  store_.FailCommits(absl::OkStatus());
  EXPECT_TRUE(WaitFor([&] { return !store_.Get(SessionKey("", "x"))->has_value(); },
                      std::chrono::seconds(5)));
  EXPECT_EQ(b->GetSession(SessionRef("", "x")).status().code(), absl::StatusCode::kNotFound);
  absl::StatusOr<SessionInfo> again = create(*a, "x");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->position, 0);
  EXPECT_EQ(b->GetSession(SessionRef("", "x"))->uid, again->uid);
}

// As above, the create retried at once, so that its commit also carries the delete of the
// failed one's record: the delete meets this replica's own write and is filed again, and the
// retried create, behind it, is acknowledged only once its own record has landed (it used to be
// ALREADY_EXISTS; taking the version of the record about to be deleted, it was then dropped as
// deleted elsewhere). By CreateSession (a held reply) and by OpenSession (a waiting caller).
TEST_F(ReplicasTest, AnAckCreateRetriedAfterAnAppliedFailureIsMadeAndDurable) {
  auto a = Replica("a");
  auto b = Replica("b");
  auto stored_uid = [&](const std::string& id) -> uint64_t {
    std::optional<std::string> v = *store_.Get(SessionKey("", id));
    if (!v.has_value()) return 0;
    absl::StatusOr<SessionRecord> r = DecodeSessionRecord(*v);
    return r.ok() ? r->uid : 1;
  };
  for (const bool open : {false, true}) {
    SCOPED_TRACE(open ? "OpenSession" : "CreateSession");
    const std::string id = open ? "y" : "x";
    auto create = [&]() -> absl::StatusOr<SessionInfo> {
      if (open) return a->OpenSession(SessionRef("", id), "tok", /*create_if_missing=*/true, 0);
      Engine::CreateParams p;
      p.model = "tok";
      p.session_id = id;
      std::promise<absl::StatusOr<SessionInfo>> made;
      a->CreateSession(std::move(p), [&](absl::StatusOr<SessionInfo> r) { made.set_value(r); });
      return made.get_future().get();
    };
    store_.FailCommits(absl::UnavailableError("reply lost"), /*apply=*/true);
    absl::StatusOr<SessionInfo> failed = create();
    ASSERT_EQ(failed.status().code(), absl::StatusCode::kUnavailable) << failed.status();
    const uint64_t landed = stored_uid(id);
    ASSERT_GT(landed, 1u);
    store_.FailCommits(absl::OkStatus());
    absl::StatusOr<SessionInfo> again = create();
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(again->position, 0);
    EXPECT_NE(again->uid, landed);
    EXPECT_EQ(stored_uid(id), again->uid);  // durable when acknowledged
    ASSERT_TRUE(Append(*a, id, RandomInput("tok", 2, 5)).ok());
    absl::StatusOr<SessionInfo> seen = b->GetSession(SessionRef("", id));
    ASSERT_TRUE(seen.ok()) << seen.status();
    EXPECT_EQ(seen->uid, again->uid);
    EXPECT_EQ(seen->position, 2);
  }
}

// kCheckpoint, a session deleted and made again under its id, and the commit carrying both
// {delete of the first, put of the second} applies but reports failure: both are filed again,
// both then meet this replica's own write, and the put, behind the delete, must expect
// "absent". It took the version of the record the delete removes, lost its compare-and-set to
// the absent key and was dropped as deleted elsewhere: the live session vanished.
TEST_F(ReplicasTest, ASessionMadeAgainAfterAnAppliedFailedCheckpointSurvives) {
  auto a = CheckpointReplica("a");
  auto stored_uid = [&]() -> uint64_t {
    std::optional<std::string> v = *store_.Get(SessionKey("", "x"));
    if (!v.has_value()) return 0;
    absl::StatusOr<SessionRecord> r = DecodeSessionRecord(*v);
    return r.ok() ? r->uid : 1;
  };
  absl::Cleanup release = [this] {
    store_.HoldNextCommits(0);
    store_.ReleaseHeldCommits();
  };
  auto stored_position = [&]() -> int64_t {
    std::optional<std::string> v = *store_.Get(SessionKey("", "x"));
    if (!v.has_value()) return -1;
    absl::StatusOr<SessionRecord> r = DecodeSessionRecord(*v);
    return r.ok() ? r->position : -2;
  };
  Open(*a, "tok", "x");
  ASSERT_TRUE(Append(*a, "x", RandomInput("tok", 3, 1)).ok());
  ASSERT_TRUE(WaitFor([&] { return stored_position() == 3; }));
  // The delete and the create happen while a commit is in flight, so the next one carries both.
  store_.HoldNextCommits(2);
  ASSERT_TRUE(Append(*a, "x", RandomInput("tok", 1, 4)).ok());
  ASSERT_TRUE(WaitFor([&] { return store_.held_commits() == 1; }));  // carrying x at 4
  ASSERT_TRUE(DeleteAsync(*a, "x").get().ok());
  absl::StatusOr<SessionInfo> made = a->OpenSession(SessionRef("", "x"), "tok", true, 0);
  ASSERT_TRUE(made.ok()) << made.status();
  const uint64_t second = made->uid;
  store_.ReleaseHeldCommits();
  ASSERT_TRUE(WaitFor([&] { return stored_position() == 4 && store_.held_commits() == 1; }));
  store_.FailCommits(absl::UnavailableError("reply lost"), /*apply=*/true);
  store_.ReleaseHeldCommits();  // {delete x at 4, put the second x}
  ASSERT_TRUE(WaitFor([&] { return stored_uid() == second; }));  // applied, yet reported failed
  const int64_t commits = store_.commits();                      // (failed commits are not counted)
  store_.FailCommits(absl::OkStatus());
  ASSERT_TRUE(WaitFor([&] { return store_.commits() >= commits + 2; }));  // both resolved
  absl::StatusOr<SessionInfo> got = a->GetSession(SessionRef("", "x"));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->uid, second);
  EXPECT_EQ(stored_uid(), second);
  ASSERT_TRUE(Append(*a, "x", RandomInput("tok", 1, 2)).ok());
  a.reset();
  absl::StatusOr<SessionRecord> r = DecodeSessionRecord(**store_.Get(SessionKey("", "x")));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->uid, second);
  EXPECT_EQ(r->position, 1);
}

// kAck: an OpenSession retried after its create applied but failed meets that record, its own,
// so the commit after next writes it; when that one fails, the caller hears so and the session
// is not there. The caller used to wait for whichever commit came after it woke (the scheduler
// had taken the carrying one by then) and returned OK for a session that had been removed.
TEST_F(ReplicasTest, AnOpenSessionCarriedToALaterCommitGetsThatCommitsFailure) {
  auto a = Replica("a");
  store_.FailCommits(absl::UnavailableError("reply lost"), /*apply=*/true);
  ASSERT_EQ(a->OpenSession(SessionRef("", "y"), "tok", true, 0).status().code(),
            absl::StatusCode::kUnavailable);
  ASSERT_TRUE(store_.Get(SessionKey("", "y"))->has_value());  // it landed all the same
  // The retry's commit meets the landed record (succeeds); the one carrying it on fails. (The
  // scheduler's own delete of the record waits for its 1 s idle timer: the retry comes first.)
  store_.FailOneCommitAfter(1, absl::UnavailableError("down"));
  store_.FailCommits(absl::OkStatus());
  absl::StatusOr<SessionInfo> retried = a->OpenSession(SessionRef("", "y"), "tok", true, 0);
  EXPECT_EQ(retried.status().code(), absl::StatusCode::kUnavailable) << retried.status();
  EXPECT_TRUE(WaitFor([&] { return !store_.Get(SessionKey("", "y"))->has_value(); }))
      << "the record of a create answered UNAVAILABLE stayed in the store";
  EXPECT_EQ(a->GetSession(SessionRef("", "y")).status().code(), absl::StatusCode::kNotFound);
  absl::StatusOr<SessionInfo> made = a->OpenSession(SessionRef("", "y"), "tok", true, 0);
  ASSERT_TRUE(made.ok()) << made.status();
  EXPECT_EQ(made->position, 0);
}

// kAck, shared store: a session half-way through a chunked append is written when the append
// ends, so a create whose session began one before its commit (here, a 64-token append behind
// it, in chunks of 16) is acknowledged only once that write lands. It was acknowledged by the
// commit that skipped the session, with nothing of it in the store.
TEST_F(ReplicasTest, AnAckCreateFollowedAtOnceByAChunkedAppendIsAcknowledgedOnceStored) {
  EngineOptions o = MaxBatchTokens(16);
  o.state_store = &store_;
  o.durability = Durability::kAck;
  o.replica_id = "a";
  auto a = MakeEngine(o);
  std::promise<bool> stored_when_acknowledged;
  std::future<absl::StatusOr<AppendResult>> appended;
  {
    auto held = HoldScheduler(*a);  // the create and the append wait for the same tick
    Engine::CreateParams p;
    p.model = "tok";
    p.session_id = "x";
    a->CreateSession(std::move(p), [&](absl::StatusOr<SessionInfo> r) {
      stored_when_acknowledged.set_value(r.ok() && store_.Get(SessionKey("", "x"))->has_value());
    });
    appended = AppendAsync(*a, "x", RandomInput("tok", 64, 1));
    held->Release();
  }
  EXPECT_TRUE(stored_when_acknowledged.get_future().get());
  absl::StatusOr<AppendResult> r = Await(appended);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->position, 64);
}

// kAck, an append whose commit applied but reported failure: the caller was told UNAVAILABLE,
// "may not have been made" (this replica's copy is put back; the store's record may be the
// applied change, which another replica may have served since, so compare-and-set settles it).
// The retry the message asks for, with expected_position, applies the tokens exactly once (here
// by replaying: they had landed).
TEST_F(ReplicasTest, AnAckAppendThatAppliedButFailedIsAppliedOnceByItsRetry) {
  auto a = Replica("a");
  Open(*a, "tok", "x");
  ASSERT_TRUE(Append(*a, "x", RandomInput("tok", 3, 1)).ok());
  store_.FailCommits(absl::UnavailableError("reply lost"), /*apply=*/true);
  const SequenceInput tokens = RandomInput("tok", 2, 2);
  absl::StatusOr<AppendResult> failed = Append(*a, "x", tokens, /*expected_position=*/3);
  ASSERT_EQ(failed.status().code(), absl::StatusCode::kUnavailable) << failed.status();
  EXPECT_THAT(failed.status().message(), HasSubstr("retry with expected_position"));
  store_.FailCommits(absl::OkStatus());
  // The record is read before the retry runs: it finds the append there, and replays it.
  absl::StatusOr<AppendResult> retried = Append(*a, "x", tokens, /*expected_position=*/3);
  ASSERT_TRUE(retried.ok()) << retried.status();
  EXPECT_EQ(retried->position, 5);
  EXPECT_TRUE(retried->replayed);
  auto b = Replica("b");
  EXPECT_EQ(b->GetSession(SessionRef("", "x"))->position, 5);
  ASSERT_TRUE(Append(*a, "x", RandomInput("tok", 1, 3)).ok());
  EXPECT_EQ(b->GetSession(SessionRef("", "x"))->position, 6);
}

// Without kAck a commit to a shared store is capped (Redis runs each one as a script that every
// replica waits behind; 150k records in one passed the command timeout, so that checkpoint
// failed every time): a drain goes in commits of at most kMaxCheckpointWrites, one right after
// the other, deletes first and no record ahead of a delete left behind, and all of it lands.
TEST_F(ReplicasTest, CheckpointCommitsAreCappedAndTheRestFollowsAtOnce) {
  constexpr size_t kCap = Engine::kMaxCheckpointWrites;
  const size_t n = 2 * kCap + 300;  // sessions kept
  const size_t d = kCap + 100;      // sessions deleted later
  auto records = [&](absl::string_view prefix, int64_t position) {
    size_t count = 0;
    EXPECT_TRUE(store_
                    .Scan(SessionKey("", prefix),
                          [&](absl::string_view, absl::string_view v) {
                            absl::StatusOr<SessionRecord> r = DecodeSessionRecord(v);
                            if (r.ok() && (position < 0 || r->position == position)) ++count;
                            return absl::OkStatus();
                          })
                    .ok());
    return count;
  };
  auto batches_since = [&](size_t first) {
    std::vector<size_t> all = store_.batch_sizes();
    return std::vector<size_t>(all.begin() + static_cast<std::ptrdiff_t>(first), all.end());
  };
  EngineOptions o;
  o.state_store = &store_;
  o.durability = Durability::kCheckpoint;
  o.checkpoint_interval_ms = 3'600'000;  // only the drains at shutdown write
  o.replica_id = "a";
  auto a = MakeEngine(o);
  for (size_t i = 0; i < n; ++i) Open(*a, "tok", absl::StrCat("s", i));
  for (size_t i = 0; i < d; ++i) Open(*a, "tok", absl::StrCat("d", i));
  EXPECT_EQ(records("", -1), 0u);
  size_t first = store_.batch_sizes().size();
  a.reset();  // the drain: 3,472 records
  EXPECT_EQ(records("s", 0), n);
  EXPECT_EQ(records("d", 0), d);
  EXPECT_EQ(batches_since(first), (std::vector<size_t>{kCap, kCap, kCap, n + d - 3 * kCap}));

  // Another replica appends to every s (loading each) and deletes every d: 1,124 deletes and
  // 2,348 records. First a commit of deletes only, then the other 100 beside 924 records.
  o.replica_id = "b";
  auto b = MakeEngine(o);
  for (size_t i = 0; i < n; ++i) {
    ASSERT_TRUE(Append(*b, absl::StrCat("s", i), RandomInput("tok", 1, i)).ok()) << i;
  }
  for (size_t i = 0; i < d; ++i) {
    ASSERT_TRUE(DeleteAsync(*b, absl::StrCat("d", i)).get().ok()) << i;
  }
  first = store_.batch_sizes().size();
  b.reset();
  EXPECT_EQ(records("s", 1), n);
  EXPECT_EQ(records("d", -1), 0u);
  EXPECT_EQ(batches_since(first), (std::vector<size_t>{kCap, kCap, kCap, n + d - 3 * kCap}));
}

// kCheckpoint on a shared store: a session deleted here whose delete is not written yet is gone
// for this replica's calls (it used to load the stale record back from the store: GetSession
// found it, and a create of the id was ALREADY_EXISTS).
TEST_F(ReplicasTest, ASessionDeletedHereIsNotLoadedBackBeforeItsDeleteIsWritten) {
  auto b = Replica("b");  // kAck: its create is in the store at once
  Open(*b, "tok", "x");
  ASSERT_TRUE(Append(*b, "x", RandomInput("tok", 3, 1)).ok());
  EngineOptions o;
  o.state_store = &store_;
  o.durability = Durability::kCheckpoint;
  o.checkpoint_interval_ms = 3'600'000;
  o.replica_id = "a";
  auto a = MakeEngine(o);
  absl::StatusOr<SessionInfo> loaded = a->GetSession(SessionRef("", "x"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->position, 3);
  ASSERT_TRUE(DeleteAsync(*a, "x").get().ok());
  EXPECT_TRUE(store_.Get(SessionKey("", "x"))->has_value());  // the delete waits for a commit
  absl::StatusOr<SessionInfo> got = a->GetSession(SessionRef("", "x"));
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound) << got.status();
  absl::StatusOr<SessionInfo> made = a->OpenSession(SessionRef("", "x"), "tok", true, 0);
  ASSERT_TRUE(made.ok()) << made.status();
  EXPECT_EQ(made->position, 0);
  a.reset();  // the drain: the delete, then the new session
  absl::StatusOr<SessionRecord> r = DecodeSessionRecord(**store_.Get(SessionKey("", "x")));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->position, 0);
  EXPECT_EQ(r->writer, "a");
}

// kCheckpoint's commit runs beside the ticks (engine.h), so a delete can run while the record it
// removes is in the commit in flight. The delete is filed expecting the version before that
// write and must expect the one it made: it used to lose its compare-and-set as if another
// replica had changed the session, and the record stayed in the store for any replica to load.
TEST_F(ReplicasTest, ASessionDeletedWhileItsCheckpointIsInFlightIsDeletedFromTheStore) {
  auto a = CheckpointReplica("a");
  absl::Cleanup release = [this] {
    store_.HoldNextCommits(0);
    store_.ReleaseHeldCommits();
  };  // (before a shuts down)
  Open(*a, "tok", "x");
  ASSERT_TRUE(WaitFor([&] { return store_.Get(SessionKey("", "x"))->has_value(); }));
  store_.HoldNextCommits(1);
  ASSERT_TRUE(Append(*a, "x", RandomInput("tok", 3, 1)).ok());
  ASSERT_TRUE(WaitFor([&] { return store_.held_commits() == 1; }));  // carrying x at 3
  std::future<absl::Status> deleted = DeleteAsync(*a, "x");
  ASSERT_EQ(deleted.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  ASSERT_TRUE(deleted.get().ok());
  store_.ReleaseHeldCommits();
  EXPECT_TRUE(WaitFor([&] { return !store_.Get(SessionKey("", "x"))->has_value(); }))
      << "the deleted session's record is still in the store";
  a.reset();  // (the drain writes nothing more for x)
  EXPECT_FALSE(store_.Get(SessionKey("", "x"))->has_value());
}

// A session deleted, made again under its id and deleted again while the commit carrying
// {delete of the first, put of the second} is in flight, and that commit fails: the delete
// written next must expect the first's record (the second never landed). It kept the second's
// expectation ("absent"), lost its compare-and-set to the first's record, and left that record
// in the store, so the twice-deleted session came back.
TEST_F(ReplicasTest, ADeleteFiledWhileAFailedCheckpointWasInFlightDeletesWhatIsStored) {
  auto a = CheckpointReplica("a");
  absl::Cleanup release = [this] {
    store_.HoldNextCommits(0);
    store_.ReleaseHeldCommits();
  };
  const std::string key = SessionKey("", "x");
  Open(*a, "tok", "x");
  ASSERT_TRUE(Append(*a, "x", RandomInput("tok", 3, 1)).ok());
  ASSERT_TRUE(WaitFor([&] {
    std::optional<std::string> v = *store_.Get(key);
    return v.has_value() && DecodeSessionRecord(*v)->position == 3;
  }));
  store_.FailCommits(absl::UnavailableError("state store memory: injected failure"));
  store_.HoldNextCommits(2);
  Open(*a, "tok", "y");  // the next checkpoint carries y, and waits
  ASSERT_TRUE(WaitFor([&] { return store_.held_commits() == 1; }));
  ASSERT_TRUE(DeleteAsync(*a, "x").get().ok());
  Open(*a, "tok", "x");  // made again: the checkpoint after carries both
  size_t tried = store_.batch_sizes().size();
  store_.ReleaseHeldCommits();  // the first fails; the second takes its batch and waits
  ASSERT_TRUE(WaitFor(
      [&] { return store_.batch_sizes().size() == tried + 1 && store_.held_commits() == 1; }));
  ASSERT_TRUE(DeleteAsync(*a, "x").get().ok());  // while it is in flight
  tried = store_.batch_sizes().size();
  store_.ReleaseHeldCommits();  // it fails too
  ASSERT_TRUE(WaitFor([&] { return store_.batch_sizes().size() > tried; }));
  store_.FailCommits(absl::OkStatus());
  EXPECT_TRUE(WaitFor([&] { return !store_.Get(key)->has_value(); }))
      << "the first session's record is still in the store";
  absl::StatusOr<SessionInfo> got = a->GetSession(SessionRef("", "x"));
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound)
      << (got.ok() ? absl::StrCat("loaded back at position ", got->position)
                   : got.status().ToString());
}

// An id opened again while the commit carrying its delete is in flight is a new session: the
// record still in the store is the deleted one's, not one to load back (it was loaded: the open
// found the deleted session at position 3, and once the delete landed the id was gone).
TEST_F(ReplicasTest, AnIdOpenedWhileItsDeleteIsInFlightIsANewSession) {
  auto a = CheckpointReplica("a");
  absl::Cleanup release = [this] {
    store_.HoldNextCommits(0);
    store_.ReleaseHeldCommits();
  };
  const std::string key = SessionKey("", "x");
  Open(*a, "tok", "x");
  ASSERT_TRUE(Append(*a, "x", RandomInput("tok", 3, 1)).ok());
  ASSERT_TRUE(WaitFor([&] {
    std::optional<std::string> v = *store_.Get(key);
    return v.has_value() && DecodeSessionRecord(*v)->position == 3;
  }));
  store_.HoldNextCommits(1);
  ASSERT_TRUE(DeleteAsync(*a, "x").get().ok());
  ASSERT_TRUE(WaitFor([&] { return store_.held_commits() == 1; }));  // the delete in flight
  absl::StatusOr<SessionInfo> made = a->OpenSession("x", "tok", /*create_if_missing=*/true, 0);
  ASSERT_TRUE(made.ok()) << made.status();
  EXPECT_EQ(made->position, 0) << "opened the deleted session";
  store_.ReleaseHeldCommits();
  ASSERT_TRUE(WaitFor([&] {
    std::optional<std::string> v = *store_.Get(key);
    return v.has_value() && DecodeSessionRecord(*v)->position == 0;
  })) << "the new session was not written";
  absl::StatusOr<SessionInfo> later = a->GetSession(SessionRef("", "x"));
  ASSERT_TRUE(later.ok()) << later.status();
  EXPECT_EQ(later->position, 0);
}

// A checkpoint that loses its compare-and-set for a session whose chunked append began after
// the checkpoint took its record: the store's copy is not put in under the running append
// (which would run its remaining chunks on another state). The append finishes on this copy,
// its outputs exact, and the session's next write loses too and takes the store's copy then.
TEST_F(ReplicasTest, ALostCheckpointLetsAChunkedAppendThatBeganMeanwhileFinishOnItsOwnState) {
  auto a = CheckpointReplica("a", MaxBatchTokens(16));
  auto b = Replica("b");
  absl::Cleanup release = [this] {
    store_.HoldNextCommits(0);
    store_.ReleaseHeldCommits();
  };
  const SequenceInput history = RandomInput("tok", 2010, 21);
  const int64_t od = tok_config_.output_dim;
  Open(*a, "tok", "x");
  ASSERT_TRUE(Append(*a, "x", Slice(history, 0, 5, 0)).ok());
  ASSERT_TRUE(WaitFor([&] {
    std::optional<std::string> v = *store_.Get(SessionKey("", "x"));
    return v.has_value() && DecodeSessionRecord(*v)->position == 5;
  }));
  store_.HoldNextCommits(1);
  ASSERT_TRUE(Append(*a, "x", Slice(history, 5, 10, 0)).ok());
  ASSERT_TRUE(WaitFor([&] { return store_.held_commits() == 1; }));  // x at 10, expecting 5's
  // B changes x meanwhile (its kAck commit is not held), so A's held write will lose.
  absl::StatusOr<AppendResult> other = Append(*b, "x", RandomInput("tok", 3, 99));
  ASSERT_TRUE(other.ok()) << other.status();
  ASSERT_EQ(other->position, 8);
  // A chunked append on A's copy (2,000 tokens in chunks of at most 16), held half-way by the
  // gate's tick while the lost write returns.
  std::future<absl::StatusOr<AppendResult>> running =
      AppendAsync(*a, "x", Slice(history, 10, 2010, 0));
  {
    auto held = HoldScheduler(*a);
    const int64_t commits = store_.commits();
    store_.ReleaseHeldCommits();
    ASSERT_TRUE(WaitFor([&] { return store_.commits() > commits; }));
    std::this_thread::sleep_for(
        std::chrono::milliseconds(100));  // (the commit thread hands it back)
    held->Release();
  }
  absl::StatusOr<AppendResult> r = Await(running);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->position, 2010);
  ExpectNear(r->outputs, Rows(Reference("tok", history), 10, 2010, od));
  EXPECT_TRUE(WaitFor([&] {
    absl::StatusOr<SessionInfo> info = a->GetSession(SessionRef("", "x"));
    return info.ok() && info->position == 8;
  })) << "A kept its copy over B's";
}

// Calls that a draining engine refuses, or that the memory budget cannot hold, are refused
// before they read the shared store (a round trip, up to the store's timeout while it stalls),
// not after it.
TEST_F(ReplicasTest, CallsRefusedAnywayDoNotReadTheStoreFirst) {
  {
    EngineOptions o;
    o.state_store = &store_;
    o.durability = Durability::kAck;
    o.replica_id = "a";
    o.memory_budget_bytes = 1;  // no session fits
    auto a = MakeEngine(o);
    const int64_t reads = store_.reads();
    Engine::CreateParams p;
    p.model = "tok";
    p.session_id = "x";
    std::promise<absl::StatusOr<SessionInfo>> made;
    a->CreateSession(std::move(p), [&](absl::StatusOr<SessionInfo> r) { made.set_value(r); });
    absl::StatusOr<SessionInfo> r = made.get_future().get();
    EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
    EXPECT_EQ(store_.reads(), reads);
  }
  auto a = Replica("a");
  Open(*a, "tok", "held");
  a->Shutdown();
  const int64_t reads = store_.reads();
  auto refused = [&](const absl::Status& st, const char* what) {
    EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << what << ": " << st;
    EXPECT_THAT(st.message(), HasSubstr("shutting down")) << what;
    EXPECT_EQ(store_.reads(), reads) << what << " read the store";
  };
  Engine::CreateParams p;
  p.model = "tok";
  p.session_id = "x";
  std::promise<absl::StatusOr<SessionInfo>> made;
  a->CreateSession(std::move(p), [&](absl::StatusOr<SessionInfo> r) { made.set_value(r); });
  refused(made.get_future().get().status(), "CreateSession");
  refused(a->OpenSession(SessionRef("", "x"), "tok", true, 0).status(), "OpenSession");
  refused(Append(*a, "x", RandomInput("tok", 1, 1)).status(), "Append");
  refused(DeleteAsync(*a, "x").get(), "DeleteSession");
  std::promise<absl::StatusOr<SessionInfo>> forked;
  a->ForkSession(
      SessionRef("", "held"), "copy", 0,
      [&](absl::StatusOr<SessionInfo> r) { forked.set_value(r); }, nullptr);
  refused(forked.get_future().get().status(), "ForkSession");
}

// RunOffScheduler: from a completion (the scheduler thread) with a shared store, the call runs on
// another thread, so an engine call in it that reads the store holds no tick back; anywhere
// else, and after Shutdown, it runs at once on the caller's thread.
TEST_F(ReplicasTest, RunOffSchedulerLeavesTheSchedulerThreadOnlyWhereItIsOn) {
  auto a = Replica("a");
  Open(*a, "tok", "x");
  const std::thread::id caller = std::this_thread::get_id();
  std::thread::id ran_on;
  a->RunOffScheduler([&] { ran_on = std::this_thread::get_id(); });
  EXPECT_EQ(ran_on, caller);

  std::promise<std::pair<std::thread::id, std::thread::id>> where;  // (completion, handed-off call)
  Engine::AppendParams p;
  p.session_id = "x";
  p.input = RandomInput("tok", 2, 3);
  Engine* engine = a.get();
  a->Append(std::move(p), [&, engine](absl::StatusOr<AppendResult> r) {
    EXPECT_TRUE(r.ok()) << r.status();
    const std::thread::id completion = std::this_thread::get_id();
    engine->RunOffScheduler([&, engine, completion] {
      // An engine call that reads the shared store, as a chained request's would.
      EXPECT_TRUE(engine->GetSession(SessionRef("", "x")).ok());
      where.set_value({completion, std::this_thread::get_id()});
    });
  });
  const auto [completion, handed_off] = where.get_future().get();
  EXPECT_NE(completion, caller);
  EXPECT_NE(handed_off, completion);
  EXPECT_NE(handed_off, caller);

  // Without a shared store there is no read to avoid: at once, on the completion's thread.
  MemoryStore local;
  EngineOptions o;
  o.state_store = &local;
  o.durability = Durability::kAck;
  auto b = MakeEngine(o);
  Open(*b, "tok", "y");
  std::promise<bool> same;
  Engine::AppendParams q;
  q.session_id = "y";
  q.input = RandomInput("tok", 2, 4);
  Engine* local_engine = b.get();
  b->Append(std::move(q), [&, local_engine](absl::StatusOr<AppendResult>) {
    const std::thread::id completion = std::this_thread::get_id();
    local_engine->RunOffScheduler(
        [&, completion] { same.set_value(completion == std::this_thread::get_id()); });
  });
  EXPECT_TRUE(same.get_future().get());

  a->Shutdown();
  ran_on = std::thread::id();
  a->RunOffScheduler([&] { ran_on = std::this_thread::get_id(); });
  EXPECT_EQ(ran_on, caller);
}

}  // namespace
}  // namespace aaren::testing
