// SPDX-License-Identifier: Apache-2.0
// Engine: durability (the policies are at the top of engine.h). Changes are marked as they
// happen (MarkDirtyLocked, the store's remove hook); CommitDurableLocked turns the marks into
// one StateStore::Commit (engine_commit.cc). Under kAck the replies of a tick wait in held_ for
// that commit, and undo_ keeps, per changed session, what to put back if it fails.
#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/state_bounds.h"
#include "core/status_macros.h"
#include "engine/engine.h"
#include "engine/store/session_record.h"

namespace aaren {

void Engine::MarkDirtyLocked(Session* s) {
  if (!durable() || s->tier == Tier::kScratch) return;
  if (ack() && !undo_.contains(s)) {
    // Made without a pick (create, fork, import): it did not exist before.
    undo_.emplace(s, Undo{std::nullopt, /*made=*/true});
  }
  s->dirty = true;
  dirty_.insert(s);
}

void Engine::CaptureUndoLocked(Session* s) {
  if (!durable() || !ack() || s->tier == Tier::kScratch) return;
  // Kept: the session as it was before this window's first change, or an undo carried from a
  // commit that did not make the session durable (SettleCommitLocked).
  if (undo_.contains(s)) return;
  if (!s->stored) {
    undo_.emplace(s, Undo{std::nullopt, /*made=*/true});
    return;
  }
  absl::StatusOr<SessionRecord> r = RecordLocked(s);
  // A state that cannot be read cannot be put back either: the session is then removed if the
  // commit fails, which keeps "nothing unacknowledged survives" at the cost of the session.
  undo_.emplace(s, Undo{r.ok() ? std::optional<SessionRecord>(*std::move(r)) : std::nullopt});
}

std::string Engine::HoldKeyLocked(const Session* s) const {
  return shared() ? SessionKey(store_.TenantName(s->tenant), s->id.str()) : std::string();
}

Engine::Completion Engine::ReplyLaterLocked(bool changed, std::string key, HeldReply reply) {
  if (changed && durable() && ack()) {
    held_.emplace_back(std::move(key), std::move(reply));
    return [] {};
  }
  return [reply = std::move(reply)]() mutable { reply(absl::OkStatus()); };
}

void Engine::ReplyLocked(bool changed, std::string key, HeldReply reply,
                         std::vector<Completion>& completions) {
  Completion c = ReplyLaterLocked(changed, std::move(key), std::move(reply));
  completions.push_back(std::move(c));
}

absl::Status Engine::AwaitDurableLocked(std::unique_lock<std::mutex>& lock,
                                        const std::string& key) {
  if (!durable() || !ack()) return absl::OkStatus();
  uint64_t window = window_;
  bool counted = false;  // by WaitAgainLocked, for the window carrying the key on
  while (true) {
    commit_wanted_ = true;
    cv_.notify_one();
    if (!counted) {
      WindowOutcome& w =
          waiters_[window];  // (std::map: the entry stays put while others are added)
      ++w.waiting;
      ++w.waiting_keys[key];
    }
    durable_cv_.wait(lock, [&] { return done_window_ >= window; });
    auto it = waiters_.find(window);
    absl::Status st = it->second.failed;
    const bool again = it->second.again.contains(key);
    const uint64_t next = it->second.again_window;
    if (st.ok()) {
      if (auto lost = it->second.lost.find(key); lost != it->second.lost.end()) st = lost->second;
    }
    if (--it->second.waiting_keys[key] == 0) it->second.waiting_keys.erase(key);
    if (--it->second.waiting == 0) waiters_.erase(it);
    if (!again) return st;
    // Not made durable by that commit: the key is carried by `next`, which may be over already
    // (the scheduler can take it before this thread wakes): WaitAgainLocked kept its outcome.
    window = next;
    counted = true;
  }
}

void Engine::WaitAgainLocked(uint64_t window, const absl::flat_hash_set<std::string>& keys) {
  if (keys.empty()) return;
  auto it = waiters_.find(window);
  if (it == waiters_.end()) return;
  it->second.again = keys;
  it->second.again_window = window_;
  WindowOutcome& next = waiters_[window_];  // (window_ > window: `it` stays valid)
  for (const std::string& key : keys) {
    auto n = it->second.waiting_keys.find(key);
    if (n == it->second.waiting_keys.end()) continue;
    next.waiting += n->second;
    next.waiting_keys[key] += n->second;
  }
  if (next.waiting == 0) waiters_.erase(window_);
}

void Engine::OnRemovedLocked(Session* s) {
  if (!durable()) return;
  if (commit_resume_ == s) commit_resume_ = nullptr;  // (a freed Session cannot be looked up)
  dirty_.erase(s);
  undo_.erase(s);
  s->dirty = false;
  if (s->stored) {
    tombstones_.try_emplace(SessionKey(store_.TenantName(s->tenant), s->id.str()),
                            Tombstone{std::nullopt, s->version});
  }
}

void Engine::RemoveFailingWorkLocked(Session* s, const absl::Status& status,
                                     std::vector<Completion>& completions) {
  while (s->has_work()) {
    std::unique_ptr<Work> w = s->Pop();
    pending_tokens_ = std::max<int64_t>(0, pending_tokens_ - (w->length - w->done));
    FailWorkLocked(*w, status, completions);
  }
  if (s->in_ready) {
    ready_.erase(std::remove(ready_.begin(), ready_.end(), s), ready_.end());
    s->in_ready = false;
  }
  store_.Remove(s, /*expired=*/false);  // (files its delete when `stored`)
}

void Engine::ForgetLocked(Session* s, const absl::Status& status,
                          std::vector<Completion>& completions) {
  s->stored = false;  // no delete: the store's record is not this copy's
  RemoveFailingWorkLocked(s, status, completions);
}

absl::Status Engine::TakeStoreCopyLocked(Session* s, const std::optional<std::string>& current,
                                         uint64_t version, bool was_create,
                                         std::vector<Completion>& completions) {
  const std::string id = s->id.str();
  if (was_create && current.has_value()) {
    absl::Status st = absl::AlreadyExistsError(
        absl::StrCat("session_id: session '", id, "' already exists (made on another replica)"));
    ForgetLocked(s, st, completions);
    return st;
  }
  if (!current.has_value()) {
    absl::Status st = absl::NotFoundError(
        absl::StrCat("session_id: session '", id, "' was deleted (on another replica)"));
    ForgetLocked(s, st, completions);
    return st;
  }
  absl::StatusOr<SessionRecord> r = DecodeSessionRecord(*current);
  absl::Status restored = r.ok() ? RestoreRecordLocked(*r, s) : r.status();
  if (!restored.ok()) {
    // Not restorable in place (another model now, say): dropped; the next call loads it.
    absl::Status st = absl::AbortedError(
        absl::StrCat("session_id: session '", id, "' was changed by another replica (",
                     restored.message(), "); this call was not applied: retry it"));
    ForgetLocked(s, st, completions);
    return st;
  }
  s->version = version;
  s->dirty = false;
  dirty_.erase(s);
  undo_.erase(s);
  absl::Status st = absl::AbortedError(absl::StrCat(
      "session_id: session '", id, "' was changed by another replica (it is now at position ",
      r->position, "); this call was not applied: retry it"));
  if (s->has_work() && s->head->kind == Work::Kind::kGenerate && !s->pinned()) {
    FailHeadLocked(s, st, completions);  // its last token is not the session's any more
    ReadyLocked(s);
  } else if (s->has_work() && !s->pinned()) {
    // A head checked against the old position (expected_position, the position limit) but not
    // run yet is checked again against the one taken, and runs from there.
    s->head->position_checked = false;
  }
  return st;
}

absl::Status Engine::LoadFromStore(const SessionRef& ref, uint64_t bound_uid) {
  if (!shared() || ref.id.empty()) return absl::OkStatus();
  const std::string key = SessionKey(ref.tenant, ref.id);
  uint64_t seen_version = 0;
  bool held = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    absl::StatusOr<Session*> s = FindLocked(ref, "session_id");
    if (s.ok()) {
      if (bound_uid != 0 && (*s)->uid == bound_uid) return absl::OkStatus();
      held = true;
      seen_version = (*s)->version;
    } else if (s.status().code() != absl::StatusCode::kNotFound) {
      return absl::OkStatus();  // a bad id: the caller's lookup says so
    } else if (DeleteUnwrittenLocked(key)) {
      // Deleted here, the delete not written yet (kCheckpoint: until the next commit, or while
      // the commit carrying it runs): the record still in the store is that session's, not one
      // to load back.
      return absl::OkStatus();
    }
  }
  const int64_t start_ns = SteadyNowNs();
  absl::StatusOr<std::optional<VersionedValue>> v = options_.state_store->GetVersioned(key);
  if (options_.observer != nullptr) {
    options_.observer->OnStoreLoad(static_cast<double>(SteadyNowNs() - start_ns) * 1e-9,
                                   v.status());
  }
  if (!v.ok()) {
    return absl::UnavailableError(
        absl::StrCat("session_id: session '", ref.id,
                     "' cannot be read from the store: ", v.status().message()));
  }
  std::optional<SessionRecord> record;
  if (v->has_value()) {
    absl::StatusOr<SessionRecord> r = DecodeSessionRecord((*v)->value);
    if (!r.ok()) {
      return absl::DataLossError(absl::StrCat("session_id: the stored record of session '", ref.id,
                                              "' is damaged: ", r.status().message()));
    }
    if (r->tenant != ref.tenant || r->id != ref.id) {
      // (Recover checks the same: a record is only ever loaded as the session its key names.)
      return absl::DataLossError(absl::StrCat("session_id: the record stored for session '", ref.id,
                                              "' names another session"));
    }
    record = *std::move(r);
  }
  // A record past its idle TTL counts as gone, unless this engine's copy is that very version
  // (then the copy's own use, which reads and forks do not always write, decides).
  const bool expired = record.has_value() && IdlePastTtl(*record, NowUnixMs());
  std::vector<Completion> completions;
  absl::Status result;
  std::optional<uint64_t> expired_version;
  {
    std::lock_guard<std::mutex> lock(mu_);
    absl::StatusOr<Session*> found = FindLocked(ref, "session_id");
    Session* s = found.ok() ? *found : nullptr;
    // Act only on what the read saw: a copy this engine changed (or made, or dropped) since then
    // is left to its next commit's compare-and-set.
    const bool unchanged =
        s != nullptr ? held && s->version == seen_version && !s->dirty && !s->committing : !held;
    const bool idle = s == nullptr || (!s->has_work() && s->state == SessionState::kIdle);
    if (!unchanged || !idle) {
      // Nothing to do here.
    } else if (s != nullptr && record.has_value() && s->version == (*v)->version) {
      // Up to date.
    } else if (record.has_value() &&
               IsUnsureWriteLocked(key, std::optional<std::string>((*v)->value))) {
      // This engine's own write, from a commit that reported failure: the copy here (or its
      // absence: removed when an ack commit failed, or deleted since) is the session.
      if (s != nullptr) {
        s->version = (*v)->version;
        s->dirty = true;
        dirty_.insert(s);
        unsure_writes_.erase(key);
      } else {
        expired_version = (*v)->version;  // deleted below, as an expired record is
      }
    } else if (!record.has_value() || expired) {
      // Deleted (or expired) elsewhere: drop a copy that was stored; keep one not written yet.
      if (s != nullptr && s->stored) ForgetLocked(s, absl::OkStatus(), completions);
      // An expired record nobody deletes (its holder restarted) would stay in the store until
      // its TTL, and a create of its id would conflict with it (ALREADY_EXISTS for a session
      // GetSession calls NOT_FOUND): delete it, if it is still that version.
      if (expired) expired_version = (*v)->version;
    } else if (s == nullptr) {
      absl::Status st = RestoreRecordLocked(*record, nullptr);
      if (st.ok()) {
        absl::StatusOr<Session*> made = FindLocked(ref, "session_id");
        if (made.ok()) (*made)->version = (*v)->version;
        if (options_.observer != nullptr) {
          options_.observer->OnSessionLoaded(!record->writer.empty() &&
                                             record->writer != options_.replica_id);
        }
      } else if (st.code() == absl::StatusCode::kNotFound ||
                 st.code() == absl::StatusCode::kFailedPrecondition) {
        result = absl::FailedPreconditionError(
            absl::StrCat("session_id: session '", ref.id, "' is stored for model '", record->model,
                         "', which this server cannot serve: ", st.message()));
      } else {
        result = st;
      }
    } else {
      // Another replica advanced it: take its record in place of this stale copy (or, for a
      // record of another model, drop the copy and load the record afresh).
      absl::Status st = RestoreRecordLocked(*record, s);
      if (!st.ok()) {
        ForgetLocked(s, absl::OkStatus(), completions);
        st = RestoreRecordLocked(*record, nullptr);
        if (st.ok()) s = *FindLocked(ref, "session_id");
      }
      if (st.ok()) {
        s->version = (*v)->version;
        if (options_.observer != nullptr) options_.observer->OnSessionLoaded(true);
      } else {
        result = st;
      }
    }
  }
  for (Completion& c : completions) c();
  if (expired_version.has_value()) {
    // Best effort: a conflict means another replica wrote it since (so it is not expired), and
    // a failure leaves it to its TTL, as before.
    std::vector<StoreWrite> gone = {StoreWrite{key, std::nullopt, *expired_version}};
    std::vector<WriteOutcome> outcomes;
    (void)options_.state_store->CommitVersioned(gone, outcomes);
  }
  return result;
}

