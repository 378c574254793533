// SPDX-License-Identifier: Apache-2.0
// Engine: the request side (validation, queueing, session operations). The scheduler loop is in
// engine_scheduler.cc.
#include "engine/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace aaren {

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int64_t SteadyNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

Engine::Engine(const ModelRegistry* models, EngineOptions options)
    : models_(models), options_(options), store_(*models, options.store) {
  scheduler_ = std::thread([this] { SchedulerLoop(); });
}

Engine::~Engine() { Shutdown(); }

void Engine::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (scheduler_.joinable()) scheduler_.join();
}

absl::Status Engine::CheckAcceptingLocked() const {
  if (stopping_) return absl::UnavailableError("the server is shutting down");
  return absl::OkStatus();
}

void Engine::ReleaseScratchLocked(Session* s) {
  if (s->tier == Tier::kScratch && !s->has_work()) store_.ReleaseScratch(s);
}

SessionInfo Engine::InfoLocked(const Session* s) const {
  return SessionInfo{s->id,         s->model->name,
                     s->position,   static_cast<uint64_t>(s->model->config().state_bytes()),
                     s->idle_ttl_s, s->tier,
                     s->created_ms, s->last_used_ms};
}

void Engine::ReadyLocked(Session* s) {
  if (s->in_ready || s->state != SessionState::kIdle || !s->has_work()) return;
  s->in_ready = true;
  ready_.push_back(s);
}

void Engine::EnqueueLocked(Session* s, std::unique_ptr<Work> w) {
  pending_tokens_ += w->length;
  w->enqueued_ns = SteadyNowNs();
  s->Push(w.release());
  ReadyLocked(s);
  cv_.notify_one();
}

std::unique_ptr<Work> Engine::NewAppendWork(SequenceInput input, OutputMode mode, McaOptions mca,
                                            std::shared_ptr<CancelFlag> cancel,
                                            int64_t n_features) {
  auto w = std::make_unique<Work>();
  w->kind = Work::Kind::kAppend;
  w->length = input.length(n_features);
  w->input = std::move(input);
  w->mode = mode;
  w->mca = mca;
  w->cancel = std::move(cancel);
  return w;
}

// ---- Score ----

namespace {

// Shared by the per-sequence work of one Score call.
struct ScoreJob {
  std::vector<SequenceOutput> results;
  std::vector<std::unique_ptr<Session>> scratch;  // sequences without prefill
  std::vector<std::string> prefill_ids;
  size_t remaining = 0;
  absl::Status status;
  absl::AnyInvocable<void(absl::StatusOr<std::vector<SequenceOutput>>)> done;
};

}  // namespace

void Engine::Score(ScoreParams params,
                   absl::AnyInvocable<void(absl::StatusOr<std::vector<SequenceOutput>>)> done) {
  const ServedModel* model = nullptr;
  {
    auto m = models_->Get(params.model, "model");
    if (!m.ok()) return done(m.status());
    model = *m;
  }
  if (params.sequences.empty()) {
    return done(absl::InvalidArgumentError("sequences: empty (at least one sequence)"));
  }
  if (absl::Status st = ValidateMca(params.mca, "mca"); !st.ok()) return done(st);
  for (size_t i = 0; i < params.sequences.size(); ++i) {
    absl::Status st =
        ValidateInput(model->config(), params.sequences[i], absl::StrCat("sequences[", i, "]"),
                      options_.max_sequence_tokens, /*allow_empty=*/false);
    if (!st.ok()) return done(st);
  }
  auto job = std::make_shared<ScoreJob>();
  job->done = std::move(done);
  const size_t n = params.sequences.size();
  job->results.resize(n);
  job->remaining = n;

  std::unique_lock<std::mutex> lock(mu_);
  if (absl::Status st = CheckAcceptingLocked(); !st.ok()) {
    lock.unlock();
    return job->done(st);
  }
  std::vector<Session*> sessions(n);
  const int64_t now = NowUnixMs();
  for (size_t i = 0; i < n; ++i) {
    absl::Status st;
    if (params.prefill) {
      auto s = store_.Create(model, "", params.idle_ttl_s, now, "sequences");
      if (s.ok()) {
        sessions[i] = *s;
        job->results[i].session_id = (*s)->id;
        job->prefill_ids.push_back((*s)->id);
      } else {
        st = s.status();
      }
    } else {
      auto s = std::make_unique<Session>();
      s->model = model;
      st = store_.AcquireScratch(s.get());
      sessions[i] = s.get();
      job->scratch.push_back(std::move(s));
    }
    if (!st.ok()) {
      // Undo the sessions made so far (they have no work yet).
      for (size_t j = 0; j < i; ++j) {
        if (params.prefill) {
          store_.Remove(sessions[j], /*expired=*/false);
        } else {
          store_.ReleaseScratch(sessions[j]);
        }
      }
      lock.unlock();
      return job->done(st);
    }
  }
  for (size_t i = 0; i < n; ++i) {
    auto w = NewAppendWork(std::move(params.sequences[i]), params.mode, params.mca, params.cancel,
                           model->config().n_features);
    w->scored = true;
    w->on_done = [this, job, i](absl::StatusOr<AppendResult> r) {
      if (r.ok()) {
        job->results[i].outputs = std::move(r->outputs);
        job->results[i].output_dim = r->output_dim;
        job->results[i].position = r->position;
        job->results[i].mca = r->mca;
      } else if (job->status.ok()) {
        job->status = absl::Status(r.status().code(),
                                   absl::StrCat("sequences[", i, "]: ", r.status().message()));
      }
      if (--job->remaining != 0) return;
      if (!job->status.ok()) {
        for (const std::string& id : job->prefill_ids) DeleteSession(id, [](absl::Status) {});
        return job->done(job->status);
      }
      job->done(std::move(job->results));
    };
    EnqueueLocked(sessions[i], std::move(w));
  }
}

