// SPDX-License-Identifier: Apache-2.0
// SessionStore: ids, the two tiers (pool with LRU eviction, host tier), exact buffer moves
// between them (state through the model's StateMemory, last output row in host memory), Score's
// scratch slots, capacity errors, idle expiry and removal.
#include "engine/session_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <list>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include "core/aaren_state.h"
#include "tests/engine/engine_test_support.h"

namespace aaren::testing {
namespace {

using ::testing::HasSubstr;

class SessionStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    registry_ = MakeCpuRegistry({
        NamedRandomModel("tok", MakeConfig(InputKind::kTokens, PositionKind::kNone, 2, 1, 16, 32),
                         1),
        NamedRandomModel("feat",
                         MakeConfig(InputKind::kFeatures, PositionKind::kNone, 4, 2, 16, 32), 2),
    });
    ASSERT_NE(registry_, nullptr);
    tok_ = registry_->Find("tok");
    feat_ = registry_->Find("feat");
    ASSERT_NE(tok_, nullptr);
    ASSERT_NE(feat_, nullptr);
    ASSERT_NE(BufferFloats(*tok_), BufferFloats(*feat_));
  }

  // LruOrderFollowsEvictionsSwapsAndRemovalsAgainstAListModel with a host tier of `host`.
  void LruModelCheck(int64_t host);
  // FailedMovesLeaveTiersLruAndBuffersAsTheyWere with a host tier of `host`.
  void FailedMovesCheck(int64_t host);

  std::unique_ptr<SessionStore> MakeStore(int64_t pool, int64_t host, uint32_t ttl = 3600,
                                          size_t remembered = 100000) {
    return std::make_unique<SessionStore>(*registry_,
                                          StoreLimits{.pool_sessions = pool,
                                                      .host_sessions = host,
                                                      .default_idle_ttl_s = ttl,
                                                      .expired_ids_remembered = remembered});
  }

  Session* MustCreate(SessionStore& store, const ServedModel* m, absl::string_view id,
                      int64_t now_ms = 1000, uint32_t ttl = 0) {
    absl::StatusOr<Session*> s = store.Create(m, 0, id, ttl, now_ms, "session_id");
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *s : nullptr;
  }

  // A session's state and its last output row, one after the other.
  static int64_t BufferFloats(const ServedModel& m) { return m.state_floats + m.output_dim; }

  // Fills a session's state and last output row with a distinct bit pattern (including values
  // arithmetic would not preserve: -0, a denormal, a NaN payload) and returns a copy of it.
  static std::vector<float> FillPattern(SessionStore& store, Session* s, uint32_t salt) {
    const int64_t n = BufferFloats(*s->model);
    std::vector<float> pattern(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t bits = 0x3f800000u ^ ((salt * 2654435761u) + static_cast<uint32_t>(i) * 97u);
      std::memcpy(&pattern[static_cast<size_t>(i)], &bits, sizeof(bits));
    }
    pattern[0] = -0.0f;
    pattern[1] = std::numeric_limits<float>::denorm_min();
    const uint32_t nan_bits = 0x7fc01234u;
    std::memcpy(&pattern[2], &nan_bits, sizeof(nan_bits));
    const int64_t state_floats = s->model->state_floats;
    EXPECT_TRUE(store.WriteState(s, pattern.data()).ok());
    std::memcpy(store.LastOutput(s), pattern.data() + state_floats,
                static_cast<size_t>(s->model->output_dim) * sizeof(float));
    return pattern;
  }

  // The session's state then last output row, as FillPattern lays them out.
  static std::vector<float> Buffer(SessionStore& store, Session* s) {
    std::vector<float> out(static_cast<size_t>(BufferFloats(*s->model)));
    EXPECT_TRUE(store.ReadState(s, out.data()).ok());
    std::memcpy(out.data() + s->model->state_floats, store.LastOutput(s),
                static_cast<size_t>(s->model->output_dim) * sizeof(float));
    return out;
  }

  static bool BufferIs(SessionStore& store, Session* s, const std::vector<float>& want) {
    const std::vector<float> have = Buffer(store, s);
    return have.size() == want.size() &&
           std::memcmp(have.data(), want.data(), want.size() * sizeof(float)) == 0;
  }

  // MakeResident's answer; a failed move fails the test.
  static bool MakeResident(SessionStore& store, Session* s) {
    absl::StatusOr<bool> r = store.MakeResident(s);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() && *r;
  }

  std::unique_ptr<ModelRegistry> registry_;
  const ServedModel* tok_ = nullptr;
  const ServedModel* feat_ = nullptr;
};

