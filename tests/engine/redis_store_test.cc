// SPDX-License-Identifier: Apache-2.0
// Shared stores: compare-and-set versions (MemoryStore(shared) and RedisStore against a real
// redis-server), and the Redis store's own behaviour: Redis going away and coming back, a
// flushed script cache, AUTH, record TTLs, URL errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/store/memory_store.h"
#include "engine/store/redis_store.h"
#include "engine/store/state_store.h"
#include "tests/support/redis_server.h"

namespace aaren {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class TempDir {
 public:
  TempDir() {
    std::string t = (std::filesystem::temp_directory_path() / "aaren-redis-XXXXXX").string();
    path_ = mkdtemp(t.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

StoreWrite PutIf(std::string key, std::string value, uint64_t expect, int64_t ttl_ms = 0) {
  StoreWrite w{std::move(key), std::move(value), expect};
  w.ttl_ms = ttl_ms;
  return w;
}
StoreWrite DelIf(std::string key, uint64_t expect) {
  return StoreWrite{std::move(key), std::nullopt, expect};
}

std::vector<WriteOutcome> MustCommit(StateStore& store, const std::vector<StoreWrite>& batch) {
  std::vector<WriteOutcome> out;
  absl::Status st = store.CommitVersioned(batch, out);
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(out.size(), batch.size());
  return out;
}

// ---- compare-and-set, for both shared stores ----

struct SharedMemoryMaker {
  std::unique_ptr<StateStore> Make() { return std::make_unique<MemoryStore>(/*shared=*/true); }
};

struct RedisMaker {
  TempDir dir;
  std::unique_ptr<testing::RedisServer> redis;
  std::unique_ptr<StateStore> Make() {
    absl::StatusOr<std::unique_ptr<testing::RedisServer>> r =
        testing::RedisServer::Start(testing::RedisIn(dir.path()));
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return nullptr;
    redis = *std::move(r);
    absl::StatusOr<std::unique_ptr<RedisStore>> s = RedisStore::Open(redis->spec(), {});
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::unique_ptr<StateStore>(std::move(*s)) : nullptr;
  }
};

template <typename Maker>
class SharedStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = maker_.Make();
    ASSERT_NE(store_, nullptr);
    ASSERT_TRUE(store_->Shared());
  }
  Maker maker_;
  std::unique_ptr<StateStore> store_;
};

class SharedNames {
 public:
  template <typename T>
  static std::string GetName(int) {
    return std::is_same_v<T, RedisMaker> ? "Redis" : "SharedMemory";
  }
};
using SharedMakers = ::testing::Types<SharedMemoryMaker, RedisMaker>;
TYPED_TEST_SUITE(SharedStoreTest, SharedMakers, SharedNames);

TYPED_TEST(SharedStoreTest, CreateOnlyWhenAbsent) {
  StateStore& s = *this->store_;
  std::vector<WriteOutcome> o = MustCommit(s, {PutIf("s//a", "one", kAbsentVersion)});
  ASSERT_FALSE(o[0].conflict);
  const uint64_t v1 = o[0].version;
  EXPECT_GT(v1, 0u);
  // A second create of the key loses and sees the first one's value and version.
  o = MustCommit(s, {PutIf("s//a", "two", kAbsentVersion)});
  EXPECT_TRUE(o[0].conflict);
  EXPECT_EQ(o[0].version, v1);
  EXPECT_EQ(o[0].current, "one");
  absl::StatusOr<std::optional<VersionedValue>> got = s.GetVersioned("s//a");
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->value, "one");
  EXPECT_EQ((*got)->version, v1);
}

TYPED_TEST(SharedStoreTest, StaleVersionLosesAndNothingOfItIsApplied) {
  StateStore& s = *this->store_;
  const uint64_t v1 = MustCommit(s, {PutIf("s//k", "p10", kAbsentVersion)})[0].version;
  // Two writers both hold v1; the first advances it, the second loses.
  std::vector<WriteOutcome> a = MustCommit(s, {PutIf("s//k", "p15 by A", v1)});
  ASSERT_FALSE(a[0].conflict);
  std::vector<WriteOutcome> b = MustCommit(s, {PutIf("s//k", "p15 by B", v1)});
  ASSERT_TRUE(b[0].conflict);
  EXPECT_EQ(b[0].version, a[0].version);
  EXPECT_EQ(b[0].current, "p15 by A");
  EXPECT_EQ(*s.Get("s//k"), "p15 by A");
  // A stale delete loses too; the current version's delete applies.
  EXPECT_TRUE(MustCommit(s, {DelIf("s//k", v1)})[0].conflict);
  EXPECT_EQ(*s.Get("s//k"), "p15 by A");
  std::vector<WriteOutcome> d = MustCommit(s, {DelIf("s//k", a[0].version)});
  EXPECT_FALSE(d[0].conflict);
  EXPECT_EQ(d[0].version, 0u);
  EXPECT_EQ(*s.Get("s//k"), std::nullopt);
  // Expecting a version of a key that is gone: conflict, nothing there.
  b = MustCommit(s, {PutIf("s//k", "zombie", a[0].version)});
  EXPECT_TRUE(b[0].conflict);
  EXPECT_EQ(b[0].version, 0u);
  EXPECT_EQ(b[0].current, std::nullopt);
  EXPECT_EQ(*s.Get("s//k"), std::nullopt);
}

TYPED_TEST(SharedStoreTest, VersionsNeverRepeatAcrossDeleteAndRecreate) {
  // A replica holding a copy of a session that was deleted and made again under the same id
  // must not pass the new session's compare-and-set (no ABA).
  StateStore& s = *this->store_;
  std::set<uint64_t> seen;
  uint64_t v = kAbsentVersion;
  for (int i = 0; i < 20; ++i) {
    v = MustCommit(s, {PutIf("s//x", absl::StrCat(i), kAbsentVersion)})[0].version;
    EXPECT_TRUE(seen.insert(v).second) << "version " << v << " handed out twice";
    const uint64_t v2 = MustCommit(s, {PutIf("s//x", "b", v)})[0].version;
    EXPECT_TRUE(seen.insert(v2).second);
    EXPECT_GT(v2, v);
    ASSERT_FALSE(MustCommit(s, {DelIf("s//x", v2)})[0].conflict);
  }
}

TYPED_TEST(SharedStoreTest, EachWriteOfABatchIsCheckedOnItsOwn) {
  StateStore& s = *this->store_;
  std::vector<WriteOutcome> o =
      MustCommit(s, {PutIf("s//a", "a1", kAbsentVersion), PutIf("s//b", "b1", kAbsentVersion)});
  std::vector<WriteOutcome> o2 =
      MustCommit(s, {PutIf("s//a", "a2", o[0].version), PutIf("s//b", "b2", o[1].version + 12345),
                     PutIf("s//c", "c1", kAbsentVersion), StoreWrite{"s//d", "d1"}});
  EXPECT_FALSE(o2[0].conflict);
  EXPECT_TRUE(o2[1].conflict);
  EXPECT_FALSE(o2[2].conflict);
  EXPECT_FALSE(o2[3].conflict);  // kAnyVersion
  EXPECT_EQ(*s.Get("s//a"), "a2");
  EXPECT_EQ(*s.Get("s//b"), "b1");
  EXPECT_EQ(*s.Get("s//c"), "c1");
  EXPECT_EQ(*s.Get("s//d"), "d1");
}

TYPED_TEST(SharedStoreTest, ConcurrentWritersNeverBothWin) {
  // 4 threads race to advance one key from the version each read; every version has exactly one
  // winner and the final value is the last winner's.
  StateStore& s = *this->store_;
  ASSERT_FALSE(MustCommit(s, {PutIf("s//r", "0", kAbsentVersion)})[0].conflict);
  std::atomic<int> wins{0}, errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 100; ++i) {
        absl::StatusOr<std::optional<VersionedValue>> cur = s.GetVersioned("s//r");
        if (!cur.ok() || !cur->has_value()) {
          ++errors;
          continue;
        }
        int n = 0;
        if (!absl::SimpleAtoi((*cur)->value, &n)) ++errors;
        std::vector<WriteOutcome> o;
        if (!s.CommitVersioned({PutIf("s//r", absl::StrCat(n + 1), (*cur)->version)}, o).ok()) {
          ++errors;
        } else if (!o[0].conflict) {
          ++wins;
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
  // Each win added exactly one to the value it read.
  EXPECT_EQ(*s.Get("s//r"), absl::StrCat(wins.load()));
}

// ---- Redis only ----

class RedisStoreTest : public ::testing::Test {
 protected:
  void StartRedis(testing::RedisOptions options = testing::RedisIn("")) {
    options.dir = dir_.path();
    absl::StatusOr<std::unique_ptr<testing::RedisServer>> r = testing::RedisServer::Start(options);
    ASSERT_TRUE(r.ok()) << r.status();
    redis_ = *std::move(r);
  }
  TempDir dir_;
  std::unique_ptr<testing::RedisServer> redis_;
};

TEST_F(RedisStoreTest, SpecErrorsNameTheFlag) {
  for (const char* spec : {"redis://", "redis://host", "redis://:6379", "redis://h:99999",
                           "redis://h:6379/x", "redis://h:6379/-1"}) {
    absl::StatusOr<std::unique_ptr<StateStore>> s = OpenStateStore(spec);
    ASSERT_FALSE(s.ok()) << spec;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << spec;
    EXPECT_THAT(s.status().message(), HasSubstr("--state_store")) << spec;
  }
  absl::StatusOr<std::unique_ptr<StateStore>> s = OpenStateStore("redis://:secret@h:6379");
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), HasSubstr("--state_store_password_file"));
  s = OpenStateStore("rediss://h:6379");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("hiredis"));
}

