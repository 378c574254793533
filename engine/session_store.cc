// SPDX-License-Identifier: Apache-2.0
#include "engine/session_store.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/aaren_state.h"
#include "core/status_macros.h"
#include "engine/session_id.h"

namespace aaren {

void Session::SetState(SessionState next) {
  const bool ok = (state == SessionState::kIdle && next != SessionState::kIdle) ||
                  (state == SessionState::kRunning && next == SessionState::kIdle);
  if (!ok) {
    std::fprintf(stderr, "aaren: session %s: illegal state change %d -> %d\n", id.str().c_str(),
                 static_cast<int>(state), static_cast<int>(next));
    std::abort();
  }
  state = next;
}

SessionStore::SessionStore(const ModelRegistry& models, StoreLimits limits) : limits_(limits) {
  for (const ServedModel* m : models.models()) {
    ModelSlots& slots = slots_[m];
    slots.memory = &m->backend->state_memory();
    slots.pool = std::make_unique<StatePool>(*slots.memory, StateMemory::Kind::kRunnable,
                                             m->state_floats, m->output_dim, limits_.pool_sessions);
    slots.host = std::make_unique<StatePool>(*slots.memory, StateMemory::Kind::kStaging,
                                             m->state_floats, m->output_dim, limits_.host_sessions);
    // Scratch states live only while their Score runs: no limit beyond the memory itself.
    slots.scratch =
        std::make_unique<StatePool>(*slots.memory, StateMemory::Kind::kRunnable, m->state_floats,
                                    m->output_dim, std::numeric_limits<int32_t>::max());
    slots.identity.resize(static_cast<size_t>(m->state_floats));
    ResetState(slots.identity.data(), m->layout);
  }
}

SessionStore::~SessionStore() {
  // The engine drains every queue before it destroys the store; free any leftovers.
  for (Session* s : sessions_) {
    while (s->has_work()) s->Pop();
    DeleteSession(s);
  }
  sessions_.clear();
  FreeRemoved();
  for (auto& [m, slots] : slots_) {
    if (slots.swap_block != nullptr)
      slots.memory->Free(slots.swap_block, StateMemory::Kind::kStaging);
  }
}

Session* SessionStore::NewSession() {
  return new (session_memory_.allocate(sizeof(Session), alignof(Session))) Session();
}

void SessionStore::DeleteSession(Session* s) {
  s->~Session();
  session_memory_.deallocate(s, sizeof(Session), alignof(Session));
}

void SessionStore::FreeRemoved() {
  for (Session* s : removed_) DeleteSession(s);
  removed_.clear();
}

StatePool& SessionStore::TierOf(const Session* s) const {
  const ModelSlots& slots = slots_.at(s->model);
  switch (s->tier) {
    case Tier::kPool:
      return *slots.pool;
    case Tier::kHost:
      return *slots.host;
    case Tier::kScratch:
      break;
  }
  return *slots.scratch;
}

float* SessionStore::State(const Session* s) const { return TierOf(s).state(s->slot); }

float* SessionStore::LastOutput(const Session* s) const { return TierOf(s).last_output(s->slot); }

absl::Status SessionStore::ReadState(const Session* s, float* dst) {
  return slots_.at(s->model).memory->Download(dst, State(s), s->model->state_floats);
}

absl::Status SessionStore::WriteState(const Session* s, const float* src) {
  return slots_.at(s->model).memory->Upload(State(s), src, s->model->state_floats);
}

absl::Status SessionStore::CopySession(const Session* dst, const Session* src) {
  RETURN_IF_ERROR(
      slots_.at(src->model).memory->Move(State(dst), State(src), src->model->state_floats));
  std::memcpy(LastOutput(dst), LastOutput(src),
              static_cast<size_t>(src->model->output_dim) * sizeof(float));
  return absl::OkStatus();
}

// A slot of `pool` holding the model's identity state and a zero last output row.
static absl::StatusOr<int32_t> AcquireIdentity(StatePool& pool,
                                               const std::vector<float>& identity) {
  ASSIGN_OR_RETURN(const int32_t slot, pool.Acquire());
  if (absl::Status st =
          pool.memory().Upload(pool.state(slot), identity.data(), pool.state_floats());
      !st.ok()) {
    pool.Release(slot);
    return st;
  }
  std::fill_n(pool.last_output(slot), pool.output_floats(), 0.0f);
  return slot;
}

int64_t SessionStore::SessionBytes(const ServedModel& m) {
  // The state and last output row in their slots, the Session record (its id inline), its index
  // slot and the index's spare capacity.
  return (m.state_floats + m.output_dim) * static_cast<int64_t>(sizeof(float)) +
         static_cast<int64_t>(sizeof(Session)) + 16;
}

uint32_t SessionStore::InternTenant(absl::string_view name) {
  auto it = tenant_index_.find(name);
  if (it != tenant_index_.end()) return it->second;
  const auto index = static_cast<uint32_t>(tenant_names_.size());
  tenant_names_.emplace_back(name);
  tenant_sessions_.push_back(0);
  tenant_index_.emplace(std::string(name), index);
  return index;
}

int64_t SessionStore::TenantSessions(uint32_t tenant) const {
  return tenant < tenant_sessions_.size() ? tenant_sessions_[tenant] : 0;
}

absl::StatusOr<Session*> SessionStore::Create(const ServedModel* model, uint32_t tenant,
                                              absl::string_view id, uint32_t idle_ttl_s,
                                              int64_t now_ms, absl::string_view id_field) {
  std::string new_id;
  if (id.empty()) {
    new_id = NewSessionId();
  } else {
    if (absl::Status st = ValidateSessionId(id, id_field); !st.ok()) return st;
    if (sessions_.contains(Key{tenant, id})) {
      return absl::AlreadyExistsError(
          absl::StrCat(id_field, ": session '", id, "' already exists"));
    }
    new_id = std::string(id);
  }
  if (limits_.max_sessions_per_tenant > 0 &&
      tenant_sessions_[tenant] >= limits_.max_sessions_per_tenant) {
    return absl::ResourceExhaustedError(
        absl::StrCat("sessions: this tenant has ", tenant_sessions_[tenant],
                     " sessions, the limit of --max_sessions_per_tenant; delete some first"));
  }
  // Pool first (evicting the LRU idle session if needed), else the host tier; the host tier too
  // when the pool's memory cannot be allocated.
  if (PoolFull()) RETURN_IF_ERROR(EvictOne().status());
  ModelSlots& slots = SlotsOf(model);
  Tier tier = Tier::kPool;
  int32_t slot = -1;
  absl::Status pool_error;
  if (!PoolFull()) {
    absl::StatusOr<int32_t> got = AcquireIdentity(*slots.pool, slots.identity);
    if (got.ok()) {
      slot = *got;
      ++pool_used_;
    } else {
      pool_error = got.status();
    }
  }
  if (slot < 0) {
    if (HostFull()) {
      if (!pool_error.ok()) return pool_error;
      return absl::ResourceExhaustedError(absl::StrCat(
          "sessions: every state tier is full (pool ", pool_used_, "/", limits_.pool_sessions,
          " busy, host tier ", host_used_, "/", limits_.host_sessions,
          "); delete sessions or raise --max_sessions / --host_tier_sessions"));
    }
    ASSIGN_OR_RETURN(slot, AcquireIdentity(*slots.host, slots.identity));
    tier = Tier::kHost;
    ++host_used_;
  }
  Session* s = NewSession();
  s->tier = tier;
  s->slot = slot;
  s->id = new_id;
  s->tenant = tenant;
  s->uid = NewSessionUid();
  s->model = model;
  s->idle_ttl_s = idle_ttl_s != 0 ? idle_ttl_s : limits_.default_idle_ttl_s;
  s->created_ms = s->last_used_ms = now_ms;
  if (!expired_ids_.empty()) expired_ids_.erase(ExpiredKey(tenant, new_id));
  sessions_.insert(s);
  ++tenant_sessions_[tenant];
  memory_bytes_ += SessionBytes(*model);
  if (s->tier == Tier::kPool) LruPushFront(s);
  ++created_;
  return s;
}

absl::Status SessionStore::AcquireScratch(Session* s) {
  ModelSlots& slots = SlotsOf(s->model);
  ASSIGN_OR_RETURN(s->slot, AcquireIdentity(*slots.scratch, slots.identity));
  s->tier = Tier::kScratch;
  return absl::OkStatus();
}

void SessionStore::ReleaseScratch(Session* s) {
  if (s->tier != Tier::kScratch) return;
  SetRetryOutputs(s, {});
  if (s->slot < 0) return;
  SlotsOf(s->model).scratch->Release(s->slot);
  s->slot = -1;
}

absl::StatusOr<Session*> SessionStore::Find(uint32_t tenant, absl::string_view id,
                                            absl::string_view field) const {
  auto it = sessions_.find(Key{tenant, id});
  if (it != sessions_.end()) return *it;
  if (id.empty()) return absl::InvalidArgumentError(absl::StrCat(field, ": empty session id"));
  // Only a valid id is ever echoed back.
  if (absl::Status st = ValidateSessionId(id, field); !st.ok()) return st;
  if (!expired_ids_.empty() && expired_ids_.contains(ExpiredKey(tenant, std::string(id)))) {
    return absl::NotFoundError(absl::StrCat(
        field, ": session '", id, "' expired (idle longer than its idle TTL) and was removed"));
  }
  return absl::NotFoundError(absl::StrCat(field, ": no session '", id, "'"));
}

void SessionStore::Remove(Session* s, bool expired) {
  if (remove_hook_) remove_hook_(s);
  LruRemove(s);
  SetRetryOutputs(s, {});
  if (s->tier == Tier::kPool) {
    PoolOf(s->model).Release(s->slot);
    --pool_used_;
  } else if (s->tier == Tier::kHost) {
    HostOf(s->model).Release(s->slot);
    --host_used_;
  }
  if (expired) {
    ++expired_;
    if (expired_order_.size() >= limits_.expired_ids_remembered) {
      // Forget the oldest expiry, unless its id expired again since (a newer entry).
      const auto& [old_id, old_seq] = expired_order_.front();
      auto it = expired_ids_.find(old_id);
      if (it != expired_ids_.end() && it->second == old_seq) expired_ids_.erase(it);
      expired_order_.pop_front();
    }
    ExpiredKey key(s->tenant, s->id.str());
    expired_ids_[key] = ++expiry_seq_;
    expired_order_.emplace_back(std::move(key), expiry_seq_);
  } else {
    ++deleted_;
  }
  --tenant_sessions_[s->tenant];
  memory_bytes_ -= SessionBytes(*s->model);
  s->state = SessionState::kClosed;
  sessions_.erase(s);
  removed_.push_back(s);
}

// Moves `s` between tiers: takes a slot in `to`, moves the state (in order with later Forwards
// and copies) and copies the last output row, frees the slot in `from`. On error nothing changed.
static absl::Status MoveSlot(Session* s, StatePool& from, StatePool& to, Tier tier) {
  ASSIGN_OR_RETURN(const int32_t slot, to.Acquire());
  if (absl::Status st = to.memory().Move(to.state(slot), from.state(s->slot), to.state_floats());
      !st.ok()) {
    to.Release(slot);
    return st;
  }
  std::memcpy(to.last_output(slot), from.last_output(s->slot),
              static_cast<size_t>(to.output_floats()) * sizeof(float));
  from.Release(s->slot);
  s->slot = slot;
  s->tier = tier;
  return absl::OkStatus();
}

absl::StatusOr<bool> SessionStore::EvictOne() {
  Session* victim = lru_tail_;
  if (victim == nullptr || HostFull()) return false;
  // Out of the LRU before its slot changes (the links are kept by pool slot); back at the tail
  // if the move fails.
  LruRemove(victim);
  if (absl::Status st = MoveSlot(victim, PoolOf(victim->model), HostOf(victim->model), Tier::kHost);
      !st.ok()) {
    LruPushBack(victim);
    return st;
  }
  --pool_used_;
  ++host_used_;
  ++evicted_;
  return true;
}

absl::StatusOr<bool> SessionStore::MakeResident(Session* s) {
  if (s->tier != Tier::kHost) return true;
  if (PoolFull()) {
    ASSIGN_OR_RETURN(const bool evicted, EvictOne());
    if (!evicted) {
      // The host tier is full, so the LRU session cannot move there: swap places with it.
      Session* victim = lru_tail_;
      if (victim == nullptr) return false;
      // Out of the LRU before its slot changes (the links are kept by pool slot); back at the
      // tail if it stays in the pool.
      LruRemove(victim);
      const absl::Status swapped = SwapWithVictim(s, victim);
      if (!swapped.ok()) {
        if (victim->tier == Tier::kPool) LruPushBack(victim);
        return swapped;
      }
      ++evicted_;
      return true;
    }
  }
  RETURN_IF_ERROR(MoveSlot(s, HostOf(s->model), PoolOf(s->model), Tier::kPool));
  ++pool_used_;
  --host_used_;
  return true;
}

absl::Status SessionStore::SwapWithVictim(Session* s, Session* victim) {
  if (victim->model == s->model) {
    // In place, through a staging block: Moves run in order, so tmp <- b, b <- a, a <- tmp
    // is a swap. A failed Move copies nothing; when the last one fails, `s`'s state is only in
    // tmp and is moved back into b, so a failed swap leaves both sessions as they were.
    ModelSlots& slots = SlotsOf(s->model);
    const int64_t n = s->model->state_floats;
    if (slots.swap_block == nullptr) {
      ASSIGN_OR_RETURN(slots.swap_block, slots.memory->Allocate(n, StateMemory::Kind::kStaging));
    }
    float* a = State(victim);
    float* b = State(s);
    RETURN_IF_ERROR(slots.memory->Move(slots.swap_block, b, n));
    RETURN_IF_ERROR(slots.memory->Move(b, a, n));
    if (absl::Status st = slots.memory->Move(a, slots.swap_block, n); !st.ok()) {
      if (absl::Status back = slots.memory->Move(b, slots.swap_block, n); !back.ok()) {
        // The state memory refuses every copy (a device error): `s`'s state is lost.
        std::fprintf(stderr, "aaren: session %s: its state was lost in a failed swap: %s\n",
                     s->id.str().c_str(), std::string(back.message()).c_str());
      }
      return st;
    }
    float* out_a = LastOutput(victim);
    std::swap_ranges(out_a, out_a + s->model->output_dim, LastOutput(s));
    std::swap(victim->slot, s->slot);
    std::swap(victim->tier, s->tier);
  } else {
    // Different buffer sizes: the victim takes a host slot of its own model (that model holds
    // fewer than host_sessions of them, since `s` holds one of another model), then `s` takes
    // a pool slot of its own (its model holds fewer than pool_sessions, since the victim
    // holds one of another). Both tiers' counts are unchanged.
    RETURN_IF_ERROR(MoveSlot(victim, PoolOf(victim->model), HostOf(victim->model), Tier::kHost));
    if (absl::Status st = MoveSlot(s, HostOf(s->model), PoolOf(s->model), Tier::kPool); !st.ok()) {
      // Put the victim back where it was (its pool slot is free again).
      absl::Status back =
          MoveSlot(victim, HostOf(victim->model), PoolOf(victim->model), Tier::kPool);
      if (!back.ok()) {
        // It stays in the host tier, one over its limit until something leaves.
        --pool_used_;
        ++host_used_;
        ++evicted_;
      }
      return st;
    }
  }
  return absl::OkStatus();
}

SessionStore::LruLink& SessionStore::LinkOf(const Session* s) {
  if (s->tier != Tier::kPool || s->slot < 0) {
    // Only a pool-resident session has a link (its slot numbers it): a bug, not an input error.
    std::fprintf(stderr, "aaren: session %s: LRU link of a session without a pool slot (%d)\n",
                 s->id.str().c_str(), s->slot);
    std::abort();
  }
  std::vector<LruLink>& links = SlotsOf(s->model).lru;
  const auto slot = static_cast<size_t>(s->slot);
  if (slot >= links.size()) links.resize(std::max(slot + 1, 2 * links.size()));
  return links[slot];
}

void SessionStore::LruRemove(Session* s) {
  if (!s->in_lru) return;
  LruLink& link = LinkOf(s);
  (link.prev ? LinkOf(link.prev).next : lru_head_) = link.next;
  (link.next ? LinkOf(link.next).prev : lru_tail_) = link.prev;
  link = LruLink{};
  s->in_lru = false;
}

void SessionStore::LruPushFront(Session* s) {
  if (s->in_lru || s->tier != Tier::kPool) return;
  LinkOf(s) = LruLink{nullptr, lru_head_};
  (lru_head_ ? LinkOf(lru_head_).prev : lru_tail_) = s;
  lru_head_ = s;
  s->in_lru = true;
}

void SessionStore::LruPushBack(Session* s) {
  if (s->in_lru || s->tier != Tier::kPool) return;
  LinkOf(s) = LruLink{lru_tail_, nullptr};
  (lru_tail_ ? LinkOf(lru_tail_).next : lru_head_) = s;
  lru_tail_ = s;
  s->in_lru = true;
}

const std::vector<float>* SessionStore::RetryOutputs(const Session* s) const {
  if (!s->has_retry_outputs) return nullptr;
  auto it = retry_outputs_.find(s);
  return it == retry_outputs_.end() ? nullptr : &it->second;
}

void SessionStore::SetRetryOutputs(Session* s, std::vector<float> rows) {
  if (rows.empty()) {
    if (s->has_retry_outputs) retry_outputs_.erase(s);
    s->has_retry_outputs = false;
    return;
  }
  retry_outputs_[s] = std::move(rows);
  s->has_retry_outputs = true;
}

int64_t SessionStore::ExpireIdle(int64_t now_ms) {
  std::vector<Session*> expired;
  for (Session* s : sessions_) {
    if (s->state == SessionState::kIdle && !s->has_work() && !s->in_ready &&
        now_ms - s->last_used_ms > static_cast<int64_t>(s->idle_ttl_s) * 1000) {
      expired.push_back(s);
    }
  }
  for (Session* s : expired) Remove(s, /*expired=*/true);
  return static_cast<int64_t>(expired.size());
}

StoreCounts SessionStore::counts() const {
  StoreCounts c{pool_used_, host_used_, limits_.pool_sessions, limits_.host_sessions};
  for (const auto& [model, slots] : slots_) {
    const int64_t bytes = model->config().state_bytes();
    c.pool_state_bytes += slots.pool->used() * bytes;
    c.host_state_bytes += slots.host->used() * bytes;
  }
  c.created = created_;
  c.evicted = evicted_;
  c.expired = expired_;
  c.deleted = deleted_;
  return c;
}

}  // namespace aaren
