// SPDX-License-Identifier: Apache-2.0
// SessionStore: the live sessions of one engine, by id, and the two tiers their buffers live in:
// a fixed pool of slots (one StatePool per model, --max_sessions slots in all) and a host tier
// (another StatePool per model, --host_tier_sessions slots in all; slabs, so an idle session
// costs its buffer and no allocator overhead). When the pool is full, the least recently used idle
// session moves to the host tier; a host-tier session moves back before it runs. Idle sessions
// expire after their TTL; the ids of recently expired sessions are remembered so that a lookup
// can say the session expired rather than that it never existed. It also holds the slots of
// Score's scratch states (a third StatePool per model, runnable memory, no capacity limit).
//
// Memory: a session's recurrent state lives in its model's backend's StateMemory
// (core/state_memory.h): runnable memory in the pool (and for scratch states), staging memory in
// the host tier. The store and the engine never dereference it; they copy it with ReadState /
// WriteState / CopySession and tier moves (StateMemory's Download / Upload / Move), and pass
// State() to Backend::Forward as Span::state. The session's last output row is ordinary host
// memory (LastOutput), read and written directly.
//
// Not thread-safe: the engine calls every method under its lock.
#ifndef AAREN_ENGINE_SESSION_STORE_H_
#define AAREN_ENGINE_SESSION_STORE_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <memory_resource>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/functional/any_invocable.h"
#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/state_memory.h"
#include "engine/served_model.h"
#include "engine/session.h"
#include "engine/state_pool.h"

namespace aaren {

struct StoreLimits {
  int64_t pool_sessions = 4096;     // --max_sessions
  int64_t host_sessions = 1000000;  // --host_tier_sessions
  uint32_t default_idle_ttl_s = 3600;
  size_t expired_ids_remembered = 100000;
  int64_t max_sessions_per_tenant = 0;  // --max_sessions_per_tenant; 0: no limit
};

struct StoreCounts {
  int64_t pool = 0;
  int64_t host = 0;
  int64_t pool_capacity = 0;
  int64_t host_capacity = 0;
  int64_t pool_state_bytes = 0;  // sessions' recurrent state bytes (ModelInfo.state_bytes each)
  int64_t host_state_bytes = 0;
  uint64_t created = 0;
  uint64_t evicted = 0;
  uint64_t expired = 0;
  uint64_t deleted = 0;
};

class SessionStore {
 public:
  SessionStore(const ModelRegistry& models, StoreLimits limits);
  ~SessionStore();

  // Tenants by index: 0 is the anonymous tenant "", others are numbered as first seen. Names
  // are never forgotten (there are as many as the operator's token file has had).
  uint32_t InternTenant(absl::string_view name);
  const std::string& TenantName(uint32_t tenant) const { return tenant_names_[tenant]; }
  // Sessions the tenant has in the store (both tiers).
  int64_t TenantSessions(uint32_t tenant) const;

  // A new idle session of `tenant` at position 0 with the identity state and a zero last output
  // row. `id` empty: a random one. Errors: INVALID_ARGUMENT (bad id, naming `id_field`),
  // ALREADY_EXISTS (only ever for the tenant's own id), RESOURCE_EXHAUSTED naming
  // --max_sessions_per_tenant when the tenant has that many, or when both tiers are full or
  // their memory cannot be allocated; a failed copy's status (then nothing changed).
  absl::StatusOr<Session*> Create(const ServedModel* model, uint32_t tenant, absl::string_view id,
                                  uint32_t idle_ttl_s, int64_t now_ms, absl::string_view id_field);
  // The tenant's session `id`. INVALID_ARGUMENT naming `field` for an id that is not a valid
  // session id (checked first, so an oversized or binary id is never echoed); NOT_FOUND naming
  // `field` otherwise, saying so when the session expired. Another tenant's session of the same
  // id gives exactly the NOT_FOUND of an id that never existed.
  absl::StatusOr<Session*> Find(uint32_t tenant, absl::string_view id,
                                absl::string_view field) const;
  // Erases an idle session with no pending work and frees its slot. The Session object stays
  // valid (state kClosed) until FreeRemoved(), so a caller iterating sessions may still test it.
  void Remove(Session* s, bool expired);
  void FreeRemoved();
  // Called by Remove (and so by ExpireIdle) for every session it removes, before the session is
  // marked closed: how the engine learns that a stored session must be deleted from its
  // StateStore.
  void set_remove_hook(absl::AnyInvocable<void(Session*)> hook) { remove_hook_ = std::move(hook); }