TEST_F(SessionStoreTest, CreateWithServerIdStartsIdleAtTheIdentityState) {
  auto store = MakeStore(4, 4, /*ttl=*/77);
  Session* s = MustCreate(*store, tok_, "", /*now_ms=*/5000);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->id.size(), 32u);
  EXPECT_EQ(s->model, tok_);
  EXPECT_EQ(s->position, 0);
  EXPECT_EQ(s->tier, Tier::kPool);
  EXPECT_EQ(s->state, aaren::SessionState::kIdle);
  EXPECT_EQ(s->idle_ttl_s, 77u);  // 0: the store's default
  EXPECT_EQ(s->created_ms, 5000);
  EXPECT_EQ(s->last_used_ms, 5000);
  EXPECT_FALSE(s->has_work());

  std::vector<float> identity(static_cast<size_t>(BufferFloats(*tok_)), 0.0f);
  ResetState(identity.data(), tok_->layout);
  const std::vector<float> data = Buffer(*store, s);
  for (size_t i = 0; i < identity.size(); ++i) {
    if (std::isinf(identity[i])) {
      EXPECT_EQ(data[i], kNegInf) << i;
    } else {
      EXPECT_EQ(data[i], identity[i]) << i;  // state, then a zero last-output row
    }
  }

  absl::StatusOr<Session*> found = store->Find(0, s->id.str(), "session_id");
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(*found, s);
  const StoreCounts c = store->counts();
  EXPECT_EQ(c.pool, 1);
  EXPECT_EQ(c.host, 0);
  EXPECT_EQ(c.pool_capacity, 4);
  EXPECT_EQ(c.host_capacity, 4);
  EXPECT_EQ(c.created, 1u);
}

TEST_F(SessionStoreTest, ServerIdsAreDistinct) {
  auto store = MakeStore(100, 0);
  absl::flat_hash_set<std::string> ids;
  for (int i = 0; i < 100; ++i) ids.insert(MustCreate(*store, tok_, "")->id.str());
  EXPECT_EQ(ids.size(), 100u);
}

TEST_F(SessionStoreTest, CreateWithClientIdAndItsErrors) {
  auto store = MakeStore(4, 4);
  Session* s = MustCreate(*store, tok_, "chat-1.user_A", 1000, /*ttl=*/5);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->id, "chat-1.user_A");
  EXPECT_EQ(s->idle_ttl_s, 5u);

  absl::StatusOr<Session*> dup =
      store->Create(feat_, 0, "chat-1.user_A", 0, 1000, "open.session_id");
  EXPECT_EQ(dup.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(dup.status().message()), HasSubstr("open.session_id"));
  EXPECT_THAT(std::string(dup.status().message()), HasSubstr("chat-1.user_A"));

  absl::StatusOr<Session*> bad = store->Create(tok_, 0, "no spaces", 0, 1000, "new_session_id");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("new_session_id"));

  bad = store->Create(tok_, 0, std::string(129, 'a'), 0, 1000, "session_id");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->counts().created, 1u);
  EXPECT_EQ(store->counts().pool, 1);
}

// Ids longer than the record holds inline (StoredSessionId) are found, told apart from ids that
// share their first kInline characters, and removed like any other.
TEST_F(SessionStoreTest, LongClientIdsAreFoundAndRemoved) {
  auto store = MakeStore(4, 4);
  const std::string prefix(StoredSessionId::kInline, 'p');
  const std::string a = prefix + "-a", b = prefix + "-b";
  const std::string longest(kMaxSessionIdLength, 'z');
  Session* sa = MustCreate(*store, tok_, a);
  Session* sb = MustCreate(*store, tok_, b);
  Session* sl = MustCreate(*store, tok_, longest);
  ASSERT_NE(sa, nullptr);
  ASSERT_NE(sb, nullptr);
  ASSERT_NE(sl, nullptr);
  EXPECT_EQ(*store->Find(0, a, "session_id"), sa);
  EXPECT_EQ(*store->Find(0, b, "session_id"), sb);
  EXPECT_EQ(*store->Find(0, longest, "session_id"), sl);
  EXPECT_EQ(store->Find(0, prefix, "session_id").status().code(), absl::StatusCode::kNotFound);
  store->Remove(sa, /*expired=*/false);
  store->FreeRemoved();
  EXPECT_EQ(store->Find(0, a, "session_id").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(*store->Find(0, b, "session_id"), sb);
  EXPECT_EQ(store->counts().pool, 2);
}

TEST_F(SessionStoreTest, FindUnknownAndEmptyIds) {
  auto store = MakeStore(4, 4);
  absl::StatusOr<Session*> s = store->Find(0, "nope", "session_id");
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("session_id: no session 'nope'"));
  s = store->Find(0, "", "open.session_id");
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("open.session_id"));
}

TEST_F(SessionStoreTest, PoolFullEvictsTheLeastRecentlyUsedToTheHostTier) {
  auto store = MakeStore(/*pool=*/2, /*host=*/10);
  Session* a = MustCreate(*store, tok_, "a");
  Session* b = MustCreate(*store, tok_, "b");
  Session* c = MustCreate(*store, tok_, "c");  // evicts a (least recently used)
  EXPECT_EQ(a->tier, Tier::kHost);
  EXPECT_EQ(b->tier, Tier::kPool);
  EXPECT_EQ(c->tier, Tier::kPool);
  StoreCounts counts = store->counts();
  EXPECT_EQ(counts.pool, 2);
  EXPECT_EQ(counts.host, 1);
  EXPECT_EQ(counts.evicted, 1u);

  // A use of b (what the engine does after running it) makes c the least recently used.
  store->LruRemove(b);
  store->LruPushFront(b);
  Session* d = MustCreate(*store, tok_, "d");
  EXPECT_EQ(c->tier, Tier::kHost);
  EXPECT_EQ(b->tier, Tier::kPool);
  EXPECT_EQ(d->tier, Tier::kPool);
  counts = store->counts();
  EXPECT_EQ(counts.pool, 2);
  EXPECT_EQ(counts.host, 2);
  EXPECT_EQ(counts.evicted, 2u);
  EXPECT_EQ(counts.created, 4u);
}

