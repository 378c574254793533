// SPDX-License-Identifier: Apache-2.0
// Engine: the commit (engine_durability.cc marks the changes). CommitDurableLocked turns
// dirty_ and tombstones_ into one StateStore batch (capped under kCheckpoint),
// writes it without mu_, then settles the outcome: under kAck the held replies are released, or
// the window's sessions are put back when it failed; on shared stores, the writes that lost
// their compare-and-set take the store's copy.
#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "engine/engine.h"
#include "engine/store/session_record.h"

namespace aaren {
namespace {

// Identifies a record this engine sent (within this process only).
size_t RecordHash(absl::string_view bytes) { return absl::Hash<absl::string_view>{}(bytes); }

// Shared stores: a record outlives its session's idle TTL by this much in the store (the
// replica holding it deletes it at expiry; the store's own expiry is for records nobody holds).
constexpr int64_t kStoreTtlSlackMs = 60'000;

absl::Status AsUnavailable(const absl::Status& st, bool shared) {
  if (shared) {
    // A shared store may have applied a batch whose answer was lost (timeout, connection
    // dropped): the copy here is put back and the store's compare-and-set settles which state
    // wins, but the caller cannot be told "not made".
    return absl::UnavailableError(absl::StrCat(
        st.message(),
        " (the change may not have been made; retry with expected_position to apply it exactly "
        "once)"));
  }
  return absl::UnavailableError(
      absl::StrCat(st.message(), " (the change was not made; retry when the store is back)"));
}

}  // namespace

bool Engine::IsUnsureWriteLocked(const std::string& key,
                                 const std::optional<std::string>& current) {
  auto it = unsure_writes_.find(key);
  if (it == unsure_writes_.end()) return false;
  return current.has_value() &&
         std::count(it->second.begin(), it->second.end(), RecordHash(*current)) > 0;
}

bool Engine::CommitDueLocked(int64_t now_ms) const {
  if (!durable()) return false;
  const bool pending = !dirty_.empty() || !tombstones_.empty() || !held_.empty();
  if (ack()) return pending || commit_wanted_;
  return commit_wanted_ || (pending && now_ms >= next_checkpoint_ms_);
}

bool Engine::DeleteUnwrittenLocked(const std::string& key) const {
  return tombstones_.contains(key) ||
         (checkpoint_job_ != nullptr && checkpoint_job_->tombstones.contains(key)) ||
         (inline_job_ != nullptr && inline_job_->tombstones.contains(key));
}

bool Engine::CommitDurableLocked(std::unique_lock<std::mutex>& lock, bool force) {
  std::unique_ptr<CommitJob> job = CaptureCommitLocked(force);
  if (job == nullptr) return false;
  inline_job_ = job.get();
  lock.unlock();
  WriteCommit(*job);
  lock.lock();
  inline_job_ = nullptr;
  return SettleCommitLocked(lock, *job);
}

bool Engine::CommitOrStartLocked(std::unique_lock<std::mutex>& lock, bool force) {
  if (!durable()) return false;
  if (ack() || stopping_) {
    SettleCheckpointLocked(lock, /*wait=*/true);  // (commits land in order)
    return CommitDurableLocked(lock, force);
  }
  if (checkpoint_job_ != nullptr) return false;  // one at a time
  checkpoint_job_ = CaptureCommitLocked(force);
  if (checkpoint_job_ == nullptr) return false;
  checkpoint_written_ = false;
  commit_thread_cv_.notify_one();
  return false;
}

void Engine::SettleCheckpointLocked(std::unique_lock<std::mutex>& lock, bool wait) {
  if (checkpoint_job_ == nullptr) return;
  if (wait) cv_.wait(lock, [this] { return checkpoint_written_; });
  if (!checkpoint_written_) return;
  std::unique_ptr<CommitJob> job = std::move(checkpoint_job_);
  checkpoint_written_ = false;
  SettleCommitLocked(lock, *job);  // (a capped one has set commit_wanted_ for the next)
  // Now, before the next one starts: back-to-back checkpoints (capped ones, or a store slower
  // than the interval) would otherwise keep removed sessions from ever being freed.
  store_.FreeRemoved();
}

void Engine::FreeRemovedLocked() {
  if (checkpoint_job_ == nullptr) store_.FreeRemoved();
}

void Engine::CommitThreadLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    commit_thread_cv_.wait(lock, [this] {
      return commit_thread_stop_ || (checkpoint_job_ != nullptr && !checkpoint_written_);
    });
    if (checkpoint_job_ == nullptr || checkpoint_written_) return;  // stopping, nothing left
    CommitJob* job = checkpoint_job_.get();  // (only the scheduler clears it, once written)
    lock.unlock();
    WriteCommit(*job);
    lock.lock();
    checkpoint_written_ = true;
    cv_.notify_all();  // the scheduler settles it
  }
}