  // Score's scratch sessions: `s` (owned by the caller, model set, never in the store) becomes
  // Tier::kScratch with a slot of its model's scratch pool (runnable memory) holding the identity
  // state and a zero last output row. RESOURCE_EXHAUSTED when memory cannot be allocated; a
  // failed copy's status (then `s` has no slot).
  absl::Status AcquireScratch(Session* s);
  // Gives a scratch session's slot back once its work has ended; no-op when it holds none.
  void ReleaseScratch(Session* s);

  // The session's recurrent state (state_floats floats) in its model's backend's StateMemory:
  // runnable memory for kPool and kScratch (what Span::state takes), staging memory for kHost.
  // Valid until the session changes tier or slot (MakeResident, eviction, Remove). Never
  // dereference it: copy through ReadState / WriteState / CopySession.
  float* State(const Session* s) const;
  // The session's last output row (output_dim floats; zero at position 0): host memory, read and
  // written directly. Valid as long as State().
  float* LastOutput(const Session* s) const;
  // Copies the session's state into host memory `dst` (Download: waits for every Forward issued
  // before); from host memory `src` into the session's state (Upload). Errors: the StateMemory's.
  absl::Status ReadState(const Session* s, float* dst);
  absl::Status WriteState(const Session* s, const float* src);
  // `dst` (a session of the same model) gets `src`'s state (Move, in order with later Forwards)
  // and last output row.
  absl::Status CopySession(const Session* dst, const Session* src);

  // Moves a host-tier session into the pool, evicting the least recently used idle session if
  // the pool is full. False (nothing changed) when no slot can be had this moment; an error
  // (RESOURCE_EXHAUSTED when memory cannot be allocated; a failed copy's status) when a move
  // failed.
  absl::StatusOr<bool> MakeResident(Session* s);

  // The pool LRU: idle, unpinned, pool-resident sessions. Touch marks a use.
  void LruRemove(Session* s);
  void LruPushFront(Session* s);

  // The output rows of the session's last append when it was ALL with several rows (what a retry
  // of it returns); null when it has none. Held here, not in the Session record: few sessions
  // have one. Remove and ReleaseScratch drop them.
  const std::vector<float>* RetryOutputs(const Session* s) const;
  // Replaces them; empty rows: none.
  void SetRetryOutputs(Session* s, std::vector<float> rows);

  // Removes idle sessions (no work, not running) unused for longer than their TTL.
  int64_t ExpireIdle(int64_t now_ms);

  StoreCounts counts() const;
  // Host and device memory the store's sessions hold: per session its state, last output row
  // and bookkeeping (SessionBytes). Scratch sessions are not counted (their Score reserves them).
  int64_t memory_bytes() const { return memory_bytes_; }
  static int64_t SessionBytes(const ServedModel& m);
  uint32_t default_idle_ttl_s() const { return limits_.default_idle_ttl_s; }