// The LRU's links live in a table by pool slot, not in the Session record, so they must follow
// every eviction, swap, slot reuse and removal. A random run of creates, uses (a host-tier
// session made resident first) and removals over two models is checked after every step
// against a plain list: which sessions are in the pool, in what LRU order (seen through which
// one each eviction picks), and that every buffer still holds its own bytes.
// With a large host tier every eviction is a move to it; with a small one the host tier is often
// full, so a host session made resident swaps places with the LRU tail (SwapWithVictim, in
// place for the same model, through both tiers for another model).
TEST_F(SessionStoreTest, LruOrderFollowsEvictionsSwapsAndRemovalsAgainstAListModel) {
  for (const int64_t host : {int64_t{1000}, int64_t{3}}) {
    SCOPED_TRACE(::testing::Message() << "host tier of " << host);
    LruModelCheck(host);
  }
}

void SessionStoreTest::LruModelCheck(int64_t host) {
  auto store = MakeStore(/*pool=*/6, host);
  std::mt19937 rng(20261206 + static_cast<uint32_t>(host));
  std::list<Session*> lru;  // the model: most recent first, pool-resident sessions only
  std::vector<std::pair<Session*, std::vector<float>>> live;
  int64_t evictions = 0, swaps = 0;
  auto evict_model_tail = [&] {
    ASSERT_FALSE(lru.empty());
    lru.pop_back();
    ++evictions;
  };
  for (int step = 0; step < 3000; ++step) {
    const int op = static_cast<int>(rng() % 10);
    const bool full = static_cast<int64_t>(live.size()) == 6 + host;
    if (!full && (op < 4 || live.size() < 3)) {
      if (static_cast<int64_t>(lru.size()) == 6) evict_model_tail();
      const ServedModel* m = rng() % 3 == 0 ? feat_ : tok_;
      Session* s = MustCreate(*store, m, "");
      ASSERT_NE(s, nullptr);
      lru.push_front(s);
      live.emplace_back(s, FillPattern(*store, s, static_cast<uint32_t>(step)));
    } else if (op < 8) {
      Session* s = live[rng() % live.size()].first;
      if (s->tier == Tier::kHost) {
        if (lru.size() == 6 &&
            static_cast<int64_t>(live.size()) - static_cast<int64_t>(lru.size()) == host) {
          ++swaps;
        }
        if (static_cast<int64_t>(lru.size()) == 6) evict_model_tail();
        ASSERT_TRUE(MakeResident(*store, s));
      } else {
        store->LruRemove(s);
        lru.remove(s);
      }
      store->LruPushFront(s);
      lru.push_front(s);
    } else {
      const size_t k = rng() % live.size();
      Session* s = live[k].first;
      store->Remove(s, /*expired=*/false);
      store->FreeRemoved();
      lru.remove(s);
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(k));
    }
    // Every step: the pool holds exactly the model's sessions, and the counts agree.
    int64_t in_pool = 0;
    for (const auto& [s, pattern] : live) {
      const bool modelled = std::find(lru.begin(), lru.end(), s) != lru.end();
      ASSERT_EQ(s->tier == Tier::kPool, modelled) << "step " << step;
      ASSERT_EQ(s->in_lru, modelled) << "step " << step;
      in_pool += modelled ? 1 : 0;
    }
    ASSERT_EQ(store->counts().pool, in_pool) << "step " << step;
    ASSERT_EQ(store->counts().evicted, static_cast<uint64_t>(evictions)) << "step " << step;
  }
  for (const auto& [s, pattern] : live) EXPECT_TRUE(BufferIs(*store, s, pattern));
  if (host < 1000) {
    EXPECT_GT(swaps, 100) << "the small host tier never made a swap";
  }
  // Evictions come in the model's order, least recent first: make room, fill the pool, then
  // make 6 more.
  while (!live.empty()) {
    store->Remove(live.back().first, /*expired=*/false);
    lru.remove(live.back().first);
    live.pop_back();
  }
  store->FreeRemoved();
  while (lru.size() < 6) lru.push_front(MustCreate(*store, tok_, ""));
  for (int i = 0; i < std::min<int64_t>(6, host); ++i) {
    Session* want = lru.back();
    lru.pop_back();
    lru.push_front(MustCreate(*store, tok_, ""));
    EXPECT_EQ(want->tier, Tier::kHost) << i;
    EXPECT_FALSE(want->in_lru) << i;
  }
}