// ---- Sessions ----

void Engine::CreateSession(CreateParams params,
                           absl::AnyInvocable<void(absl::StatusOr<SessionInfo>)> done) {
  auto model = models_->Get(params.model, "model");
  if (!model.ok()) return done(model.status());
  if (absl::Status st = ValidateInput((*model)->config(), params.prefix, "prefix",
                                      options_.max_sequence_tokens, /*allow_empty=*/true);
      !st.ok()) {
    return done(st);
  }
  if (absl::Status st = ValidateMca(params.mca, "mca"); !st.ok()) return done(st);
  std::unique_lock<std::mutex> lock(mu_);
  if (absl::Status st = CheckAcceptingLocked(); !st.ok()) {
    lock.unlock();
    return done(st);
  }
  auto s = store_.Create(*model, params.session_id, params.idle_ttl_s, NowUnixMs(), "session_id");
  if (!s.ok() || params.prefix.empty()) {
    absl::StatusOr<SessionInfo> info =
        s.ok() ? absl::StatusOr<SessionInfo>(InfoLocked(*s)) : s.status();
    lock.unlock();
    return done(std::move(info));
  }
  auto w = NewAppendWork(std::move(params.prefix), OutputMode::kNone, params.mca, params.cancel,
                         (*model)->config().n_features);
  const std::string id = (*s)->id;
  w->on_done = [this, id, done = std::move(done)](absl::StatusOr<AppendResult> r) mutable {
    if (!r.ok()) {
      DeleteSession(id, [](absl::Status) {});
      return done(absl::Status(r.status().code(), absl::StrCat("prefix: ", r.status().message())));
    }
    done(GetSession(id));
  };
  EnqueueLocked(*s, std::move(w));
}

absl::StatusOr<SessionInfo> Engine::OpenSession(const std::string& session_id,
                                                const std::string& model, bool create_if_missing,
                                                uint32_t idle_ttl_s) {
  std::lock_guard<std::mutex> lock(mu_);
  RETURN_IF_ERROR(CheckAcceptingLocked());
  if (!session_id.empty()) {
    auto s = store_.Find(session_id, "open.session_id");
    if (s.ok()) {
      if (!model.empty() && (*s)->model->name != model) {
        return absl::InvalidArgumentError(absl::StrCat("open.model: session '", session_id,
                                                       "' serves model '", (*s)->model->name,
                                                       "', not '", model, "'"));
      }
      return InfoLocked(*s);
    }
    if (!create_if_missing) return s.status();
  }
  if (model.empty()) {
    return absl::InvalidArgumentError(
        "open.model: required to create a session (empty session_id or create_if_missing)");
  }
  ASSIGN_OR_RETURN(const ServedModel* m, models_->Get(model, "open.model"));
  ASSIGN_OR_RETURN(Session * s,
                   store_.Create(m, session_id, idle_ttl_s, NowUnixMs(), "open.session_id"));
  return InfoLocked(s);
}