std::unique_ptr<Engine::CommitJob> Engine::CaptureCommitLocked(bool force) {
  if (!durable()) return nullptr;
  const int64_t now = NowUnixMs();
  if (!force && !CommitDueLocked(now)) return nullptr;
  next_checkpoint_ms_ = now + options_.checkpoint_interval_ms;
  commit_wanted_ = false;
  auto job = std::make_unique<CommitJob>();
  const uint64_t window = job->window = window_++;
  if (dirty_.empty() && tombstones_.empty() && held_.empty()) {
    done_window_ = window;
    durable_cv_.notify_all();
    return nullptr;
  }

  // The batch: deletes first, then the changed sessions' records (a key deleted and made again
  // in one window ends up put). Capped without kAck (kMaxCheckpointWrites, kMaxCheckpointBytes):
  // taking the batch holds the ticks back, so a backlog is taken a bounded piece at a time. What is
  // left stays marked for the next commit, which starts where this one stopped (each change waits
  // at most one pass over the backlog), and no record goes ahead of a delete left behind (a delete
  // must not land after the put of a session made again under its key).
  const bool capped = !ack();
  const size_t max_writes = capped ? kMaxCheckpointWrites : SIZE_MAX;
  bool& more = job->more;
  absl::flat_hash_map<std::string, Tombstone>& tombstones = job->tombstones;
  if (tombstones_.size() <= max_writes) {
    tombstones = std::move(tombstones_);
    tombstones_.clear();
  } else {
    auto it = tombstones_.find(tombstone_resume_);
    if (it == tombstones_.end()) it = tombstones_.begin();
    while (tombstones.size() < max_writes) {
      tombstones.emplace(it->first, std::move(it->second));
      tombstones_.erase(it++);
      if (it == tombstones_.end()) it = tombstones_.begin();
    }
    tombstone_resume_ = it->first;  // (tombstones_ is not empty: it held more than the cap)
    more = true;
  }
  std::vector<StoreWrite>& batch = job->batch;
  batch.reserve(std::min(tombstones.size() + dirty_.size(), max_writes));
  for (const auto& [key, t] : tombstones) {
    batch.push_back(StoreWrite{key, std::nullopt, shared() ? t.version : kAnyVersion});
  }
  job->n_tombstones = batch.size();
  std::vector<Session*>& written = job->written;
  written.reserve(std::min(dirty_.size(), max_writes));
  // kAck: sessions changed in this window (they have an undo) whose state could not be read, and
  // the first such error. Their replies are held with the others' (their keys cannot be told
  // apart on a local store), so the window fails as a whole without calling the store, and each
  // of them is put back too. One left dirty by an earlier window (no undo: nothing of this
  // window's rides on it) only stays dirty, so that it does not fail every later window.
  std::vector<Session*>& unreadable = job->unreadable;
  absl::Status& read_error = job->read_error;
  int64_t record_bytes = 0;
  // Adds s's record; false when the batch is full without it.
  auto add = [&](Session* s) {
    if (batch.size() >= max_writes) return false;
    // Shared stores: a session half-way through a chunked append is written when it ends (a
    // lost compare-and-set then meets a finished append, never a running one).
    if (shared() && s->pinned()) {
      if (ack()) job->deferred.insert(HoldKeyLocked(s));
      return true;
    }
    absl::StatusOr<SessionRecord> r = RecordLocked(s);
    if (!r.ok()) {
      // Its state could not be read: stays dirty for the next commit (kCheckpoint: written then;
      // the drain's UnwrittenChanges counts it).
      if (ack() && undo_.contains(s)) {
        if (read_error.ok()) read_error = r.status();
        unreadable.push_back(s);
      }
      return true;
    }
    if (ack() && s->pinned()) {
      // (Local stores.) Written half-way through a chunked append, as it was before the
      // append: once this lands, a create of it is acknowledged, and the append's undo becomes
      // this record instead of "remove it" (SettleCommitLocked).
      if (auto u = undo_.find(s); u != undo_.end() && u->second.made && !u->second.made_failed) {
        job->made_pinned.emplace_back(s, *r);
      }
    }
    StoreWrite w{SessionKey(r->tenant, r->id), EncodeSessionRecord(*r)};
    const auto bytes = static_cast<int64_t>(w.value->size());
    if (capped && record_bytes > 0 && record_bytes + bytes > kMaxCheckpointBytes) return false;
    if (shared()) {
      w.expect = s->version;  // 0 (absent) for a session never written
      w.ttl_ms = static_cast<int64_t>(s->idle_ttl_s) * 1000 + kStoreTtlSlackMs;
    }
    record_bytes += bytes;
    batch.push_back(std::move(w));
    s->stored = true;  // a removal from now on writes a delete
    s->dirty = false;
    s->committing = true;
    written.push_back(s);
    return true;
  };
  if (!more) {
    auto start = dirty_.begin();
    if (commit_resume_ != nullptr) {
      if (auto it = dirty_.find(commit_resume_); it != dirty_.end()) start = it;
      commit_resume_ = nullptr;
    }
    auto add_from = [&](absl::flat_hash_set<Session*>::iterator it,
                        absl::flat_hash_set<Session*>::iterator end) {
      for (; it != end; ++it) {
        if (add(*it)) continue;
        more = true;
        commit_resume_ = *it;
        return;
      }
    };
    add_from(start, dirty_.end());
    if (!more) add_from(dirty_.begin(), start);
  }
  // Sessions whose state could not be read stay marked for the next commit.
  for (Session* s : written) dirty_.erase(s);
  // kAck: the undo of every session of this window; pinned ones keep theirs (their append is
  // still running, and its undo is the state before it).
  UndoMap& undo = job->undo;
  std::vector<Session*>& window_sessions = job->window_sessions;
  window_sessions = written;
  window_sessions.insert(window_sessions.end(), unreadable.begin(), unreadable.end());
  for (Session* s : window_sessions) {
    auto it = undo_.find(s);
    if (it == undo_.end()) continue;
    if (s->pinned()) {
      // Written half-way through a chunked append (marked by something else: a fork of it, a
      // rewrite after a failed commit): the append still needs its undo when it ends.
      undo.emplace(s, it->second);
      continue;
    }
    undo.emplace(s, std::move(it->second));
    undo_.erase(it);
  }
  for (auto it = undo_.begin(); it != undo_.end();) {
    if (it->first->pinned()) {
      ++it;
    } else {
      undo_.erase(it++);
    }
  }
  job->held = std::move(held_);
  held_.clear();
  if (!job->deferred.empty()) {
    // kAck, shared stores: replies to calls on a session this commit does not write (half-way
    // through a chunked append, e.g. its create) wait for the commit that does.
    std::vector<std::pair<std::string, HeldReply>>& held = job->held;
    auto kept = std::stable_partition(
        held.begin(), held.end(), [&](const auto& h) { return !job->deferred.contains(h.first); });
    std::move(kept, held.end(), std::back_inserter(held_));
    held.erase(kept, held.end());
  }
  if (batch.empty() && job->held.empty() && unreadable.empty()) {
    // Only sessions half-way through a chunked append (written when it ends) or whose state
    // could not be read were marked: nothing to send (a store round trip saved).
    WaitAgainLocked(window, job->deferred);
    done_window_ = window;
    durable_cv_.notify_all();
    return nullptr;
  }
  for (const StoreWrite& w : batch) {
    job->bytes += w.value ? static_cast<int64_t>(w.value->size()) : 0;
  }
  return job;
}