// Host memory whose Moves can be made to fail (before copying anything), as a device's can.
class FlakyStateMemory final : public StateMemory {
 public:
  absl::string_view runnable_location() const override { return "host"; }
  absl::StatusOr<float*> Allocate(int64_t floats, Kind kind) override {
    return HostStateMemory::Get().Allocate(floats, kind);
  }
  void Free(float* block, Kind kind) override { HostStateMemory::Get().Free(block, kind); }
  absl::Status Upload(float* dst, const float* src, int64_t floats) override {
    return HostStateMemory::Get().Upload(dst, src, floats);
  }
  absl::Status Download(float* dst, const float* src, int64_t floats) override {
    return HostStateMemory::Get().Download(dst, src, floats);
  }
  absl::Status Move(float* dst, const float* src, int64_t floats) override {
    ++moves;
    if (moves == fail_at) return absl::InternalError("injected Move failure");
    return HostStateMemory::Get().Move(dst, src, floats);
  }

  int moves = 0;    // Moves since the test last reset it
  int fail_at = 0;  // which of them fails (0: none)
};

class FlakyBackend final : public Backend {
 public:
  explicit FlakyBackend(std::shared_ptr<const Model> model)
      : cpu_(std::move(model), TestBackendOptions()) {}
  const Model& model() const override { return cpu_.model(); }
  absl::string_view name() const override { return "flaky"; }
  StateMemory& state_memory() override { return memory_; }
  absl::Status Forward(absl::Span<const Span> spans) override { return cpu_.Forward(spans); }
  FlakyStateMemory memory_;

 private:
  CpuBackend cpu_;
};

// A failed eviction or move back into the pool changes nothing but what already succeeded: the
// session whose move failed stays where it was, in the LRU exactly when it is pool-resident and
// (for an eviction) back at the LRU's tail, so the next eviction picks it again; no buffer
// changes. Checked against a list model over random creates, touches and removals, with one of
// the call's Moves failing at random.
// With a host tier of 2 the host tier is often full too, and a host session made resident swaps
// places with the LRU tail through three Moves, any of which may fail.
TEST_F(SessionStoreTest, FailedMovesLeaveTiersLruAndBuffersAsTheyWere) {
  for (const int64_t host : {int64_t{1000}, int64_t{2}}) {
    SCOPED_TRACE(::testing::Message() << "host tier of " << host);
    FailedMovesCheck(host);
  }
}

void SessionStoreTest::FailedMovesCheck(int64_t host) {
  auto registry = ModelRegistry::FromModels(
      {NamedRandomModel("tok", tok_->model->config(), 1)},
      [](std::shared_ptr<const Model> m) -> absl::StatusOr<std::unique_ptr<Backend>> {
        return std::make_unique<FlakyBackend>(std::move(m));
      });
  ASSERT_TRUE(registry.ok()) << registry.status();
  const ServedModel* m = (*registry)->Find("tok");
  FlakyStateMemory& memory = static_cast<FlakyBackend*>(m->backend.get())->memory_;
  constexpr int64_t kPool = 5;
  SessionStore store(**registry, StoreLimits{.pool_sessions = kPool, .host_sessions = host});
  std::mt19937 rng(20261207 + static_cast<uint32_t>(host));
  std::list<Session*> lru;  // most recent first
  std::vector<std::pair<Session*, std::vector<float>>> live;
  int64_t failures = 0, swap_failures = 0;
  for (int step = 0; step < 2000; ++step) {
    const int op = static_cast<int>(rng() % 10);
    memory.moves = 0;
    memory.fail_at = rng() % 3 == 0 ? static_cast<int>(1 + rng() % 3) : 0;
    const bool pool_full = static_cast<int64_t>(lru.size()) == kPool;
    const bool host_full =
        static_cast<int64_t>(live.size()) - static_cast<int64_t>(lru.size()) == host;
    if (!(pool_full && host_full) && (op < 4 || live.size() < 3)) {
      absl::StatusOr<Session*> made = store.Create(m, 0, "", 0, 1000, "session_id");
      if (pool_full && memory.fail_at == 1) {
        // The eviction's Move failed: no session, and the tail stays the tail.
        ASSERT_FALSE(made.ok()) << "step " << step;
        EXPECT_THAT(std::string(made.status().message()), HasSubstr("injected"));
        ++failures;
      } else {
        ASSERT_TRUE(made.ok()) << "step " << step << ": " << made.status();
        if (pool_full) lru.pop_back();
        lru.push_front(*made);
        live.emplace_back(*made, FillPattern(store, *made, static_cast<uint32_t>(step)));
      }
    } else if (op < 8) {
      Session* s = live[rng() % live.size()].first;
      if (s->tier == Tier::kHost) {
        absl::StatusOr<bool> r = store.MakeResident(s);
        // Moves: the eviction first when the pool is full, then this session's; or, both tiers
        // full, the swap's three.
        const int evict_move = pool_full ? 1 : 0, own_move = evict_move + 1;
        if (pool_full && host_full) {
          if (memory.fail_at != 0) {
            ASSERT_FALSE(r.ok()) << "step " << step;
            ++swap_failures;
            EXPECT_EQ(s->tier, Tier::kHost) << "step " << step;
          } else {
            ASSERT_TRUE(r.ok() && *r) << "step " << step;
            lru.pop_back();
            store.LruPushFront(s);
            lru.push_front(s);
          }
        } else if (memory.fail_at != 0 &&
                   (memory.fail_at == evict_move || memory.fail_at == own_move)) {
          ASSERT_FALSE(r.ok()) << "step " << step;
          ++failures;
          if (memory.fail_at == own_move && pool_full) lru.pop_back();  // that one went
          EXPECT_EQ(s->tier, Tier::kHost) << "step " << step;
        } else {
          ASSERT_TRUE(r.ok() && *r) << "step " << step;
          if (pool_full) lru.pop_back();
          store.LruPushFront(s);
          lru.push_front(s);
        }
      } else {
        store.LruRemove(s);
        lru.remove(s);
        store.LruPushFront(s);
        lru.push_front(s);
      }
    } else {
      const size_t k = rng() % live.size();
      store.Remove(live[k].first, /*expired=*/false);
      store.FreeRemoved();
      lru.remove(live[k].first);
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(k));
    }
    memory.fail_at = 0;
    int64_t in_pool = 0;
    for (const auto& [s, pattern] : live) {
      const bool modelled = std::find(lru.begin(), lru.end(), s) != lru.end();
      ASSERT_EQ(s->tier == Tier::kPool, modelled) << "step " << step;
      ASSERT_EQ(s->in_lru, modelled) << "step " << step;
      ASSERT_TRUE(BufferIs(store, s, pattern)) << "step " << step;
      in_pool += modelled ? 1 : 0;
    }
    ASSERT_EQ(store.counts().pool, in_pool) << "step " << step;
  }
  EXPECT_GT(failures + swap_failures, 100);
  if (host < 1000) {
    EXPECT_GT(swap_failures, 20) << "no swap failed";
  }
  for (const auto& [s, pattern] : live) EXPECT_TRUE(BufferIs(store, s, pattern));
  // The LRU's order is the model's: make room in the host tier, fill the pool, then each new
  // session evicts the model's tail.
  memory.fail_at = 0;
  for (auto it = live.begin(); it != live.end();) {
    if (it->first->tier == Tier::kHost) {
      store.Remove(it->first, /*expired=*/false);
      it = live.erase(it);
    } else {
      ++it;
    }
  }
  store.FreeRemoved();
  while (static_cast<int64_t>(lru.size()) < kPool) lru.push_front(MustCreate(store, m, ""));
  for (int64_t i = 0; i < std::min(kPool, host); ++i) {
    Session* want = lru.back();
    lru.pop_back();
    lru.push_front(MustCreate(store, m, ""));
    EXPECT_EQ(want->tier, Tier::kHost) << i;
  }
}