absl::StatusOr<SessionRecord> Engine::RecordLocked(const Session* s) {
  const ServedModel& m = *s->model;
  SessionRecord r;
  r.tenant = store_.TenantName(s->tenant);
  r.id = s->id.str();
  r.model = m.name;
  r.config_hash = m.config_hash;
  r.uid = s->uid;
  r.position = s->position;
  r.created_ms = s->created_ms;
  r.last_used_ms = s->last_used_ms;
  r.idle_ttl_s = s->idle_ttl_s;
  if (s->pinned() && !s->head->snapshot.empty()) {
    // Half-way through a chunked append: the state before it, which goes with position.
    r.state = s->head->snapshot;
  } else {
    r.state.resize(static_cast<size_t>(m.state_floats));
    RETURN_IF_ERROR(store_.ReadState(s, r.state.data()));
  }
  const float* last = store_.LastOutput(s);
  r.last_output.assign(last, last + m.output_dim);
  const AppendRecord& a = s->last_append;
  r.retry_position_before = a.position_before;
  r.retry_length = a.length;
  r.retry_fingerprint = a.fingerprint;
  r.retry_mode = static_cast<uint8_t>(a.mode);
  r.retry_value_flops = a.mca.value_flops;
  r.retry_value_flops_exact = a.mca.value_flops_exact;
  if (const std::vector<float>* rows = store_.RetryOutputs(s); rows != nullptr) {
    r.retry_outputs = *rows;
  }
  r.writer = options_.replica_id;
  return r;
}