TEST_F(RedisStoreTest, UnreachableRedisIsAClearStartUpError) {
  StartRedis();
  const std::string spec = redis_->spec();
  redis_->Kill(SIGKILL);
  absl::StatusOr<std::unique_ptr<StateStore>> s = OpenStateStore(spec);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.status().message(), HasSubstr("--state_store"));
  EXPECT_THAT(s.status().message(), HasSubstr(spec));
}

TEST_F(RedisStoreTest, AuthAndDatabase) {
  StartRedis(testing::RedisIn("").WithPassword("s3cret pass"));
  absl::StatusOr<std::unique_ptr<StateStore>> s = OpenStateStore(redis_->spec());
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), HasSubstr("NOAUTH"));
  StateStoreOptions wrong;
  wrong.password = "wrong";
  s = OpenStateStore(redis_->spec(), wrong);
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.status().message(), HasSubstr("AUTH"));
  // "USER PASSWORD": the default user with its password.
  const std::string db3 = absl::StrCat("redis://127.0.0.1:", redis_->port(), "/3");
  s = OpenStateStore(db3, {.password = "default s3cret pass", .client_name = "replica a"});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ((*s)->Describe(), db3);
  ASSERT_TRUE((*s)->Commit({StoreWrite{"s//in3", "v"}}).ok());
  EXPECT_EQ(*redis_->Command({"SELECT", "3"}), "OK");
  absl::StatusOr<std::string> clients = redis_->Command({"CLIENT", "LIST"});
  ASSERT_TRUE(clients.ok());
  EXPECT_THAT(*clients, HasSubstr("name=replica_a"));
  // Database 0 has nothing.
  EXPECT_EQ(*redis_->Command({"EXISTS", "s//in3"}), "0");
}