TEST_F(SessionStoreTest, SessionsOutsideTheLruAreNeverEvicted) {
  auto store = MakeStore(2, 10);
  Session* a = MustCreate(*store, tok_, "a");
  Session* b = MustCreate(*store, tok_, "b");
  store->LruRemove(a);  // as while it runs
  MustCreate(*store, tok_, "c");
  EXPECT_EQ(a->tier, Tier::kPool);
  EXPECT_EQ(b->tier, Tier::kHost);
}

TEST_F(SessionStoreTest, MakeResidentSwapsBackAndPreservesBufferBytesExactly) {
  auto store = MakeStore(/*pool=*/2, /*host=*/10);
  Session* a = MustCreate(*store, tok_, "a");
  const std::vector<float> pa = FillPattern(*store, a, 1);
  Session* b = MustCreate(*store, tok_, "b");
  const std::vector<float> pb = FillPattern(*store, b, 2);
  Session* c = MustCreate(*store, tok_, "c");
  const std::vector<float> pc = FillPattern(*store, c, 3);
  ASSERT_EQ(a->tier, Tier::kHost);
  EXPECT_TRUE(BufferIs(*store, a, pa)) << "eviction changed the bytes";

  EXPECT_TRUE(MakeResident(*store, a));  // evicts b, the LRU tail
  EXPECT_EQ(a->tier, Tier::kPool);
  EXPECT_GE(a->slot, 0);
  EXPECT_EQ(b->tier, Tier::kHost);
  EXPECT_TRUE(BufferIs(*store, a, pa)) << "MakeResident changed the bytes";
  EXPECT_TRUE(BufferIs(*store, b, pb));
  EXPECT_TRUE(BufferIs(*store, c, pc));
  const StoreCounts counts = store->counts();
  EXPECT_EQ(counts.pool, 2);
  EXPECT_EQ(counts.host, 1);
  EXPECT_EQ(counts.evicted, 2u);

  // A pool-resident session is already resident.
  EXPECT_TRUE(MakeResident(*store, c));
  EXPECT_EQ(store->counts().evicted, 2u);
}

