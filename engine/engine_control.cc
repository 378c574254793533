// SPDX-License-Identifier: Apache-2.0
// Engine: the control operations, queued on a session like its appends and run under the lock
// when they reach the head of its queue: DeleteSession, ForkSession, ExportSession; and
// ImportSession (a new session from a snapshot, checked first).
#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/state_bounds.h"
#include "core/status_macros.h"
#include "engine/engine.h"
#include "engine/input_validation.h"

namespace aaren {

void Engine::Control(const SessionRef& ref, absl::string_view field,
                     absl::AnyInvocable<Completion(Session*)> op,
                     absl::AnyInvocable<void(absl::Status)> on_error,
                     std::shared_ptr<CancelFlag> cancel, uint64_t bound_uid) {
  if (absl::Status st = CheckBeforeStoreRead(); !st.ok()) return on_error(st);
  if (absl::Status st = LoadFromStore(ref, bound_uid); !st.ok()) return on_error(st);
  std::unique_lock<std::mutex> lock(mu_);
  absl::Status st = CheckAcceptingLocked();
  auto s = FindLocked(ref, field);
  if (st.ok() && !s.ok()) st = s.status();
  if (!st.ok()) {
    lock.unlock();
    return on_error(st);
  }
  auto w = std::make_unique<Work>();
  w->kind = Work::Kind::kControl;
  w->control = std::move(op);
  w->cancel = std::move(cancel);
  // A control op fails only by its own logic; a pending-work failure (session deleted first)
  // reaches on_error through on_done.
  w->on_done = [on_error = std::move(on_error)](absl::StatusOr<AppendResult> r) mutable {
    on_error(r.status());
  };
  EnqueueLocked(*s, std::move(w));
}

void Engine::DeleteSession(const SessionRef& ref, absl::AnyInvocable<void(absl::Status)> done,
                           std::shared_ptr<CancelFlag> cancel, uint64_t expected_uid) {
  {
    // A Generate at the head of the queue would hold the delete back for up to
    // max_generate_tokens steps (or forever, for a client that stopped reading): end it at its
    // next token instead.
    // Every Generate queued now is ahead of the delete, so each one is ended the same way.
    std::lock_guard<std::mutex> lock(mu_);
    auto s = FindLocked(ref, "session_id");
    if (s.ok() && (expected_uid == 0 || (*s)->uid == expected_uid)) {
      for (Work* w = (*s)->head; w != nullptr; w = w->next) {
        if (w->kind != Work::Kind::kGenerate) continue;
        GenerateProgress& g = *w->generate;
        g.stop_requested = true;
        if (g.flow != nullptr && g.flow->parked != nullptr) {
          g.flow->parked = nullptr;
          ReadyLocked(*s);
          cv_.notify_one();
        }
      }
    }
  }
  auto shared_done = std::make_shared<absl::AnyInvocable<void(absl::Status)>>(std::move(done));
  Control(
      ref, "session_id",
      [this, shared_done, expected_uid](Session* s) -> Completion {
        if (expected_uid != 0 && s->uid != expected_uid) {
          // The id names a session made again after the one meant: leave it alone.
          return [shared_done, id = s->id.str()] {
            (*shared_done)(absl::NotFoundError(absl::StrCat(
                "session_id: session '", id, "' was deleted (the id now names a new session)")));
          };
        }
        // Work queued behind the delete fails: the session is gone. (The delete itself was
        // taken off the queue before it ran.) Their answers go out with the delete's: under
        // kAck after its commit, and if that fails, as its failure (the session is back; they
        // were not applied and may be retried).
        const bool stored = s->stored;
        std::string hold_key = HoldKeyLocked(s);
        const absl::Status gone = absl::NotFoundError(
            absl::StrCat("session_id: session '", s->id.str(), "' was deleted"));
        std::vector<Completion> failed;
        while (s->has_work()) {
          std::unique_ptr<Work> w = s->Pop();
          pending_tokens_ = std::max<int64_t>(0, pending_tokens_ - (w->length - w->done));
          HeldReply answer;
          if (w->kind == Work::Kind::kGenerate) {
            if (w->generate->flow != nullptr) w->generate->flow->parked = nullptr;
            answer = [cb = std::move(w->generate->on_done), gone](const absl::Status& st) mutable {
              cb(st.ok() ? gone : st);
            };
          } else {
            answer = [cb = std::move(w->on_done), gone](const absl::Status& st) mutable {
              cb(st.ok() ? gone : st);
            };
          }
          failed.push_back(ReplyLaterLocked(stored, hold_key, std::move(answer)));
        }
        // kAck: what to make again if the delete cannot be written.
        std::optional<SessionRecord> undo;
        if (durable() && ack() && s->stored) {
          absl::StatusOr<SessionRecord> r = RecordLocked(s);
          if (r.ok()) undo = *std::move(r);
        }
        const std::string key = SessionKey(store_.TenantName(s->tenant), s->id.str());
        store_.Remove(s, /*expired=*/false);  // (files its tombstone)
        if (undo.has_value()) tombstones_[key].undo = std::move(undo);
        Completion reply =
            ReplyLaterLocked(stored, std::move(hold_key),
                             [shared_done](const absl::Status& st) { (*shared_done)(st); });
        return [reply = std::move(reply), failed = std::move(failed)]() mutable {
          for (auto& f : failed) f();
          reply();
        };
      },
      [shared_done](absl::Status st) { (*shared_done)(st); }, std::move(cancel), expected_uid);
}

void Engine::ForkSession(const SessionRef& ref, const std::string& new_session_id,
                         uint32_t idle_ttl_s,
                         absl::AnyInvocable<void(absl::StatusOr<SessionInfo>)> done,
                         std::shared_ptr<CancelFlag> cancel) {
  if (absl::Status st = CheckBeforeStoreRead(); !st.ok()) return done(st);
  // Another replica's session of the new id counts as existing.
  if (absl::Status st = LoadFromStore(SessionRef(ref.tenant, new_session_id)); !st.ok()) {
    return done(st);
  }
  auto shared_done =
      std::make_shared<absl::AnyInvocable<void(absl::StatusOr<SessionInfo>)>>(std::move(done));
  Control(
      ref, "session_id",
      [this, new_session_id, idle_ttl_s, shared_done](Session* src) -> Completion {
        absl::StatusOr<SessionInfo> result;
        const absl::Status budget = CheckBudgetLocked(SessionStore::SessionBytes(*src->model));
        absl::StatusOr<Session*> dst =
            budget.ok() ? store_.Create(src->model, src->tenant, new_session_id,
                                        idle_ttl_s != 0 ? idle_ttl_s : src->idle_ttl_s, NowUnixMs(),
                                        "new_session_id")
                        : absl::StatusOr<Session*>(budget);
        if (dst.ok()) {
          // After Create: it may have moved `src` to the host tier to make room.
          if (absl::Status st = store_.CopySession(*dst, src); st.ok()) {
            (*dst)->position = src->position;
            result = InfoLocked(*dst);
            MarkDirtyLocked(*dst);
            src->last_used_ms = NowUnixMs();
            // The source's record is rewritten too: its last use is what recovery (and, for
            // shared stores, the store's own TTL) judges its expiry by, so a session used only
            // as a fork source stays alive across a restart. Its reply does not wait for it.
            CaptureUndoLocked(src);  // unchanged: put back as is (an undo it has is kept)
            MarkDirtyLocked(src);
            return ReplyLaterLocked(
                true, HoldKeyLocked(*dst),
                [shared_done, result = std::move(result)](const absl::Status& st) mutable {
                  if (st.ok()) {
                    (*shared_done)(std::move(result));
                  } else {
                    (*shared_done)(st);
                  }
                });
          } else {
            store_.Remove(*dst, /*expired=*/false);
            result = st;
          }
        } else {
          result = dst.status();
        }
        src->last_used_ms = NowUnixMs();
        return [shared_done, result = std::move(result)]() mutable {
          (*shared_done)(std::move(result));
        };
      },
      [shared_done](absl::Status st) { (*shared_done)(st); }, std::move(cancel));
}

void Engine::ExportSession(const SessionRef& ref,
                           absl::AnyInvocable<void(absl::StatusOr<SessionSnapshot>)> done,
                           std::shared_ptr<CancelFlag> cancel) {
  auto shared_done =
      std::make_shared<absl::AnyInvocable<void(absl::StatusOr<SessionSnapshot>)>>(std::move(done));
  Control(
      ref, "session_id",
      [this, shared_done](Session* s) -> Completion {
        const ServedModel& m = *s->model;
        SessionSnapshot snap;
        snap.model = m.name;
        snap.config_hash = m.config_hash;
        snap.position = s->position;
        snap.layout = m.layout;
        snap.state.resize(static_cast<size_t>(m.state_floats));
        if (absl::Status st = store_.ReadState(s, snap.state.data()); !st.ok()) {
          return [shared_done, st]() { (*shared_done)(st); };
        }
        snap.output_dim = m.output_dim;
        if (s->position > 0) {
          const float* last = store_.LastOutput(s);
          snap.last_output.assign(last, last + m.output_dim);
        }
        return [shared_done, snap = std::move(snap)]() mutable { (*shared_done)(std::move(snap)); };
      },
      [shared_done](absl::Status st) { (*shared_done)(st); }, std::move(cancel));
}

namespace {

absl::Status ValidateSnapshot(const SessionSnapshot& snap, const ServedModel& m) {
  if (snap.config_hash != m.config_hash) {
    return absl::InvalidArgumentError(absl::StrCat(
        "snapshot.config_hash: '", Quoted(snap.config_hash), "' is not model '", m.name,
        "''s config hash '", m.config_hash, "' (exported from a different model or weights)"));
  }
  if (snap.layout.n_layers != m.layout.n_layers || snap.layout.n_heads != m.layout.n_heads ||
      snap.layout.d_head != m.layout.d_head) {
    return absl::InvalidArgumentError(
        absl::StrCat("snapshot.n_layers/n_heads/d_head: ", snap.layout.n_layers, "/",
                     snap.layout.n_heads, "/", snap.layout.d_head, " do not match the model's ",
                     m.layout.n_layers, "/", m.layout.n_heads, "/", m.layout.d_head));
  }
  if (static_cast<int64_t>(snap.state.size()) != m.state_floats) {
    return absl::InvalidArgumentError(absl::StrCat("snapshot.state: ", snap.state.size() * 4,
                                                   " bytes, expected ", m.state_floats * 4));
  }
  if (snap.position < 0 || snap.position > kMaxPosition) {
    return absl::InvalidArgumentError(
        absl::StrCat("snapshot.position: ", snap.position, " is not in [0, 2^53]"));
  }
  if (snap.output_dim != m.output_dim) {
    return absl::InvalidArgumentError(
        absl::StrCat("snapshot.output_dim: ", snap.output_dim, ", expected ", m.output_dim));
  }
  const int64_t want_last = snap.position > 0 ? m.output_dim : 0;
  if (static_cast<int64_t>(snap.last_output.size()) != want_last) {
    return absl::InvalidArgumentError(absl::StrCat(
        "snapshot.last_output: ", snap.last_output.size() * 4, " bytes, expected ", want_last * 4));
  }
  for (int64_t r = 0; r < m.layout.n_layers * m.layout.n_heads; ++r) {
    const float* rec = snap.state.data() + r * m.layout.head_floats();
    const bool identity = rec[0] == -std::numeric_limits<float>::infinity() && rec[1] == 0.0f;
    for (int64_t j = identity ? 1 : 0; j < m.layout.head_floats(); ++j) {
      if (!std::isfinite(rec[j]) || (j == 1 && rec[j] < 0.0f)) {
        return absl::InvalidArgumentError(absl::StrCat("snapshot.state: value ",
                                                       r * m.layout.head_floats() + j, " (", rec[j],
                                                       ") is not a valid state value"));
      }
    }
  }
  for (size_t i = 0; i < snap.last_output.size(); ++i) {
    if (!std::isfinite(snap.last_output[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("snapshot.last_output[", i, "]: not a finite value"));
    }
  }
  // Finite is not enough: the state must be one some sequence of `position` tokens produces,
  // or the session could never be appended to.
  return CheckReachableState(snap.state.data(), snap.position, m.bounds, "snapshot.state");
}

}  // namespace

absl::StatusOr<SessionInfo> Engine::ImportSession(const SessionSnapshot& snapshot,
                                                  const SessionRef& ref, uint32_t idle_ttl_s) {
  if (snapshot.format_version != SessionSnapshot::kFormatVersion) {
    return absl::InvalidArgumentError(absl::StrCat(
        "snapshot.format_version: ", snapshot.format_version,
        " is not supported (this server reads version ", SessionSnapshot::kFormatVersion, ")"));
  }
  ASSIGN_OR_RETURN(const ServedModel* m, models_->Get(snapshot.model, "snapshot.model"));
  RETURN_IF_ERROR(ValidateSnapshot(snapshot, *m));
  RETURN_IF_ERROR(CheckBeforeStoreRead(SessionStore::SessionBytes(*m)));
  RETURN_IF_ERROR(LoadFromStore(ref));
  std::unique_lock<std::mutex> lock(mu_);
  RETURN_IF_ERROR(CheckAcceptingLocked());
  RETURN_IF_ERROR(CheckBudgetLocked(SessionStore::SessionBytes(*m)));
  ASSIGN_OR_RETURN(Session * s, store_.Create(m, store_.InternTenant(ref.tenant), ref.id,
                                              idle_ttl_s, NowUnixMs(), "session_id"));
  if (absl::Status st = store_.WriteState(s, snapshot.state.data()); !st.ok()) {
    store_.Remove(s, /*expired=*/false);
    return st;
  }
  // Create zeroed the last output row: a position-0 snapshot has none.
  std::copy(snapshot.last_output.begin(), snapshot.last_output.end(), store_.LastOutput(s));
  s->position = snapshot.position;
  const SessionInfo made = InfoLocked(s);
  MarkDirtyLocked(s);
  RETURN_IF_ERROR(AwaitDurableLocked(lock, SessionKey(ref.tenant, made.session_id)));
  return made;
}

}  // namespace aaren