void Engine::Append(AppendParams params, AppendCallback done) {
  absl::StatusOr<const ServedModel*> found = ModelOfSession(params.session_id);
  if (!found.ok()) return done(found.status());
  const ServedModel* model = *found;
  if (absl::Status st = ValidateInput(model->config(), params.input, "input",
                                      options_.max_sequence_tokens, /*allow_empty=*/false);
      !st.ok()) {
    return done(st);
  }
  if (params.expected_position && *params.expected_position < 0) {
    return done(absl::InvalidArgumentError(
        absl::StrCat("expected_position: ", *params.expected_position, " is negative")));
  }
  if (absl::Status st = ValidateMca(params.mca, "mca"); !st.ok()) return done(st);
  auto w = NewAppendWork(std::move(params.input), params.mode, params.mca, std::move(params.cancel),
                         model->config().n_features);
  w->expected_position = params.expected_position;
  w->fingerprint = RetryFingerprint(w->input, w->mca);
  w->on_done = std::move(done);
  std::unique_lock<std::mutex> lock(mu_);
  absl::Status st = CheckAcceptingLocked();
  auto s = store_.Find(params.session_id, "session_id");
  if (st.ok() && !s.ok()) st = s.status();
  if (!st.ok()) {
    lock.unlock();
    return w->on_done(st);
  }
  EnqueueLocked(*s, std::move(w));
}

void Engine::Generate(GenerateParams params,
                      absl::AnyInvocable<void(const GeneratedToken&)> on_token,
                      absl::AnyInvocable<void(absl::Status)> on_done) {
  absl::StatusOr<const ServedModel*> found = ModelOfSession(params.session_id);
  if (!found.ok()) return on_done(found.status());
  const ServedModel* model = *found;
  if (model->config().input_kind != InputKind::kTokens) {
    return on_done(absl::FailedPreconditionError(absl::StrCat(
        "session_id: model '", model->name, "' takes features; Generate needs a tokens model")));
  }
  if (model->config().output_dim != model->config().vocab_size) {
    return on_done(absl::FailedPreconditionError(absl::StrCat(
        "session_id: model '", model->name, "' has output_dim ", model->config().output_dim,
        " != vocab_size ", model->config().vocab_size, ": its outputs are not next-token logits")));
  }
  if (params.max_tokens == 0) {
    return on_done(absl::InvalidArgumentError("max_tokens: must be at least 1"));
  }
  if (!(params.sampling.temperature >= 0.0f) || !std::isfinite(params.sampling.temperature)) {
    return on_done(absl::InvalidArgumentError("temperature: must be finite and >= 0"));
  }
  if (absl::Status st = ValidateInput(model->config(), params.prompt, "prompt",
                                      options_.max_sequence_tokens, /*allow_empty=*/true);
      !st.ok()) {
    return on_done(st);
  }
  for (size_t i = 0; i < params.stop_tokens.size(); ++i) {
    const int32_t t = params.stop_tokens[i];
    if (t < 0 || t >= model->config().vocab_size) {
      return on_done(absl::InvalidArgumentError(absl::StrCat("stop_tokens[", i, "]: token id ", t,
                                                             " out of range [0, ",
                                                             model->config().vocab_size, ")")));
    }
  }
  auto g = std::make_unique<GenerateProgress>();
  g->max_tokens = params.max_tokens;
  g->sampling = params.sampling;
  g->rng.seed(params.seed);
  g->stop_tokens.insert(params.stop_tokens.begin(), params.stop_tokens.end());
  g->prompt_pending = !params.prompt.empty();
  g->on_token =
      std::make_shared<absl::AnyInvocable<void(const GeneratedToken&)>>(std::move(on_token));
  g->on_done = std::move(on_done);
  auto w = NewAppendWork(std::move(params.prompt), OutputMode::kLast, McaOptions{},
                         std::move(params.cancel), 0);
  w->kind = Work::Kind::kGenerate;
  w->generate = std::move(g);
  std::unique_lock<std::mutex> lock(mu_);
  absl::Status st = CheckAcceptingLocked();
  auto s = store_.Find(params.session_id, "session_id");
  if (st.ok() && !s.ok()) st = s.status();
  if (!st.ok()) {
    lock.unlock();
    return w->generate->on_done(st);
  }
  EnqueueLocked(*s, std::move(w));
}

absl::StatusOr<const ServedModel*> Engine::ModelOfSession(const std::string& session_id) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Session * s, store_.Find(session_id, "session_id"));
  return s->model;
}

absl::StatusOr<SessionInfo> Engine::GetSession(const std::string& session_id) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Session * s, store_.Find(session_id, "session_id"));
  return InfoLocked(s);
}

void Engine::Control(const std::string& session_id, absl::string_view field,
                     absl::AnyInvocable<Completion(Session*)> op,
                     absl::AnyInvocable<void(absl::Status)> on_error) {
  std::unique_lock<std::mutex> lock(mu_);
  absl::Status st = CheckAcceptingLocked();
  auto s = store_.Find(session_id, field);
  if (st.ok() && !s.ok()) st = s.status();
  if (!st.ok()) {
    lock.unlock();
    return on_error(st);
  }
  auto w = std::make_unique<Work>();
  w->kind = Work::Kind::kControl;
  w->control = std::move(op);
  // A control op fails only by its own logic; a pending-work failure (session deleted first)
  // reaches on_error through on_done.
  w->on_done = [on_error = std::move(on_error)](absl::StatusOr<AppendResult> r) mutable {
    on_error(r.status());
  };
  EnqueueLocked(*s, std::move(w));
}