TEST_F(SessionStoreTest, MakeResidentWithFreeSlotTakesIt) {
  auto store = MakeStore(2, 10);
  Session* a = MustCreate(*store, tok_, "a");
  const std::vector<float> pa = FillPattern(*store, a, 4);
  Session* b = MustCreate(*store, tok_, "b");
  MustCreate(*store, tok_, "c");
  ASSERT_EQ(a->tier, Tier::kHost);
  store->Remove(b, /*expired=*/false);
  EXPECT_TRUE(MakeResident(*store, a));
  EXPECT_EQ(a->tier, Tier::kPool);
  EXPECT_TRUE(BufferIs(*store, a, pa));
  EXPECT_EQ(store->counts().host, 0);
  EXPECT_EQ(store->counts().pool, 2);
  EXPECT_EQ(store->counts().evicted, 1u);
}

TEST_F(SessionStoreTest, MakeResidentWithBothTiersFullSwapsWithTheLruSession) {
  auto store = MakeStore(/*pool=*/2, /*host=*/1);
  Session* a = MustCreate(*store, tok_, "a");
  const std::vector<float> pa = FillPattern(*store, a, 5);
  Session* b = MustCreate(*store, tok_, "b");
  const std::vector<float> pb = FillPattern(*store, b, 6);
  Session* c = MustCreate(*store, tok_, "c");  // a -> host: both tiers now full
  ASSERT_EQ(a->tier, Tier::kHost);
  EXPECT_TRUE(MakeResident(*store, a));  // b cannot move to a full host tier: they swap
  EXPECT_EQ(a->tier, Tier::kPool);
  EXPECT_EQ(b->tier, Tier::kHost);
  EXPECT_EQ(c->tier, Tier::kPool);
  EXPECT_TRUE(BufferIs(*store, a, pa));
  EXPECT_TRUE(BufferIs(*store, b, pb));
  const StoreCounts counts = store->counts();
  EXPECT_EQ(counts.pool, 2);
  EXPECT_EQ(counts.host, 1);
}

TEST_F(SessionStoreTest, MakeResidentFailsWithoutChangeWhenNoSlotCanBeHad) {
  auto store = MakeStore(/*pool=*/1, /*host=*/1);
  Session* a = MustCreate(*store, tok_, "a");
  const std::vector<float> pa = FillPattern(*store, a, 7);
  Session* b = MustCreate(*store, tok_, "b");
  const std::vector<float> pb = FillPattern(*store, b, 8);
  ASSERT_EQ(a->tier, Tier::kHost);
  store->LruRemove(b);  // b is busy: nothing can leave the pool
  EXPECT_FALSE(MakeResident(*store, a));
  EXPECT_EQ(a->tier, Tier::kHost);
  EXPECT_EQ(b->tier, Tier::kPool);
  EXPECT_TRUE(BufferIs(*store, a, pa));
  EXPECT_TRUE(BufferIs(*store, b, pb));
}

TEST_F(SessionStoreTest, MakeResidentTradesPlacesAcrossModelsWhenBothTiersAreFull) {
  auto store = MakeStore(/*pool=*/1, /*host=*/1);
  Session* a = MustCreate(*store, tok_, "a");
  const std::vector<float> pa = FillPattern(*store, a, 9);
  Session* b = MustCreate(*store, feat_, "b");
  const std::vector<float> pb = FillPattern(*store, b, 10);
  ASSERT_EQ(a->tier, Tier::kHost);
  ASSERT_EQ(b->tier, Tier::kPool);
  // The buffers differ in size, so they cannot be swapped in place: each moves to a slot of
  // its own model's pool in the other tier, and the tier counts stay the same.
  EXPECT_TRUE(MakeResident(*store, a));
  EXPECT_EQ(a->tier, Tier::kPool);
  EXPECT_EQ(b->tier, Tier::kHost);
  EXPECT_TRUE(BufferIs(*store, a, pa));
  EXPECT_TRUE(BufferIs(*store, b, pb));
  const StoreCounts counts = store->counts();
  EXPECT_EQ(counts.pool, 1);
  EXPECT_EQ(counts.host, 1);
  EXPECT_EQ(counts.evicted, 2u);
  // And back, once `a` is idle again (the engine puts a session in the LRU after its work).
  store->LruPushFront(a);
  EXPECT_TRUE(MakeResident(*store, b));
  EXPECT_EQ(b->tier, Tier::kPool);
  EXPECT_EQ(a->tier, Tier::kHost);
  EXPECT_TRUE(BufferIs(*store, a, pa));
  EXPECT_TRUE(BufferIs(*store, b, pb));
}

