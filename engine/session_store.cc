// SPDX-License-Identifier: Apache-2.0
#include "engine/session_store.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/aaren_state.h"
#include "engine/session_id.h"

namespace aaren {

void Session::SetState(SessionState next) {
  const bool ok = (state == SessionState::kIdle && next != SessionState::kIdle) ||
                  (state == SessionState::kRunning && next == SessionState::kIdle);
  if (!ok) {
    std::fprintf(stderr, "aaren: session %s: illegal state change %d -> %d\n", id.c_str(),
                 static_cast<int>(state), static_cast<int>(next));
    std::abort();
  }
  state = next;
}

SessionStore::SessionStore(const ModelRegistry& models, StoreLimits limits) : limits_(limits) {
  for (const ServedModel* m : models.models()) {
    ModelSlots& slots = slots_[m];
    slots.pool = std::make_unique<StatePool>(SessionBufferFloats(*m), limits_.pool_sessions);
    slots.host = std::make_unique<StatePool>(SessionBufferFloats(*m), limits_.host_sessions);
  }
}

SessionStore::~SessionStore() {
  // The engine drains every queue before it destroys the store; free any leftovers.
  for (auto& [id, s] : sessions_) {
    while (s->has_work()) s->Pop();
  }
}

absl::StatusOr<Session*> SessionStore::Create(const ServedModel* model, absl::string_view id,
                                              uint32_t idle_ttl_s, int64_t now_ms,
                                              absl::string_view id_field) {
  std::string new_id;
  if (id.empty()) {
    new_id = NewSessionId();
  } else {
    if (absl::Status st = ValidateSessionId(id, id_field); !st.ok()) return st;
    if (sessions_.contains(id)) {
      return absl::AlreadyExistsError(
          absl::StrCat(id_field, ": session '", id, "' already exists"));
    }
    new_id = std::string(id);
  }
  // Pool first (evicting the LRU idle session if needed), else the host tier.
  if (PoolFull()) EvictOne();
  auto s = std::make_unique<Session>();
  if (!PoolFull()) {
    s->tier = Tier::kPool;
    s->slot = *PoolOf(model).Acquire();
    ++pool_used_;
  } else if (!HostFull()) {
    s->tier = Tier::kHost;
    s->slot = *HostOf(model).Acquire();
    ++host_used_;
  } else {
    return absl::ResourceExhaustedError(absl::StrCat(
        "sessions: every state tier is full (pool ", pool_used_, "/", limits_.pool_sessions,
        " busy, host tier ", host_used_, "/", limits_.host_sessions,
        "); delete sessions or raise --max_sessions / --host_tier_sessions"));
  }
  s->id = std::move(new_id);
  s->model = model;
  s->idle_ttl_s = idle_ttl_s != 0 ? idle_ttl_s : limits_.default_idle_ttl_s;
  s->created_ms = s->last_used_ms = now_ms;
  float* data = Data(s.get());
  ResetState(data, model->layout);
  std::fill(data + model->state_floats, data + SessionBufferFloats(*model), 0.0f);
  Session* raw = s.get();
  expired_ids_.erase(raw->id);
  sessions_.emplace(absl::string_view(raw->id), std::move(s));
  if (raw->tier == Tier::kPool) LruPushFront(raw);
  ++created_;
  return raw;
}

absl::StatusOr<Session*> SessionStore::Find(absl::string_view id, absl::string_view field) const {
  auto it = sessions_.find(id);
  if (it != sessions_.end()) return it->second.get();
  if (id.empty()) return absl::InvalidArgumentError(absl::StrCat(field, ": empty session id"));
  if (expired_ids_.contains(id)) {
    return absl::NotFoundError(absl::StrCat(
        field, ": session '", id, "' expired (idle longer than its idle TTL) and was removed"));
  }
  return absl::NotFoundError(absl::StrCat(field, ": no session '", id, "'"));
}

void SessionStore::Remove(Session* s, bool expired) {
  LruRemove(s);
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
    expired_ids_[s->id] = ++expiry_seq_;
    expired_order_.emplace_back(s->id, expiry_seq_);
  } else {
    ++deleted_;
  }
  s->state = SessionState::kClosed;
  auto it = sessions_.find(absl::string_view(s->id));
  removed_.push_back(std::move(it->second));
  sessions_.erase(it);
}