void Engine::WriteCommit(CommitJob& job) {
  const std::vector<StoreWrite>& batch = job.batch;
  const std::vector<Session*>& unreadable = job.unreadable;
  const int64_t start_ns = SteadyNowNs();
  std::vector<WriteOutcome>& outcomes = job.outcomes;
  absl::Status& st = job.status;
  // kAck: a change whose state cannot be read cannot be made durable, and its reply is not told
  // apart from the window's others: the window fails like a commit that did not apply, and the
  // store (healthy) is not called.
  const bool store_called = job.store_called = unreadable.empty();
  if (store_called) {
    st = shared() ? options_.state_store->CommitVersioned(batch, outcomes)
                  : options_.state_store->Commit(batch);
    const double seconds = static_cast<double>(SteadyNowNs() - start_ns) * 1e-9;
    if (!st.ok() && st.code() != absl::StatusCode::kUnavailable)
      st = absl::UnavailableError(st.message());
    if (options_.observer != nullptr) {
      options_.observer->OnStoreCommit(static_cast<int64_t>(batch.size()), job.bytes, seconds, st);
    }
  } else {
    st = absl::UnavailableError(
        absl::StrCat(unreadable.size(),
                     " session state(s) changed by this commit's calls could not be read "
                     "to store them: ",
                     job.read_error.message()));
  }
}

