// SPDX-License-Identifier: Apache-2.0
// Engine: the request side (validation, queueing, appends, Score, Generate, session lookups). The
// control operations (delete, fork, export, import) are in engine_control.cc, the scheduler
// loop in engine_scheduler.cc, durability in engine_durability.cc.
#include "engine/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/state_bounds.h"
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
    : models_(models),
      options_(options),
      store_(*models, options.store),
      shared_(options.state_store != nullptr && options.state_store->Shared()) {
  store_.set_remove_hook([this](Session* s) { OnRemovedLocked(s); });
  next_checkpoint_ms_ = NowUnixMs() + options_.checkpoint_interval_ms;
  if (shared_) {
    for (int i = 0; i < kStoreCallThreads; ++i) {
      store_callers_.emplace_back([this] { StoreCallLoop(); });
    }
  }
  if (durable() && !ack()) commit_thread_ = std::thread([this] { CommitThreadLoop(); });
  scheduler_ = std::thread([this] { SchedulerLoop(); });
  scheduler_id_ = scheduler_.get_id();  // (read by completions of calls made after this)
}

Engine::~Engine() { Shutdown(); }

void Engine::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (scheduler_.joinable()) scheduler_.join();
  // (The scheduler settled the last checkpoint in flight before it stopped.)
  {
    std::lock_guard<std::mutex> lock(mu_);
    commit_thread_stop_ = true;
  }
  commit_thread_cv_.notify_all();
  if (commit_thread_.joinable()) commit_thread_.join();
  // After the scheduler: its last completions may still hand calls over (each then fails
  // UNAVAILABLE "shutting down", or finds its session gone). The threads run what is queued,
  // then stop.
  {
    std::lock_guard<std::mutex> lock(store_calls_mu_);
    store_calls_stop_ = true;
  }
  store_calls_cv_.notify_all();
  for (std::thread& t : store_callers_) {
    if (t.joinable()) t.join();
  }
}

void Engine::RunOffScheduler(absl::AnyInvocable<void()> fn) {
  if (!shared_ || std::this_thread::get_id() != scheduler_id_) return fn();
  {
    std::lock_guard<std::mutex> lock(store_calls_mu_);
    if (!store_calls_stop_) {
      store_calls_.push_back(std::move(fn));
      store_calls_cv_.notify_one();
      return;
    }
  }
  fn();  // stopped (the scheduler is gone; a new thread may carry its old id)
}

void Engine::StoreCallLoop() {
  std::unique_lock<std::mutex> lock(store_calls_mu_);
  for (;;) {
    store_calls_cv_.wait(lock, [this] { return store_calls_stop_ || !store_calls_.empty(); });
    if (store_calls_.empty()) return;  // stopping, and nothing left
    absl::AnyInvocable<void()> fn = std::move(store_calls_.front());
    store_calls_.pop_front();
    lock.unlock();
    fn();
    lock.lock();
  }
}

absl::Status Engine::CheckAcceptingLocked() const {
  if (stopping_) return absl::UnavailableError("the server is shutting down");
  return absl::OkStatus();
}

absl::Status Engine::CheckBeforeStoreRead(int64_t new_bytes) {
  if (!shared()) return absl::OkStatus();  // (LoadFromStore reads nothing)
  std::lock_guard<std::mutex> lock(mu_);
  RETURN_IF_ERROR(CheckAcceptingLocked());
  return new_bytes > 0 ? CheckBudgetLocked(new_bytes) : absl::OkStatus();
}

void Engine::ReleaseScratchLocked(Session* s) {
  if (s->tier == Tier::kScratch && !s->has_work()) store_.ReleaseScratch(s);
}

SessionInfo Engine::InfoLocked(const Session* s) const {
  SessionInfo info;
  info.session_id = s->id.str();
  info.uid = s->uid;
  info.model = s->model->name;
  info.position = s->position;
  info.state_bytes = static_cast<uint64_t>(s->model->config().state_bytes());
  info.idle_ttl_s = s->idle_ttl_s;
  info.tier = s->tier;
  info.created_ms = s->created_ms;
  info.last_used_ms = s->last_used_ms;
  return info;
}