absl::Status Engine::RestoreRecordLocked(const SessionRecord& r, Session* existing) {
  ASSIGN_OR_RETURN(const ServedModel* m, models_->Get(r.model, "model"));
  if (r.config_hash != m->config_hash) {
    return absl::FailedPreconditionError(absl::StrCat("written for config_hash '", r.config_hash,
                                                      "', model '", m->name, "' is now '",
                                                      m->config_hash, "' (other weights)"));
  }
  if (existing != nullptr && existing->model != m) {
    // (Sizes differ: never restored in place. The id was re-made elsewhere for another model.)
    return absl::FailedPreconditionError(absl::StrCat("the record is for model '", m->name,
                                                      "', the session here serves '",
                                                      existing->model->name, "'"));
  }
  if (static_cast<int64_t>(r.state.size()) != m->state_floats ||
      static_cast<int64_t>(r.last_output.size()) != m->output_dim ||
      r.retry_mode > static_cast<uint8_t>(OutputMode::kNone) || r.position < 0 ||
      r.position > kMaxPosition) {
    return absl::DataLossError("the record's sizes do not match the model");
  }
  // What ImportSession checks of a snapshot: a record a faulty writer left (its checksum only
  // guards against damage after the write) is refused, not run.
  if (absl::Status st = CheckReachableState(r.state.data(), r.position, m->bounds, "state");
      !st.ok()) {
    return absl::DataLossError(absl::StrCat("the record's ", st.message()));
  }
  const auto finite = [](const std::vector<float>& v) {
    return std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
  };
  if (!finite(r.last_output) || !finite(r.retry_outputs)) {
    // (ImportSession refuses these too: a retry would replay them, Generate sample from them.)
    return absl::DataLossError("the record's last output is not finite");
  }
  if (r.created_ms < 0 || r.last_used_ms < 0) {
    return absl::DataLossError("the record's times are negative");
  }
  // A writer whose clock ran ahead (another replica) must not keep the session from expiring
  // until then: its idle time counts from now.
  const int64_t last_used_ms = std::min(r.last_used_ms, NowUnixMs());
  Session* s = existing;
  if (s == nullptr) {
    ASSIGN_OR_RETURN(s, store_.Create(m, store_.InternTenant(r.tenant), r.id, r.idle_ttl_s,
                                      last_used_ms, "session_id"));
  }
  if (absl::Status st = store_.WriteState(s, r.state.data()); !st.ok()) {
    if (existing == nullptr) store_.Remove(s, /*expired=*/false);
    return st;
  }
  std::copy(r.last_output.begin(), r.last_output.end(), store_.LastOutput(s));
  s->uid = r.uid;
  s->position = r.position;
  s->created_ms = r.created_ms;
  s->last_used_ms = last_used_ms;
  s->idle_ttl_s = r.idle_ttl_s;
  AppendRecord& a = s->last_append;
  // The retry record is kept only when a retry could replay it exactly: its length fits 32 bits
  // (a record from before the length was 32 bits may hold a longer append) and a multi-row ALL
  // append comes with exactly its rows (a record without them, or with the wrong count, would
  // replay nothing or the wrong outputs). Otherwise a retry gets ABORTED, as for an append
  // that kept no record.
  const auto mode = static_cast<OutputMode>(r.retry_mode);
  const bool rows_out_of_line = mode == OutputMode::kAll && r.retry_length > 1;
  // It must also end where the session is (a retry's replay checks that too; here it keeps
  // position_before + length from overflowing).
  const bool replayable = r.retry_position_before >= 0 && r.retry_length >= 0 &&
                          r.retry_length <= std::numeric_limits<int32_t>::max() &&
                          r.retry_position_before == r.position - r.retry_length &&
                          (!rows_out_of_line || static_cast<int64_t>(r.retry_outputs.size()) ==
                                                    r.retry_length * m->output_dim);
  a.position_before = replayable ? r.retry_position_before : -1;
  a.length = replayable ? static_cast<int32_t>(r.retry_length) : 0;
  a.fingerprint = r.retry_fingerprint;
  a.mode = mode;
  a.mca = McaCounts{r.retry_value_flops, r.retry_value_flops_exact};
  // Rows that no retry can use are not kept (they would sit in memory until the next append).
  store_.SetRetryOutputs(s,
                         replayable && rows_out_of_line ? r.retry_outputs : std::vector<float>());
  s->stored = true;
  return absl::OkStatus();
}

}  // namespace aaren