float* SessionStore::Data(Session* s) {
  switch (s->tier) {
    case Tier::kPool:
      return PoolOf(s->model).data(s->slot);
    case Tier::kHost:
      return HostOf(s->model).data(s->slot);
    case Tier::kScratch:
      break;
  }
  return s->scratch.get();
}

// Moves `s` between tiers: takes a slot in `to`, copies the buffer, frees the slot in `from`.
static void MoveSlot(Session* s, StatePool& from, StatePool& to, Tier tier) {
  const int32_t slot = *to.Acquire();
  std::memcpy(to.data(slot), from.data(s->slot),
              static_cast<size_t>(SessionBufferFloats(*s->model)) * sizeof(float));
  from.Release(s->slot);
  s->slot = slot;
  s->tier = tier;
}

bool SessionStore::EvictOne() {
  Session* victim = lru_tail_;
  if (victim == nullptr || HostFull()) return false;
  LruRemove(victim);
  MoveSlot(victim, PoolOf(victim->model), HostOf(victim->model), Tier::kHost);
  --pool_used_;
  ++host_used_;
  ++evicted_;
  return true;
}

bool SessionStore::MakeResident(Session* s) {
  if (s->tier != Tier::kHost) return true;
  if (PoolFull() && !EvictOne()) {
    // The host tier is full, so the LRU session cannot move there: swap places with it.
    Session* victim = lru_tail_;
    if (victim == nullptr) return false;
    LruRemove(victim);
    if (victim->model == s->model) {
      float* a = Data(victim);
      float* b = Data(s);
      std::swap_ranges(a, a + SessionBufferFloats(*s->model), b);
      std::swap(victim->slot, s->slot);
      std::swap(victim->tier, s->tier);
    } else {
      // Different buffer sizes: the victim takes a host slot of its own model (that model holds
      // fewer than host_sessions of them, since `s` holds one of another model), then `s` takes
      // the pool slot it freed. Both tiers' counts are unchanged.
      MoveSlot(victim, PoolOf(victim->model), HostOf(victim->model), Tier::kHost);
      MoveSlot(s, HostOf(s->model), PoolOf(s->model), Tier::kPool);
    }
    ++evicted_;
    return true;
  }
  MoveSlot(s, HostOf(s->model), PoolOf(s->model), Tier::kPool);
  ++pool_used_;
  --host_used_;
  return true;
}

void SessionStore::LruRemove(Session* s) {
  if (!s->in_lru) return;
  (s->lru_prev ? s->lru_prev->lru_next : lru_head_) = s->lru_next;
  (s->lru_next ? s->lru_next->lru_prev : lru_tail_) = s->lru_prev;
  s->lru_prev = s->lru_next = nullptr;
  s->in_lru = false;
}

void SessionStore::LruPushFront(Session* s) {
  if (s->in_lru || s->tier != Tier::kPool) return;
  s->lru_prev = nullptr;
  s->lru_next = lru_head_;
  (lru_head_ ? lru_head_->lru_prev : lru_tail_) = s;
  lru_head_ = s;
  s->in_lru = true;
}

int64_t SessionStore::ExpireIdle(int64_t now_ms) {
  std::vector<Session*> expired;
  for (auto& [id, s] : sessions_) {
    if (s->state == SessionState::kIdle && !s->has_work() && !s->in_ready &&
        now_ms - s->last_used_ms > static_cast<int64_t>(s->idle_ttl_s) * 1000) {
      expired.push_back(s.get());
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