absl::StatusOr<Session*> Engine::FindLocked(const SessionRef& ref, absl::string_view field) {
  return store_.Find(store_.InternTenant(ref.tenant), ref.id, field);
}

namespace {

// Bytes a reply carries besides its output floats (ids, positions, MCA stats, framing): an
// overestimate, so that an accepted reply always fits.
constexpr int64_t kReplyOverheadBytes = 256;

int64_t OutputFloats(const ServedModel& m, int64_t tokens, OutputMode mode) {
  switch (mode) {
    case OutputMode::kAll:
      return tokens * m.output_dim;
    case OutputMode::kLast:
      return m.output_dim;
    case OutputMode::kNone:
      break;
  }
  return 0;
}

// What a queued work item holds in memory: its input, its output buffer, the state snapshot of
// a chunked append, the record itself.
int64_t WorkBytes(const ServedModel& m, const SequenceInput& input, int64_t length,
                  OutputMode mode) {
  int64_t bytes = static_cast<int64_t>(sizeof(Work)) +
                  static_cast<int64_t>(input.tokens.size() * sizeof(int32_t) +
                                       input.features.size() * sizeof(float)) +
                  OutputFloats(m, length, mode) * 4;
  if (length > 1) bytes += m.state_floats * 4;
  return bytes;
}

int64_t WorkBytes(const ServedModel& m, const Work& w) {
  return WorkBytes(m, w.input, w.length, w.mode);
}

}  // namespace

absl::Status Engine::CheckReplyBytes(const ServedModel& m, int64_t tokens, OutputMode mode,
                                     absl::string_view field) const {
  if (options_.max_reply_bytes <= 0) return absl::OkStatus();
  const int64_t bytes = OutputFloats(m, tokens, mode) * 4 + kReplyOverheadBytes;
  if (bytes <= options_.max_reply_bytes) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat(
      field, ": the reply would be ", bytes, " bytes (", tokens, " tokens x ", m.output_dim,
      " outputs x 4), more than --max_message_bytes (", options_.max_reply_bytes,
      "); send fewer tokens per call or use output_mode LAST or NONE"));
}

absl::Status Engine::CheckNewSessionCosts(const ServedModel& m, const SequenceInput& input,
                                          OutputMode mode, absl::string_view field,
                                          const SessionRef& replacing) {
  const int64_t length = input.length(m.config().n_features);
  RETURN_IF_ERROR(CheckReplyBytes(m, length, mode, field));
  std::lock_guard<std::mutex> lock(mu_);
  int64_t freed = 0;
  if (absl::StatusOr<Session*> old = FindLocked(replacing, "session_id"); old.ok()) {
    freed = SessionStore::SessionBytes(*(*old)->model);
  }
  return CheckBudgetLocked(SessionStore::SessionBytes(m) + WorkBytes(m, input, length, mode) -
                           freed);
}

absl::Status Engine::CheckBudgetLocked(int64_t bytes) const {
  if (options_.memory_budget_bytes <= 0) return absl::OkStatus();
  const int64_t used = store_.memory_bytes() + reserved_bytes_.load(std::memory_order_relaxed);
  if (used + bytes <= options_.memory_budget_bytes) return absl::OkStatus();
  return absl::ResourceExhaustedError(
      absl::StrCat("--memory_budget_bytes: this call needs ", bytes, " bytes and ", used,
                   " of the ", options_.memory_budget_bytes,
                   " are in use (sessions and queued work); retry later, or "
                   "delete sessions"));
}