TEST_F(SessionStoreTest, BothTiersFullIsResourceExhausted) {
  auto store = MakeStore(/*pool=*/1, /*host=*/1);
  MustCreate(*store, tok_, "a");
  MustCreate(*store, tok_, "b");
  absl::StatusOr<Session*> c = store->Create(tok_, 0, "c", 0, 1000, "session_id");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("--max_sessions"));
  c = store->Create(tok_, 0, "", 0, 1000, "session_id");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  const StoreCounts counts = store->counts();
  EXPECT_EQ(counts.created, 2u);
  EXPECT_EQ(counts.pool, 1);
  EXPECT_EQ(counts.host, 1);
  EXPECT_EQ(store->Find(0, "c", "session_id").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SessionStoreTest, PoolOfBusySessionsAndNoHostTierIsResourceExhausted) {
  auto store = MakeStore(/*pool=*/1, /*host=*/0);
  Session* a = MustCreate(*store, tok_, "a");
  absl::StatusOr<Session*> b = store->Create(tok_, 0, "b", 0, 1000, "session_id");
  EXPECT_EQ(b.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(a->tier, Tier::kPool);
  store->Remove(a, /*expired=*/false);
  b = store->Create(tok_, 0, "b", 0, 1000, "session_id");
  EXPECT_TRUE(b.ok()) << b.status();
}

TEST_F(SessionStoreTest, ExpireIdleRemovesSessionsPastTheirTtlAndFindSaysExpired) {
  auto store = MakeStore(4, 4);
  Session* a = MustCreate(*store, tok_, "a", /*now_ms=*/1000, /*ttl=*/1);
  Session* b = MustCreate(*store, tok_, "b", /*now_ms=*/1000, /*ttl=*/10);
  Session* host = MustCreate(*store, tok_, "h", /*now_ms=*/1000, /*ttl=*/1);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(store->ExpireIdle(2000), 0);  // exactly the TTL: not yet
  EXPECT_EQ(store->ExpireIdle(2001), 2);
  EXPECT_EQ(a->state, aaren::SessionState::kClosed);  // valid until FreeRemoved
  EXPECT_EQ(host->state, aaren::SessionState::kClosed);
  store->FreeRemoved();

  absl::StatusOr<Session*> found = store->Find(0, "a", "session_id");
  EXPECT_EQ(found.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(found.status().message()), HasSubstr("expired"));
  EXPECT_THAT(std::string(found.status().message()), HasSubstr("session_id"));
  EXPECT_TRUE(store->Find(0, "b", "session_id").ok());
  StoreCounts counts = store->counts();
  EXPECT_EQ(counts.expired, 2u);
  EXPECT_EQ(counts.pool, 1);

  EXPECT_EQ(store->ExpireIdle(11001), 1);
  EXPECT_EQ(store->counts().pool, 0);

  // The id may be used again; then it is simply a live session.
  Session* again = MustCreate(*store, tok_, "a", 20000);
  ASSERT_NE(again, nullptr);
  EXPECT_TRUE(store->Find(0, "a", "session_id").ok());
}

TEST_F(SessionStoreTest, ExpireIdleRemovesHostTierSessions) {
  auto store = MakeStore(1, 4);
  Session* a = MustCreate(*store, tok_, "a", 1000, 1);
  MustCreate(*store, tok_, "b", 5000, 100);
  ASSERT_EQ(a->tier, Tier::kHost);
  EXPECT_EQ(store->ExpireIdle(3000), 1);
  store->FreeRemoved();
  EXPECT_EQ(store->counts().host, 0);
  EXPECT_EQ(store->counts().pool, 1);
}

TEST_F(SessionStoreTest, BusySessionsDoNotExpire) {
  auto store = MakeStore(4, 4);
  Session* queued = MustCreate(*store, tok_, "queued", 1000, 1);
  Session* ready = MustCreate(*store, tok_, "ready", 1000, 1);
  Session* running = MustCreate(*store, tok_, "running", 1000, 1);
  queued->Push(new Work());  // the store frees leftover work
  ready->in_ready = true;
  running->SetState(aaren::SessionState::kRunning);
  EXPECT_EQ(store->ExpireIdle(100000), 0);
  running->SetState(aaren::SessionState::kIdle);
  ready->in_ready = false;
  queued->Pop();
  EXPECT_EQ(store->ExpireIdle(100000), 3);
}

TEST_F(SessionStoreTest, ExpiredIdsAreRememberedUpToTheLimit) {
  auto store = MakeStore(8, 8, 3600, /*remembered=*/2);
  for (const char* id : {"e1", "e2", "e3"}) MustCreate(*store, tok_, id, 1000, 1);
  EXPECT_EQ(store->ExpireIdle(5000), 3);
  store->FreeRemoved();
  int expired = 0, unknown = 0;
  for (const char* id : {"e1", "e2", "e3"}) {
    absl::Status st = store->Find(0, id, "session_id").status();
    ASSERT_EQ(st.code(), absl::StatusCode::kNotFound);
    (st.message().find("expired") != absl::string_view::npos ? expired : unknown)++;
  }
  EXPECT_EQ(expired, 2);
  EXPECT_EQ(unknown, 1);
}

// An id that expires, is created again and expires again counts as one recent expiry: the store
// remembers the latest `expired_ids_remembered` expiries, and the second expiry of "x" is one of
// the latest two here.
TEST_F(SessionStoreTest, AnIdExpiredTwiceIsRememberedByItsLatestExpiry) {
  auto store = MakeStore(8, 8, 3600, /*remembered=*/2);
  MustCreate(*store, tok_, "x", 1000, 1);
  ASSERT_EQ(store->ExpireIdle(3000), 1);
  MustCreate(*store, tok_, "x", 4000, 1);
  ASSERT_EQ(store->ExpireIdle(6000), 1);
  MustCreate(*store, tok_, "y", 6000, 1);
  ASSERT_EQ(store->ExpireIdle(8000), 1);
  store->FreeRemoved();
  EXPECT_THAT(std::string(store->Find(0, "y", "session_id").status().message()),
              HasSubstr("expired"));
  EXPECT_THAT(std::string(store->Find(0, "x", "session_id").status().message()),
              HasSubstr("expired"));
}

TEST_F(SessionStoreTest, ScratchSlotsStartAtTheIdentityHaveNoLimitAndAreReused) {
  auto store = MakeStore(/*pool=*/1, /*host=*/0);
  MustCreate(*store, tok_, "a");  // both tiers full
  std::vector<std::unique_ptr<Session>> scratch;
  for (int i = 0; i < 300; ++i) {  // more than a block, far over --max_sessions
    auto s = std::make_unique<Session>();
    s->model = i % 2 == 0 ? tok_ : feat_;
    ASSERT_TRUE(store->AcquireScratch(s.get()).ok()) << i;
    EXPECT_EQ(s->tier, Tier::kScratch);
    EXPECT_GE(s->slot, 0);
    scratch.push_back(std::move(s));
  }
  std::vector<float> identity(static_cast<size_t>(BufferFloats(*feat_)), 0.0f);
  ResetState(identity.data(), feat_->layout);
  EXPECT_TRUE(BufferIs(*store, scratch[1].get(), identity));
  // Distinct slots: writing one leaves its neighbour alone.
  const std::vector<float> p3 = FillPattern(*store, scratch[3].get(), 11);
  EXPECT_TRUE(BufferIs(*store, scratch[1].get(), identity));
  EXPECT_TRUE(BufferIs(*store, scratch[3].get(), p3));
  // Scratch slots are not sessions: the tiers' counts do not see them.
  const StoreCounts counts = store->counts();
  EXPECT_EQ(counts.pool, 1);
  EXPECT_EQ(counts.host, 0);
  EXPECT_EQ(counts.created, 1u);

  // A released slot comes back at the identity state, whatever its last holder left.
  const int32_t slot3 = scratch[3]->slot;
  store->ReleaseScratch(scratch[3].get());
  EXPECT_EQ(scratch[3]->slot, -1);
  store->ReleaseScratch(scratch[3].get());  // no-op
  auto again = std::make_unique<Session>();
  again->model = feat_;
  ASSERT_TRUE(store->AcquireScratch(again.get()).ok());
  EXPECT_EQ(again->slot, slot3);
  EXPECT_TRUE(BufferIs(*store, again.get(), identity));
  store->ReleaseScratch(again.get());
  for (auto& s : scratch) store->ReleaseScratch(s.get());
}

TEST_F(SessionStoreTest, CopySessionCopiesStateAndLastOutputAcrossTiers) {
  auto store = MakeStore(/*pool=*/1, /*host=*/4);
  Session* a = MustCreate(*store, tok_, "a");
  const std::vector<float> pa = FillPattern(*store, a, 12);
  Session* b = MustCreate(*store, tok_, "b");  // a -> host tier
  ASSERT_EQ(a->tier, Tier::kHost);
  ASSERT_EQ(b->tier, Tier::kPool);
  ASSERT_TRUE(store->CopySession(b, a).ok());  // host -> pool
  EXPECT_TRUE(BufferIs(*store, b, pa));
  EXPECT_TRUE(BufferIs(*store, a, pa));
  Session* c = MustCreate(*store, tok_, "c");  // b -> host tier
  ASSERT_EQ(b->tier, Tier::kHost);
  const std::vector<float> pc = FillPattern(*store, c, 13);
  ASSERT_TRUE(store->CopySession(a, c).ok());  // pool -> host
  EXPECT_TRUE(BufferIs(*store, a, pc));
}

TEST_F(SessionStoreTest, RemoveFreesTheSessionAndItsSlot) {
  auto store = MakeStore(2, 2);
  Session* a = MustCreate(*store, tok_, "a");
  Session* b = MustCreate(*store, tok_, "b");
  Session* c = MustCreate(*store, tok_, "c");
  ASSERT_EQ(a->tier, Tier::kHost);
  store->Remove(a, /*expired=*/false);  // host tier
  store->Remove(b, /*expired=*/false);  // pool
  EXPECT_EQ(a->state, aaren::SessionState::kClosed);
  EXPECT_EQ(b->state, aaren::SessionState::kClosed);
  store->FreeRemoved();
  absl::StatusOr<Session*> found = store->Find(0, "b", "session_id");
  EXPECT_EQ(found.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(found.status().message()), HasSubstr("no session 'b'"));
  StoreCounts counts = store->counts();
  EXPECT_EQ(counts.deleted, 2u);
  EXPECT_EQ(counts.expired, 0u);
  EXPECT_EQ(counts.pool, 1);
  EXPECT_EQ(counts.host, 0);

  // The freed slot is reused without evicting c.
  Session* d = MustCreate(*store, tok_, "d");
  EXPECT_EQ(d->tier, Tier::kPool);
  EXPECT_EQ(c->tier, Tier::kPool);
  EXPECT_EQ(store->counts().evicted, 1u);
}

}  // namespace
}  // namespace aaren::testing