TEST_F(RedisStoreTest, PutsCarryTheirTtl) {
  StartRedis();
  absl::StatusOr<std::unique_ptr<StateStore>> s = OpenStateStore(redis_->spec());
  ASSERT_TRUE(s.ok()) << s.status();
  std::vector<WriteOutcome> o;
  ASSERT_TRUE((*s)->CommitVersioned({PutIf("s//t", "v", kAnyVersion, 120'000),
                                     PutIf("s//forever", "v", kAnyVersion, 0)},
                                    o)
                  .ok());
  int64_t pttl = 0;
  ASSERT_TRUE(absl::SimpleAtoi(*redis_->Command({"PTTL", "s//t"}), &pttl));
  EXPECT_GT(pttl, 100'000);
  EXPECT_LE(pttl, 120'000);
  EXPECT_EQ(*redis_->Command({"PTTL", "s//forever"}), "-1");
  // A put without a TTL clears the old one.
  ASSERT_TRUE((*s)->CommitVersioned({PutIf("s//t", "v2", kAnyVersion, 0)}, o).ok());
  EXPECT_EQ(*redis_->Command({"PTTL", "s//t"}), "-1");
}

TEST_F(RedisStoreTest, RedisDownIsUnavailableNamingTheStoreAndComesBack) {
  StartRedis(testing::RedisIn("").WithAppendOnly());
  absl::StatusOr<std::unique_ptr<StateStore>> s = OpenStateStore(redis_->spec());
  ASSERT_TRUE(s.ok()) << s.status();
  StateStore& store = **s;
  ASSERT_TRUE(store.Commit({StoreWrite{"s//a", "before"}}).ok());
  redis_->Kill(SIGKILL);
  absl::Status st = store.Commit({StoreWrite{"s//a", "during"}});
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
  EXPECT_THAT(st.message(), HasSubstr(store.Describe()));
  absl::StatusOr<std::optional<std::string>> g = store.Get("s//a");
  EXPECT_EQ(g.status().code(), absl::StatusCode::kUnavailable);
  // The AOF (appendfsync always) kept the acknowledged write; the store reconnects by itself.
  ASSERT_TRUE(redis_->Restart().ok());
  g = store.Get("s//a");
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(*g, "before");
  ASSERT_TRUE(store.Commit({StoreWrite{"s//a", "after"}}).ok());
  EXPECT_EQ(*store.Get("s//a"), "after");
}

TEST_F(RedisStoreTest, FlushedScriptCacheIsReloaded) {
  StartRedis();
  absl::StatusOr<std::unique_ptr<StateStore>> s = OpenStateStore(redis_->spec());
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE((*s)->Commit({StoreWrite{"s//a", "1"}}).ok());
  ASSERT_EQ(*redis_->Command({"SCRIPT", "FLUSH"}), "OK");
  ASSERT_TRUE((*s)->Commit({StoreWrite{"s//a", "2"}}).ok());
  EXPECT_EQ(*(*s)->Get("s//a"), "2");
}

TEST_F(RedisStoreTest, VersionCounterStartsAtTheClockWhenRedisLostIt) {
  // A Redis without persistence restarts empty: versions must not start again from 1, or a
  // replica's stale copy could match a new record's version.
  StartRedis();
  absl::StatusOr<std::unique_ptr<StateStore>> s = OpenStateStore(redis_->spec());
  ASSERT_TRUE(s.ok()) << s.status();
  std::vector<WriteOutcome> o;
  ASSERT_TRUE((*s)->CommitVersioned({PutIf("s//a", "1", kAbsentVersion)}, o).ok());
  const uint64_t before = o[0].version;
  EXPECT_GT(before, uint64_t{1'600'000'000'000'000});  // microseconds since 1970, 2020 on
  redis_->Kill(SIGKILL);
  ASSERT_TRUE(redis_->Restart().ok());
  ASSERT_TRUE((*s)->CommitVersioned({PutIf("s//a", "1", kAbsentVersion)}, o).ok());
  EXPECT_FALSE(o[0].conflict);
  EXPECT_GT(o[0].version, before);
  // A counter that went back (an AOF that lost its last second) does not hand out old numbers.
  const uint64_t latest = o[0].version;
  ASSERT_EQ(*redis_->Command({"SET", "aaren/version", "5"}), "OK");
  ASSERT_TRUE((*s)->CommitVersioned({PutIf("s//b", "1", kAbsentVersion)}, o).ok());
  EXPECT_GT(o[0].version, latest);
}

TEST_F(RedisStoreTest, ATimeoutSaysHowLongItWaitedAndTheStoreRecovers) {
  StartRedis();
  absl::StatusOr<std::unique_ptr<StateStore>> s = OpenStateStore(redis_->spec());
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE((*s)->Commit({StoreWrite{"s//a", "1"}}).ok());
  // Redis stops answering (CLIENT PAUSE: it holds every command, the pooled connection's too).
  const auto paused_until = std::chrono::steady_clock::now() + std::chrono::milliseconds(3500);
  ASSERT_EQ(*redis_->Command({"CLIENT", "PAUSE", "3500", "ALL"}), "OK");
  absl::StatusOr<std::optional<std::string>> g = (*s)->Get("s//a");
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(
      g.status().message(),
      HasSubstr(absl::StrCat("no reply within ", RedisStore::kCommandTimeout.count(), " ms")));
  EXPECT_THAT(g.status().message(), HasSubstr((*s)->Describe()));
  std::this_thread::sleep_until(paused_until + std::chrono::milliseconds(200));
  g = (*s)->Get("s//a");
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(*g, "1");
}

TEST_F(RedisStoreTest, OpenConnectionsAreBoundedAndAWaitForOneIsBounded) {
  StartRedis();
  absl::StatusOr<std::unique_ptr<StateStore>> s = OpenStateStore(redis_->spec());
  ASSERT_TRUE(s.ok()) << s.status();
  // Redis itself refuses connections past twice the bound (the harness's own commands take one
  // more): a store that opened one per caller (3x) would see "max number of clients reached".
  // Twice, because connections the store closed after their timeout still count in a paused
  // Redis until it reaps them, while their callers' successors connect (CI saw that at 1x).
  const std::string bound =
      absl::StrCat(2 * (RedisStore::kMaxConnections + RedisStore::kCommitReserve) + 1);
  ASSERT_EQ(*redis_->Command({"CONFIG", "SET", "maxclients", bound}), "OK");
  // Redis stalls while 3x the bound of callers arrive at once.
  ASSERT_EQ(*redis_->Command({"CLIENT", "PAUSE", "3000", "ALL"}), "OK");
  constexpr int kCallers = 3 * RedisStore::kMaxConnections;
  std::vector<absl::Status> results(kCallers);
  std::vector<std::thread> threads;
  for (int i = 0; i < kCallers; ++i) {
    threads.emplace_back([&, i] { results[i] = (*s)->Get("s//k").status(); });
  }
  // A commit (the scheduler's) arriving once the reads hold every slot gets one of its own:
  // it times out on the stalled Redis, but never waits for a slot.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const absl::Status commit = (*s)->Commit({StoreWrite{"s//k", "v"}});
  for (std::thread& t : threads) t.join();
  int busy = 0;
  for (const absl::Status& st : results) {
    // (A caller that got a slot freed by a timed-out one may see the pause end: OK.)
    EXPECT_TRUE(st.ok() || absl::IsUnavailable(st)) << st;
    EXPECT_THAT(st.message(), Not(HasSubstr("max number of clients"))) << "over the bound";
    if (absl::StrContains(st.message(), "connections stayed busy")) ++busy;
  }
  EXPECT_GT(busy, 0) << "every caller got a connection of its own";
  EXPECT_EQ(commit.code(), absl::StatusCode::kUnavailable) << commit;
  EXPECT_THAT(commit.message(), Not(HasSubstr("busy")))
      << "the commit waited for a slot behind stalled reads";
  EXPECT_THAT(commit.message(), HasSubstr("no reply within"));
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));  // the pause ends
  // And the slots came back: calls succeed again.
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<std::optional<std::string>> g = (*s)->Get("s//k");
    EXPECT_TRUE(g.ok()) << g.status();
  }
}

TEST_F(RedisStoreTest, ADemotedRedisIsNotKeptConnected) {
  StartRedis();
  TempDir primary_dir;
  absl::StatusOr<std::unique_ptr<testing::RedisServer>> primary =
      testing::RedisServer::Start(testing::RedisIn(primary_dir.path()));
  ASSERT_TRUE(primary.ok()) << primary.status();
  StateStoreOptions named;
  named.client_name = "replica-a";
  absl::StatusOr<std::unique_ptr<StateStore>> s = OpenStateStore(redis_->spec(), named);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_TRUE((*s)->Commit({StoreWrite{"s//a", "1"}}).ok());
  // The store's Redis is demoted: it replicates `primary` and refuses writes.
  ASSERT_EQ(*redis_->Command({"REPLICAOF", "127.0.0.1", absl::StrCat((*primary)->port())}), "OK");
  absl::Status st = (*s)->Commit({StoreWrite{"s//a", "2"}});
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
  EXPECT_THAT(st.message(), HasSubstr("READONLY"));
  // The connection that got READONLY was closed, not pooled (a new one may find the primary
  // behind a moved address).
  bool gone = false;
  for (int i = 0; i < 50 && !gone; ++i) {
    absl::StatusOr<std::string> clients = redis_->Command({"CLIENT", "LIST"});
    ASSERT_TRUE(clients.ok()) << clients.status();
    gone = !absl::StrContains(*clients, "name=replica-a");
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(gone) << "the demoted Redis's connection is still open";
  // Promoted again: the next commit connects afresh and lands.
  ASSERT_EQ(*redis_->Command({"REPLICAOF", "NO", "ONE"}), "OK");
  ASSERT_TRUE((*s)->Commit({StoreWrite{"s//a", "3"}}).ok());
  EXPECT_EQ(*(*s)->Get("s//a"), "3");
}

}  // namespace
}  // namespace aaren