bool Engine::SettleCommitLocked(std::unique_lock<std::mutex>& lock, CommitJob& job) {
  const uint64_t window = job.window;
  const std::vector<StoreWrite>& batch = job.batch;
  const size_t n_tombstones = job.n_tombstones;
  const std::vector<Session*>& written = job.written;
  const std::vector<Session*>& window_sessions = job.window_sessions;
  UndoMap& undo = job.undo;
  absl::flat_hash_map<std::string, Tombstone>& tombstones = job.tombstones;
  const std::vector<WriteOutcome>& outcomes = job.outcomes;
  const absl::Status& st = job.status;
  const bool store_called = job.store_called;
  std::vector<Completion> completions;
  for (Session* s : written) s->committing = false;

  if (!st.ok()) {
    const absl::Status reply_status =
        store_called ? AsUnavailable(st, shared())
                     : absl::UnavailableError(absl::StrCat(st.message(), " (nothing was made)"));
    if (shared() && store_called) {
      // Whether the batch applied is unknown: remember what it wrote (see unsure_writes_; under
      // kAck only the creates, whose sessions are removed below and deleted from the store).
      for (size_t i = n_tombstones; i < batch.size(); ++i) {
        if (ack()) {
          auto u = undo.find(written[i - n_tombstones]);
          if (u == undo.end() || !u->second.made) continue;
        }
        std::vector<size_t>& sent = unsure_writes_[batch[i].key];
        const size_t h = RecordHash(*batch[i].value);
        if (std::count(sent.begin(), sent.end(), h) > 0) continue;
        if (sent.size() == kMaxUnsureWrites) sent.erase(sent.begin());  // the oldest goes
        sent.push_back(h);
      }
    }
    // Marked for the next commit without an undo of "remove it" (MarkDirtyLocked's default for
    // a session made outside a pick), which a second failure would otherwise act on.
    auto redirty = [this](Session* s) {
      s->dirty = true;
      dirty_.insert(s);
    };
    if (ack()) {
      // Put every session of the window back as it was before its calls: made ones removed,
      // changed ones restored, deleted ones made again.
      for (Session* s : window_sessions) {
        if (s->state == SessionState::kClosed) continue;
        if (s->pinned()) {
          // Its append is still running on its state: never put back in place (that would run
          // the rest of the append on the wrong state). What this commit carried for it (the
          // record as before the append) is written again next time.
          redirty(s);
          if (auto u = undo_.find(s); u != undo_.end() && u->second.made) {
            u->second.made_failed = true;  // (made by a call answered with this failure)
          }
          continue;
        }
        auto it = undo.find(s);
        if (it == undo.end()) {
          redirty(s);  // nothing to put back: written again next time
          continue;
        }
        // A failed commit may still have reached the store (RocksDB: its WAL written, then the
        // sync failed; Redis: it ran the batch, then its reply was lost), so what is put back
        // here is written again at the next commit (a made session as a delete; on a shared
        // store one expecting the version it was last written at, "absent" if never, which,
        // where the create did land, conflicts with this engine's own write, unsure_writes_,
        // and is filed again to delete it: no replica serves a session whose create was
        // answered UNAVAILABLE). A changed session on a
        // shared store is not: its stored record may be the applied change, which another
        // replica may have served since, and compare-and-set settles it.
        // Not called: nothing reached it, and a session whose undo could not be read keeps its
        // stored record (the last acknowledged state; a replica loads it back, a local store
        // recovers it at restart) instead of a delete.
        const Undo& u = it->second;
        // (A made session with a version took it from a record of its id that was this
        // engine's own earlier write: that record is deleted too, store called or not.)
        s->stored = u.record.has_value() ||
                    (u.made && (store_called || s->version != kAbsentVersion)) ||
                    (store_called && !shared());
        if (!u.record.has_value()) {
          RemoveFailingWorkLocked(s, reply_status, completions);
          continue;
        }
        if (!RestoreRecordLocked(*u.record, s).ok()) {
          redirty(s);  // could not be put back in place: written again as it is now
          continue;
        }
        if (!shared()) redirty(s);
        if (s->has_work() && s->head->kind == Work::Kind::kGenerate && !s->pinned() &&
            s->head->generate->last_window == window) {
          // The token this commit carried is undone; so is the Generate. (One that applied
          // nothing in this window goes on.)
          FailHeadLocked(s, reply_status, completions);
          ReadyLocked(s);
        }
      }
      for (auto& [key, t] : tombstones) {
        if (t.undo.has_value()) {
          absl::Status restored = RestoreRecordLocked(*t.undo, nullptr);
          if (restored.ok()) {
            absl::StatusOr<Session*> back =
                store_.Find(store_.InternTenant(t.undo->tenant), t.undo->id, "session_id");
            if (back.ok()) {
              (*back)->version = t.version;
              if (!shared()) redirty(*back);  // (the failed delete may have reached the store)
            }
          } else {
            tombstones_.insert_or_assign(key, Tombstone{std::nullopt, t.version});
          }
        } else {
          // An expiry or cleanup: deleted next time. Over a delete filed above for a session
          // this batch made under the key ("absent" expected, which holds only after this
          // delete): this one expects what the store held before the batch, and where the
          // batch did land it meets this engine's own write and is filed again.
          tombstones_.insert_or_assign(key, Tombstone{std::nullopt, t.version});
        }
      }
    } else {
      // kCheckpoint: nothing was promised; everything is written again next time.
      for (Session* s : written) {
        if (s->state != SessionState::kClosed) redirty(s);
      }
      // A delete filed while this commit was in flight (the session its batch made again under
      // the key, deleted meanwhile) expects that session's record, which did not land either:
      // this one's expectation holds (were the batch applied after all, unsure_writes_ knows it).
      for (auto& [key, t] : tombstones) {
        tombstones_.insert_or_assign(key, Tombstone{std::nullopt, t.version});
      }
    }
    if (auto it = waiters_.find(window); it != waiters_.end()) it->second.failed = reply_status;
    WaitAgainLocked(window, job.deferred);
    for (auto& [key, h] : job.held) {
      completions.push_back([h = std::move(h), reply_status]() mutable { h(reply_status); });
    }
  } else {
    for (auto& [s, record] : job.made_pinned) {
      if (s->state == SessionState::kClosed) continue;
      auto u = undo_.find(s);
      if (u != undo_.end() && u->second.made) u->second = Undo{std::move(record)};
    }
    // Shared stores: the new versions, and the writes that lost their compare-and-set.
    absl::flat_hash_map<std::string, absl::Status> lost;
    // A conflict was this engine's own earlier write: written again at the next commit.
    bool write_again = false;
    // kAck: the keys so written again, whose replies wait for the next commit.
    absl::flat_hash_set<std::string> again;
    if (shared() && outcomes.size() == batch.size()) {
      for (size_t i = 0; i < n_tombstones; ++i) {
        const bool own = IsUnsureWriteLocked(batch[i].key, outcomes[i].current);
        if (!outcomes[i].conflict) continue;
        if (!outcomes[i].current.has_value()) continue;  // already gone: the delete holds
        if (own) {
          // This engine's own write, applied by a commit that reported failure: delete that.
          // (Over one filed meanwhile: the version seen now is the record's to delete.)
          tombstones_.insert_or_assign(batch[i].key, Tombstone{std::nullopt, outcomes[i].version});
          write_again = true;
          continue;
        }
        // The session changed elsewhere after this copy was deleted: the delete did not apply
        // (the record is the other replica's now; a later call loads it).
        lost.insert_or_assign(
            batch[i].key, absl::AbortedError(
                              absl::StrCat("session_id: the session was changed by another replica "
                                           "before this delete; it was not deleted: retry it")));
      }
      for (size_t j = 0; j < written.size(); ++j) {
        Session* s = written[j];
        const WriteOutcome& o = outcomes[n_tombstones + j];
        const bool own = IsUnsureWriteLocked(batch[n_tombstones + j].key, o.current);
        if (s->state == SessionState::kClosed) {
          // Removed while this commit was in flight (kCheckpoint's run beside the ticks): its
          // delete was filed expecting the version before this write, and must expect this
          // write's, or it would be taken for another replica's change and not applied.
          if (!o.conflict) {
            auto t = tombstones_.find(batch[n_tombstones + j].key);
            if (t != tombstones_.end() && t->second.version == batch[n_tombstones + j].expect) {
              t->second.version = o.version;
            }
          }
          continue;
        }
        if (!o.conflict) {
          s->version = o.version;
          continue;
        }
        if (s->pinned() && !own) {
          // A chunked append that began after this batch was taken runs on the copy: it is not
          // replaced under it. Still marked with the version it had, its next write (once the
          // append ends) conflicts again and takes the store's copy then.
          s->dirty = true;
          dirty_.insert(s);
          write_again = true;
          continue;
        }
        if (own) {
          // Not another replica's change: this copy (kCheckpoint: it holds what that commit
          // carried and what was acknowledged since; kAck: a session made again under the id of
          // one whose create failed) is still the session. Take the version and write it again,
          // over that record: a delete of the key filed for an earlier session (above, meeting
          // the same record) is dropped, so no commit can delete the key ahead of this write
          // (a capped batch, or this session pinned in a chunked append, would split them).
          const std::string& key = batch[n_tombstones + j].key;
          tombstones_.erase(key);
          s->version = o.version;
          s->dirty = true;
          dirty_.insert(s);
          write_again = true;
          if (ack()) {
            // Nothing of it is durable yet: its replies and undo go on to that commit.
            again.insert(key);
            if (auto u = undo.find(s); u != undo.end()) undo_.try_emplace(s, std::move(u->second));
          }
          continue;
        }
        // (kAck: a create carried on over its own earlier record expects that record's version.)
        auto made = undo.find(s);
        const bool was_create = batch[n_tombstones + j].expect == kAbsentVersion ||
                                (made != undo.end() && made->second.made);
        lost.insert_or_assign(
            batch[n_tombstones + j].key,
            TakeStoreCopyLocked(s, o.current, o.version, was_create, completions));
      }
      for (const StoreWrite& w : batch) unsure_writes_.erase(w.key);  // resolved, either way
      if (!lost.empty()) {
        if (options_.observer != nullptr) {
          options_.observer->OnStoreConflicts(static_cast<int64_t>(lost.size()));
        }
        if (auto it = waiters_.find(window); it != waiters_.end()) it->second.lost = lost;
      }
    }
    again.insert(job.deferred.begin(), job.deferred.end());
    WaitAgainLocked(window, again);
    if (write_again) commit_wanted_ = true;
    for (auto& [key, h] : job.held) {
      if (again.contains(key)) {
        held_.emplace_back(key, std::move(h));  // (the next commit's, with the session's write)
        continue;
      }
      absl::Status reply = absl::OkStatus();
      if (!lost.empty()) {
        if (auto it = lost.find(key); it != lost.end()) reply = it->second;
      }
      completions.push_back([h = std::move(h), reply]() mutable { h(reply); });
    }
  }
  last_commit_error_ = st;
  // Capped, or records to write again: the next commit at once (the scheduler's wait ends on
  // commit_wanted_; a drain goes on while this is true).
  const bool again = st.ok() && (job.more || commit_wanted_);
  if (again) commit_wanted_ = true;
  done_window_ = window;
  durable_cv_.notify_all();
  if (!completions.empty()) {
    lock.unlock();
    for (Completion& c : completions) c();
    lock.lock();
  }
  return again;
}

}  // namespace aaren