absl::Status Engine::ReserveLocked(Work& w, int64_t bytes) {
  RETURN_IF_ERROR(CheckBudgetLocked(bytes));
  reserved_bytes_.fetch_add(bytes, std::memory_order_relaxed);
  w.reserved_bytes += bytes;
  w.budget = &reserved_bytes_;
  return absl::OkStatus();
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
  // Every cost known from the request, before any work: each sequence, the request's tokens,
  // the reply's bytes.
  const int64_t n_features = model->config().n_features;
  int64_t total_tokens = 0, reply_floats = 0;
  for (size_t i = 0; i < params.sequences.size(); ++i) {
    absl::Status st =
        ValidateInput(model->config(), params.sequences[i], absl::StrCat("sequences[", i, "]"),
                      options_.max_sequence_tokens, /*allow_empty=*/false);
    if (!st.ok()) return done(st);
    const int64_t n = params.sequences[i].length(n_features);
    total_tokens += n;
    reply_floats += OutputFloats(*model, n, params.mode);
  }
  if (total_tokens > options_.max_request_tokens) {
    return done(absl::InvalidArgumentError(absl::StrCat(
        "sequences: ", total_tokens, " tokens in all, more than --max_request_tokens (",
        options_.max_request_tokens, "); split them over several calls")));
  }
  if (options_.max_reply_bytes > 0) {
    const int64_t bytes =
        reply_floats * 4 + kReplyOverheadBytes * static_cast<int64_t>(params.sequences.size());
    if (bytes > options_.max_reply_bytes) {
      return done(
          absl::ResourceExhaustedError(absl::StrCat("sequences: the reply would be ", bytes,
                                                    " bytes of outputs, more than "
                                                    "--max_message_bytes (",
                                                    options_.max_reply_bytes,
                                                    "); use output_mode LAST or NONE, "
                                                    "or fewer or shorter sequences per call")));
    }
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
  // The whole call's memory (inputs, outputs, scratch states or new sessions) in one check, so
  // that it is refused before any session is made.
  std::vector<std::unique_ptr<Work>> works(n);
  int64_t work_bytes = 0;
  for (size_t i = 0; i < n; ++i) {
    works[i] = NewAppendWork(std::move(params.sequences[i]), params.mode, params.mca, params.cancel,
                             n_features);
    work_bytes += WorkBytes(*model, *works[i]) + SessionStore::SessionBytes(*model);
  }
  if (absl::Status st = CheckBudgetLocked(work_bytes); !st.ok()) {
    lock.unlock();
    return job->done(st);
  }
  const uint32_t tenant = store_.InternTenant(params.tenant);
  std::vector<Session*> sessions(n);
  const int64_t now = NowUnixMs();
  for (size_t i = 0; i < n; ++i) {
    absl::Status st;
    if (params.prefill) {
      auto s = store_.Create(model, tenant, "", params.idle_ttl_s, now, "sequences");
      if (s.ok()) {
        sessions[i] = *s;
        job->results[i].session_id = (*s)->id.str();
        job->prefill_ids.push_back((*s)->id.str());
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
  const SessionRef owner(params.tenant, "");
  for (size_t i = 0; i < n; ++i) {
    std::unique_ptr<Work> w = std::move(works[i]);
    // Checked above for the whole call; prefill sessions are counted by the store itself.
    const int64_t bytes =
        WorkBytes(*model, *w) + (params.prefill ? 0 : SessionStore::SessionBytes(*model));
    reserved_bytes_.fetch_add(bytes, std::memory_order_relaxed);
    w->reserved_bytes = bytes;
    w->budget = &reserved_bytes_;
    w->scored = true;
    w->on_done = [this, job, i, owner](absl::StatusOr<AppendResult> r) {
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
        // All or nothing: the sessions made for it are gone before the caller hears.
        RemoveSessionsNow(owner.tenant, job->prefill_ids);
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
  auto w = NewAppendWork(std::move(params.prefix), OutputMode::kNone, params.mca, params.cancel,
                         (*model)->config().n_features);
  const int64_t new_bytes =
      SessionStore::SessionBytes(**model) + (w->length > 0 ? WorkBytes(**model, *w) : 0);
  if (absl::Status st = CheckBeforeStoreRead(new_bytes); !st.ok()) return done(st);
  // Another replica's session of this id counts as existing (ALREADY_EXISTS below).
  if (absl::Status st = LoadFromStore(SessionRef(params.tenant, params.session_id)); !st.ok()) {
    return done(st);
  }
  std::unique_lock<std::mutex> lock(mu_);
  absl::Status st = CheckAcceptingLocked();
  if (st.ok()) {
    st = CheckBudgetLocked(new_bytes);
  }
  absl::StatusOr<Session*> s =
      st.ok() ? store_.Create(*model, store_.InternTenant(params.tenant), params.session_id,
                              params.idle_ttl_s, NowUnixMs(), "session_id")
              : absl::StatusOr<Session*>(st);
  if (!s.ok()) {
    lock.unlock();
    return done(s.status());
  }
  if (w->length == 0) {
    // kAck: the reply is held until the window's commit (a failed one removes the session), as
    // an append's is, rather than awaited here: CreateSession never blocks, so a completion on
    // the scheduler thread may call it (KServe v2's START after deleting a sequence does).
    const SessionInfo made = InfoLocked(*s);
    MarkDirtyLocked(*s);
    Completion reply = ReplyLaterLocked(
        /*changed=*/true, HoldKeyLocked(*s),
        [made, done = std::move(done)](const absl::Status& st) mutable {
          if (st.ok()) return done(made);
          done(st);
        });
    if (durable() && ack()) {
      commit_wanted_ = true;
      cv_.notify_one();
    }
    lock.unlock();
    return reply();
  }
  if (absl::Status r = ReserveLocked(*w, WorkBytes(**model, *w)); !r.ok()) {
    store_.Remove(*s, /*expired=*/false);
    lock.unlock();
    return done(r);
  }
  const SessionRef ref(params.tenant, (*s)->id.str());
  const uint64_t uid = (*s)->uid;
  w->on_done = [this, ref, uid, done = std::move(done)](absl::StatusOr<AppendResult> r) mutable {
    if (!r.ok()) {
      // The session is gone before the caller hears of the failure (a retry with the same id
      // must not meet ALREADY_EXISTS).
      RemoveSessionsNow(ref.tenant, {ref.id}, uid);
      return done(absl::Status(r.status().code(), absl::StrCat("prefix: ", r.status().message())));
    }
    // (This session was made here: read it locally. GetSession would first ask a shared store,
    // a blocking call on the scheduler thread, where this runs.)
    done(LocalSessionInfo(ref));
  };
  EnqueueLocked(*s, std::move(w));
}

absl::StatusOr<SessionInfo> Engine::OpenSession(const SessionRef& ref, const std::string& model,
                                                bool create_if_missing, uint32_t idle_ttl_s) {
  RETURN_IF_ERROR(CheckBeforeStoreRead());
  RETURN_IF_ERROR(LoadFromStore(ref));
  std::unique_lock<std::mutex> lock(mu_);
  RETURN_IF_ERROR(CheckAcceptingLocked());
  if (!ref.id.empty()) {
    auto s = FindLocked(ref, "open.session_id");
    if (s.ok()) {
      if (!model.empty() && (*s)->model->name != model) {
        return absl::InvalidArgumentError(absl::StrCat("open.model: session '", ref.id,
                                                       "' serves model '", (*s)->model->name,
                                                       "', not '", model, "'"));
      }
      return InfoLocked(*s);
    }
    if (!create_if_missing || s.status().code() != absl::StatusCode::kNotFound) return s.status();
  }
  if (model.empty()) {
    return absl::InvalidArgumentError(
        "open.model: required to create a session (empty session_id or create_if_missing)");
  }
  ASSIGN_OR_RETURN(const ServedModel* m, models_->Get(model, "open.model"));
  RETURN_IF_ERROR(CheckBudgetLocked(SessionStore::SessionBytes(*m)));
  ASSIGN_OR_RETURN(Session * s, store_.Create(m, store_.InternTenant(ref.tenant), ref.id,
                                              idle_ttl_s, NowUnixMs(), "open.session_id"));
  const SessionInfo made = InfoLocked(s);
  MarkDirtyLocked(s);
  RETURN_IF_ERROR(AwaitDurableLocked(lock, SessionKey(ref.tenant, made.session_id)));
  return made;
}

void Engine::Append(AppendParams params, AppendCallback done) {
  const SessionRef ref(params.tenant, params.session_id);
  // A Stream's appends (expected_uid set) skip the store check while the session is here.
  if (params.expected_uid == 0) {
    if (absl::Status st = CheckBeforeStoreRead(); !st.ok()) return done(st);
  }
  absl::StatusOr<const ServedModel*> found = ModelOfSession(ref, params.expected_uid);
  if (!found.ok()) return done(found.status());
  const ServedModel* model = *found;
  if (!params.model.empty() && params.model != model->name) {
    return done(
        absl::NotFoundError(absl::StrCat("session_id: session '", ref.id, "' serves model '",
                                         model->name, "', not '", params.model, "'")));
  }
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
  const int64_t length = params.input.length(model->config().n_features);
  if (absl::Status st = CheckReplyBytes(*model, length, params.mode, "input"); !st.ok()) {
    return done(st);
  }
  auto w = NewAppendWork(std::move(params.input), params.mode, params.mca, std::move(params.cancel),
                         model->config().n_features);
  w->expected_position = params.expected_position;
  w->fingerprint = RetryFingerprint(w->input, w->mca);
  w->on_done = std::move(done);
  std::unique_lock<std::mutex> lock(mu_);
  absl::Status st = CheckAcceptingLocked();
  auto s = FindLocked(ref, "session_id");
  if (st.ok() && !s.ok()) st = s.status();
  if (st.ok() && params.expected_uid != 0 && (*s)->uid != params.expected_uid) {
    // The id now names another session: the one this caller appended to was deleted.
    st = absl::NotFoundError(absl::StrCat("session_id: session '", ref.id,
                                          "' was deleted (the id now names a new session)"));
  }
  if (st.ok()) st = ReserveLocked(*w, WorkBytes(*model, *w));
  if (!st.ok()) {
    lock.unlock();
    return w->on_done(st);
  }
  EnqueueLocked(*s, std::move(w));
}

void Engine::Generate(GenerateParams params,
                      absl::AnyInvocable<void(const GeneratedToken&)> on_token,
                      absl::AnyInvocable<void(absl::Status)> on_done) {
  const SessionRef ref(params.tenant, params.session_id);
  if (absl::Status st = CheckBeforeStoreRead(); !st.ok()) return on_done(st);
  absl::StatusOr<const ServedModel*> found = ModelOfSession(ref);
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
  if (params.max_tokens > options_.max_generate_tokens) {
    return on_done(absl::InvalidArgumentError(absl::StrCat("max_tokens: ", params.max_tokens,
                                                           " is more than --max_generate_tokens (",
                                                           options_.max_generate_tokens, ")")));
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
  g->flow = std::move(params.flow);
  auto w = NewAppendWork(std::move(params.prompt), OutputMode::kLast, McaOptions{},
                         std::move(params.cancel), 0);
  w->kind = Work::Kind::kGenerate;
  w->generate = std::move(g);
  std::unique_lock<std::mutex> lock(mu_);
  absl::Status st = CheckAcceptingLocked();
  auto s = FindLocked(ref, "session_id");
  if (st.ok() && !s.ok()) st = s.status();
  // The prompt, the output row and the record; tokens themselves are sent as they come.
  if (st.ok()) st = ReserveLocked(*w, WorkBytes(*model, *w) + model->output_dim * 4);
  if (!st.ok()) {
    lock.unlock();
    return w->generate->on_done(st);
  }
  EnqueueLocked(*s, std::move(w));
}

void Engine::AckGenerated(const std::shared_ptr<GenerateFlow>& flow, int64_t tokens) {
  std::lock_guard<std::mutex> lock(mu_);
  flow->unacked = std::max<int64_t>(0, flow->unacked - tokens);
  if (flow->parked != nullptr && flow->unacked < flow->window) {
    Session* s = flow->parked;
    flow->parked = nullptr;
    ReadyLocked(s);
    cv_.notify_one();
  }
}

absl::StatusOr<const ServedModel*> Engine::ModelOfSession(const SessionRef& ref,
                                                          uint64_t bound_uid) {
  RETURN_IF_ERROR(LoadFromStore(ref, bound_uid));
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Session * s, FindLocked(ref, "session_id"));
  return s->model;
}

absl::StatusOr<SessionInfo> Engine::GetSession(const SessionRef& ref) {
  RETURN_IF_ERROR(LoadFromStore(ref));
  return LocalSessionInfo(ref);
}

absl::StatusOr<SessionInfo> Engine::LocalSessionInfo(const SessionRef& ref) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Session * s, FindLocked(ref, "session_id"));
  return InfoLocked(s);
}

void Engine::RemoveSessionsNow(const std::string& tenant, const std::vector<std::string>& ids,
                               uint64_t uid) {
  std::vector<Completion> completions;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const uint32_t t = store_.InternTenant(tenant);
    for (const std::string& id : ids) {
      absl::StatusOr<Session*> s = store_.Find(t, id, "session_id");
      if (!s.ok() || (*s)->state != SessionState::kIdle) continue;
      if (uid != 0 && (*s)->uid != uid) continue;
      while ((*s)->has_work()) {
        std::unique_ptr<Work> w = (*s)->Pop();
        pending_tokens_ = std::max<int64_t>(0, pending_tokens_ - (w->length - w->done));
        FailWorkLocked(
            *w, absl::NotFoundError(absl::StrCat("session_id: session '", id, "' was deleted")),
            completions);
      }
      if ((*s)->in_ready) {
        ready_.erase(std::remove(ready_.begin(), ready_.end(), *s), ready_.end());
        (*s)->in_ready = false;
      }
      store_.Remove(*s, /*expired=*/false);
    }
  }
  for (Completion& c : completions) c();
}

void Engine::SweepCancelled(const SessionRef& ref) {
  std::vector<Completion> completions;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto s = FindLocked(ref, "session_id");
    if (!s.ok()) return;
    SweepQueueLocked(*s, completions);
    // A cancelled head that is not running (a parked Generate, say) goes at the next tick.
    if ((*s)->has_work() && (*s)->head->cancelled() && (*s)->state == SessionState::kIdle) {
      if ((*s)->head->kind == Work::Kind::kGenerate && (*s)->head->generate->flow != nullptr) {
        (*s)->head->generate->flow->parked = nullptr;
      }
      ReadyLocked(*s);
      cv_.notify_one();
    }
  }
  for (Completion& c : completions) c();
}

void Engine::SweepQueueLocked(Session* s, std::vector<Completion>& completions) {
  if (!s->has_work()) return;
  Work* prev = s->head;  // the head itself is left to the scheduler (it may be running)
  while (prev->next != nullptr) {
    Work* w = prev->next;
    if (!w->cancelled()) {
      prev = w;
      continue;
    }
    s->Unlink(prev, w);
    std::unique_ptr<Work> owned(w);
    pending_tokens_ = std::max<int64_t>(0, pending_tokens_ - (owned->length - owned->done));
    FailWorkLocked(*owned, absl::CancelledError("the request was cancelled or its deadline passed"),
                   completions);
  }
}

EngineStats Engine::stats() {
  std::lock_guard<std::mutex> lock(mu_);
  EngineStats out = stats_;
  out.store = store_.counts();
  return out;
}

}  // namespace aaren
