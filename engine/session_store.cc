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

SessionStore::SessionStore(const ModelRegistry& models, StoreLimits limits)
    : limits_(limits) {
  for (const ServedModel* m : models.models()) {
    pools_.emplace(m, std::make_unique<StatePool>(SessionBufferFloats(*m), limits_.pool_sessions));
  }
}

SessionStore::~SessionStore() {
  // The engine drains every queue before it destroys the store; free any leftovers.
  for (auto& [id, s] : sessions_) {
    while (s->has_work()) s->Pop();
  }
}

StatePool& SessionStore::PoolOf(const ServedModel* m) { return *pools_.at(m); }

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
  } else if (host_used_ < limits_.host_sessions) {
    s->tier = Tier::kHost;
    s->host = std::make_unique<float[]>(static_cast<size_t>(SessionBufferFloats(*model)));
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
    --host_used_;
  }
  if (expired) {
    ++expired_;
    if (expired_order_.size() >= limits_.expired_ids_remembered) {
      expired_ids_.erase(expired_order_.front());
      expired_order_.pop_front();
    }
    expired_ids_.insert(s->id);
    expired_order_.push_back(s->id);
  } else {
    ++deleted_;
  }
  s->state = SessionState::kClosed;
  auto it = sessions_.find(absl::string_view(s->id));
  removed_.push_back(std::move(it->second));
  sessions_.erase(it);
}

float* SessionStore::Data(Session* s) {
  return s->tier == Tier::kPool ? PoolOf(s->model).data(s->slot) : s->host.get();
}

bool SessionStore::EvictOne() {
  Session* victim = lru_tail_;
  if (victim == nullptr || host_used_ >= limits_.host_sessions) return false;
  const size_t n = static_cast<size_t>(SessionBufferFloats(*victim->model));
  auto block = std::make_unique<float[]>(n);
  std::memcpy(block.get(), Data(victim), n * sizeof(float));
  LruRemove(victim);
  PoolOf(victim->model).Release(victim->slot);
  --pool_used_;
  victim->slot = -1;
  victim->host = std::move(block);
  victim->tier = Tier::kHost;
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
    float* slot_data = Data(victim);
    const size_t n = static_cast<size_t>(SessionBufferFloats(*victim->model));
    if (victim->model == s->model) {
      std::swap_ranges(slot_data, slot_data + n, s->host.get());
      std::swap(victim->slot, s->slot);
      std::swap(victim->host, s->host);
      std::swap(victim->tier, s->tier);
      ++evicted_;
      return true;
    }
    LruPushFront(victim);  // different buffer sizes: wait for a slot
    return false;
  }
  s->slot = *PoolOf(s->model).Acquire();
  ++pool_used_;
  std::memcpy(PoolOf(s->model).data(s->slot), s->host.get(),
              static_cast<size_t>(SessionBufferFloats(*s->model)) * sizeof(float));
  s->host.reset();
  s->tier = Tier::kPool;
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
  return StoreCounts{pool_used_,     host_used_, limits_.pool_sessions, limits_.host_sessions,
                     created_,       evicted_,   expired_,              deleted_};
}

}  // namespace aaren