void Engine::DeleteSession(const std::string& session_id,
                           absl::AnyInvocable<void(absl::Status)> done) {
  auto shared_done = std::make_shared<absl::AnyInvocable<void(absl::Status)>>(std::move(done));
  Control(
      session_id, "session_id",
      [this, shared_done](Session* s) -> Completion {
        // Work queued behind the delete fails: the session is gone. (The delete itself was
        // taken off the queue before it ran.)
        std::vector<Completion> failed;
        while (s->has_work()) {
          std::unique_ptr<Work> w = s->Pop();
          FailWorkLocked(
              *w,
              absl::NotFoundError(absl::StrCat("session_id: session '", s->id, "' was deleted")),
              failed);
        }
        store_.Remove(s, /*expired=*/false);
        return [shared_done, failed = std::move(failed)]() mutable {
          for (auto& f : failed) f();
          (*shared_done)(absl::OkStatus());
        };
      },
      [shared_done](absl::Status st) { (*shared_done)(st); });
}

void Engine::ForkSession(const std::string& session_id, const std::string& new_session_id,
                         uint32_t idle_ttl_s,
                         absl::AnyInvocable<void(absl::StatusOr<SessionInfo>)> done) {
  auto shared_done =
      std::make_shared<absl::AnyInvocable<void(absl::StatusOr<SessionInfo>)>>(std::move(done));
  Control(
      session_id, "session_id",
      [this, new_session_id, idle_ttl_s, shared_done](Session* src) -> Completion {
        absl::StatusOr<SessionInfo> result;
        auto dst = store_.Create(src->model, new_session_id,
                                 idle_ttl_s != 0 ? idle_ttl_s : src->idle_ttl_s, NowUnixMs(),
                                 "new_session_id");
        if (dst.ok()) {
          // After Create: it may have moved `src` to the host tier to make room.
          if (absl::Status st = store_.CopySession(*dst, src); st.ok()) {
            (*dst)->position = src->position;
            result = InfoLocked(*dst);
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
      [shared_done](absl::Status st) { (*shared_done)(st); });
}

void Engine::ExportSession(const std::string& session_id,
                           absl::AnyInvocable<void(absl::StatusOr<SessionSnapshot>)> done) {
  auto shared_done =
      std::make_shared<absl::AnyInvocable<void(absl::StatusOr<SessionSnapshot>)>>(std::move(done));
  Control(
      session_id, "session_id",
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
      [shared_done](absl::Status st) { (*shared_done)(st); });
}

namespace {

absl::Status ValidateSnapshot(const SessionSnapshot& snap, const ServedModel& m) {
  if (snap.config_hash != m.config_hash) {
    return absl::InvalidArgumentError(absl::StrCat(
        "snapshot.config_hash: '", snap.config_hash, "' is not model '", m.name,
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
  if (snap.position < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("snapshot.position: ", snap.position, " is negative"));
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
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SessionInfo> Engine::ImportSession(const SessionSnapshot& snapshot,
                                                  const std::string& session_id,
                                                  uint32_t idle_ttl_s) {
  if (snapshot.format_version != SessionSnapshot::kFormatVersion) {
    return absl::InvalidArgumentError(absl::StrCat(
        "snapshot.format_version: ", snapshot.format_version,
        " is not supported (this server reads version ", SessionSnapshot::kFormatVersion, ")"));
  }
  ASSIGN_OR_RETURN(const ServedModel* m, models_->Get(snapshot.model, "snapshot.model"));
  RETURN_IF_ERROR(ValidateSnapshot(snapshot, *m));
  std::lock_guard<std::mutex> lock(mu_);
  RETURN_IF_ERROR(CheckAcceptingLocked());
  ASSIGN_OR_RETURN(Session * s,
                   store_.Create(m, session_id, idle_ttl_s, NowUnixMs(), "session_id"));
  if (absl::Status st = store_.WriteState(s, snapshot.state.data()); !st.ok()) {
    store_.Remove(s, /*expired=*/false);
    return st;
  }
  // Create zeroed the last output row: a position-0 snapshot has none.
  std::copy(snapshot.last_output.begin(), snapshot.last_output.end(), store_.LastOutput(s));
  s->position = snapshot.position;
  return InfoLocked(s);
}

EngineStats Engine::stats() {
  std::lock_guard<std::mutex> lock(mu_);
  EngineStats out = stats_;
  out.store = store_.counts();
  return out;
}

}  // namespace aaren