 private:
  // A pool-resident session's place in the LRU, kept by its pool slot rather than in the
  // Session record (only pool-resident sessions are ever in the LRU).
  struct LruLink {
    Session* prev = nullptr;
    Session* next = nullptr;
  };
  struct ModelSlots {
    StateMemory* memory = nullptr;       // the model's backend's
    std::unique_ptr<StatePool> pool;     // runnable memory
    std::unique_ptr<StatePool> host;     // staging memory
    std::unique_ptr<StatePool> scratch;  // runnable memory, Score's scratch states
    std::vector<float> identity;         // the identity state, uploaded into new sessions
    float* swap_block = nullptr;         // staging, state_floats: MakeResident's same-model swap
    std::vector<LruLink> lru;            // by pool slot; grown on demand
  };
  ModelSlots& SlotsOf(const ServedModel* m) { return slots_.at(m); }
  StatePool& PoolOf(const ServedModel* m) { return *slots_.at(m).pool; }
  StatePool& HostOf(const ServedModel* m) { return *slots_.at(m).host; }
  StatePool& TierOf(const Session* s) const;
  bool HostFull() const { return host_used_ >= limits_.host_sessions; }
  // The LRU tail to the host tier: false when none can move; an error when the move failed
  // (nothing changed).
  absl::StatusOr<bool> EvictOne();
  bool PoolFull() const { return pool_used_ >= limits_.pool_sessions; }
  // MakeResident when neither tier has room: `s` (host tier) and the LRU's `victim` (already
  // out of the LRU) trade places. On error both are where they were, or the victim is in the
  // host tier and `s` too (counts adjusted).
  absl::Status SwapWithVictim(Session* s, Session* victim);
  // The LRU links of a pool-resident session (valid until its slot changes: take it out of the
  // LRU first).
  LruLink& LinkOf(const Session* s);
  void LruPushBack(Session* s);

  // A session's key: its tenant and id. The index holds Session pointers (8 bytes a slot, not a
  // key and a pointer) and looks them up by Key or Session*.
  struct Key {
    uint32_t tenant;
    absl::string_view id;
    template <typename H>
    friend H AbslHashValue(H h, const Key& k) {
      return H::combine(std::move(h), k.tenant, k.id);
    }
  };
  struct KeyHash {
    using is_transparent = void;
    size_t operator()(const Key& k) const { return absl::Hash<Key>{}(k); }
    size_t operator()(const Session* s) const {
      StoredSessionId::Text scratch;  // the hash is of the id's characters, as a Key's
      return (*this)(Key{s->tenant, s->id.view(scratch)});
    }
  };
  struct KeyEq {
    using is_transparent = void;
    static bool Same(const Session* a, const Key& b) {
      return a->tenant == b.tenant && a->id == b.id;
    }
    bool operator()(const Session* a, const Session* b) const { return a == b; }
    bool operator()(const Session* a, const Key& b) const { return Same(a, b); }
    bool operator()(const Key& a, const Session* b) const { return Same(b, a); }
    bool operator()(const Key& a, const Key& b) const {
      return a.tenant == b.tenant && a.id == b.id;
    }
  };
  // Session records come from session_memory_ (no per-allocation header); these construct and
  // destroy them there.
  Session* NewSession();
  void DeleteSession(Session* s);

  StoreLimits limits_;
  absl::AnyInvocable<void(Session*)> remove_hook_;
  // Declared before the containers of Session pointers; ~SessionStore destroys every Session.
  std::pmr::unsynchronized_pool_resource session_memory_;
  absl::flat_hash_set<Session*, KeyHash, KeyEq> sessions_;
  std::vector<std::string> tenant_names_{std::string(kAnonymousTenant)};
  absl::flat_hash_map<std::string, uint32_t> tenant_index_{{std::string(kAnonymousTenant), 0}};
  std::vector<int64_t> tenant_sessions_{0};
  absl::flat_hash_map<const ServedModel*, ModelSlots> slots_;
  int64_t memory_bytes_ = 0;
  int64_t pool_used_ = 0;
  int64_t host_used_ = 0;
  Session* lru_head_ = nullptr;
  Session* lru_tail_ = nullptr;
  std::vector<Session*> removed_;  // removed, destroyed by FreeRemoved
  absl::flat_hash_map<const Session*, std::vector<float>> retry_outputs_;  // RetryOutputs
  // Recently expired (tenant, id) -> the sequence number of their latest expiry, oldest first
  // in order.
  using ExpiredKey = std::pair<uint32_t, std::string>;
  absl::flat_hash_map<ExpiredKey, uint64_t> expired_ids_;
  std::deque<std::pair<ExpiredKey, uint64_t>> expired_order_;
  uint64_t expiry_seq_ = 0;
  uint64_t created_ = 0, evicted_ = 0, expired_ = 0, deleted_ = 0;
};

}  // namespace aaren

#endif  // AAREN_ENGINE_SESSION_STORE_H_
