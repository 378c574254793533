// SPDX-License-Identifier: Apache-2.0
// Engine: the step scheduler (continuous batching). One thread; see the policy in engine.h.
#include <algorithm>
#include <chrono>
#include <limits>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "core/state_bounds.h"
#include "engine/engine.h"

namespace aaren {
namespace {

constexpr int64_t kExpirySweepMs = 1000;

// Backend errors name "spans[k]"; the caller knows the span as its request's input.
absl::Status AsInputError(const absl::Status& st) {
  absl::string_view msg = st.message();
  if (absl::ConsumePrefix(&msg, "spans[")) {
    const size_t close = msg.find(']');
    if (close != absl::string_view::npos) msg.remove_prefix(close + 1);
    return absl::Status(st.code(), absl::StrCat("input", msg));
  }
  return st;
}

}  // namespace

void Engine::SchedulerLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  std::vector<Picked> picked;
  std::vector<Completion> completions;
  auto run_completions = [&] {
    lock.unlock();
    for (Completion& c : completions) c();
    completions.clear();
    lock.lock();
  };
  const int64_t wait_ms = durable() && !ack()
                              ? std::min(kExpirySweepMs, options_.checkpoint_interval_ms)
                              : kExpirySweepMs;
  while (true) {
    cv_.wait_for(lock, std::chrono::milliseconds(wait_ms), [&] {
      return !ready_.empty() || stopping_ || checkpoint_written_ ||
             (commit_wanted_ && checkpoint_job_ == nullptr);
    });
    SettleCheckpointLocked(lock, /*wait=*/false);  // one the commit thread has written
    const int64_t now = NowUnixMs();
    if (now >= next_expiry_ms_) {
      store_.ExpireIdle(now);
      FreeRemovedLocked();
      next_expiry_ms_ = now + kExpirySweepMs;
    }
    if (ready_.empty()) {
      // Idle: due checkpoints, expiries, sessions made by request threads; all at shutdown
      // (after the checkpoint in flight, in as many capped commits as that takes, until one
      // fails).
      while (CommitOrStartLocked(lock, /*force=*/stopping_) && stopping_) {
      }
      if (stopping_ && ready_.empty()) break;
      continue;
    }
    if (options_.batch_delay_us > 0 && !stopping_ && pending_tokens_ < options_.max_batch_tokens) {
      cv_.wait_for(lock, std::chrono::microseconds(options_.batch_delay_us),
                   [&] { return pending_tokens_ >= options_.max_batch_tokens || stopping_; });
    }
    picked.clear();
    SelectLocked(picked, completions);
    const bool progressed = !picked.empty() || !completions.empty();
    run_completions();
    if (!picked.empty()) {
      lock.unlock();
      RunForward(picked);
      lock.lock();
      CommitLocked(picked, completions);
      ++stats_.ticks;
      run_completions();
    }
    // kAck: this tick's changes, one commit; their replies were held for it. kCheckpoint: the
    // due one starts on the commit thread.
    CommitOrStartLocked(lock, /*force=*/false);
    FreeRemovedLocked();
    if (!progressed) {
      // Every ready session waits for a pool slot held by work in flight elsewhere: back off.
      cv_.wait_for(lock, std::chrono::milliseconds(1));
    }
  }
}

void Engine::FailWorkLocked(Work& w, absl::Status status, std::vector<Completion>& completions) {
  if (w.kind == Work::Kind::kGenerate) {
    if (w.generate->flow != nullptr) w.generate->flow->parked = nullptr;
    completions.push_back([cb = std::move(w.generate->on_done), status]() mutable { cb(status); });
  } else {
    completions.push_back([cb = std::move(w.on_done), status]() mutable { cb(status); });
  }
}

void Engine::FailHeadLocked(Session* s, absl::Status status, std::vector<Completion>& completions) {
  std::unique_ptr<Work> w = s->Pop();
  if (w->done > 0 && !w->snapshot.empty()) {
    // A chunked append stopped half-way: put the state back as it was before it. (The session
    // is pinned, so it is still in the pool slot the chunks ran in.)
    if (absl::Status st = store_.WriteState(s, w->snapshot.data()); !st.ok()) {
      status = absl::Status(
          st.code(),
          absl::StrCat(status.message(), "; restoring the session's state failed: ", st.message()));
    }
  }
  pending_tokens_ = std::max<int64_t>(0, pending_tokens_ - (w->length - w->done));
  FailWorkLocked(*w, std::move(status), completions);
  ReleaseScratchLocked(s);
}

Engine::Advance Engine::AdvanceLocked(Session* s, std::vector<Completion>& completions) {
  while (s->has_work()) {
    Work* w = s->head;
    if (w->cancelled()) {
      FailHeadLocked(s, absl::CancelledError("the request was cancelled"), completions);
      continue;
    }
    if (w->kind == Work::Kind::kControl) {
      std::unique_ptr<Work> owned = s->Pop();
      completions.push_back(owned->control(s));
      if (s->state == SessionState::kClosed) return Advance::kRemoved;
      continue;
    }
    const ServedModel& m = *s->model;
    if (w->kind == Work::Kind::kGenerate) {
      // Work queued behind a Generate may wait long: drop what was cancelled meanwhile.
      SweepQueueLocked(s, completions);
    }
    if (w->kind == Work::Kind::kGenerate && w->length == 0) {
      GenerateProgress& g = *w->generate;
      if (g.stop_requested) {
        FailHeadLocked(s,
                       absl::NotFoundError(absl::StrCat("session_id: session '", s->id.str(),
                                                        "' was deleted while generating")),
                       completions);
        continue;
      }
      if (g.flow != nullptr && g.flow->unacked >= g.flow->window) {
        // The client has not read the last `window` tokens: wait for AckGenerated.
        g.flow->parked = s;
        return Advance::kRunnable;
      }
      if (s->position == 0) {
        FailHeadLocked(s,
                       absl::FailedPreconditionError(
                           "prompt: the session has no tokens yet; give a prompt to start from"),
                       completions);
        return Advance::kNextTick;
      }
      const float* last = store_.LastOutput(s);
      g.pending = SampleToken(absl::MakeConstSpan(last, static_cast<size_t>(m.output_dim)),
                              g.sampling, g.rng);
      w->input.tokens.assign(1, g.pending.token);
      w->length = 1;
      ++pending_tokens_;
      w->done = 0;
      w->position_checked = false;
    }
    if (!w->position_checked) {
      if (w->expected_position && *w->expected_position != s->position) {
        const AppendRecord& rec = s->last_append;
        // A multi-row ALL record replays only with its rows (RestoreRecordLocked keeps none
        // without them; checked here too, so a record without them is never dereferenced).
        const bool rows_out_of_line = w->mode == OutputMode::kAll && w->length > 1;
        if (rec.position_before == *w->expected_position && rec.length == w->length &&
            rec.fingerprint == w->fingerprint && rec.mode == w->mode &&
            s->position == rec.position_before + rec.length &&
            (!rows_out_of_line || store_.RetryOutputs(s) != nullptr)) {
          AppendResult r;
          r.output_dim = m.output_dim;
          r.position = s->position;
          r.uid = s->uid;
          r.replayed = true;
          r.mca = rec.mca;
          if (rows_out_of_line) {
            r.outputs = *store_.RetryOutputs(s);
          } else if (w->mode != OutputMode::kNone) {
            const float* last = store_.LastOutput(s);
            r.outputs.assign(last, last + m.output_dim);
          }
          std::unique_ptr<Work> owned = s->Pop();
          pending_tokens_ = std::max<int64_t>(0, pending_tokens_ - owned->length);
          completions.push_back(
              [cb = std::move(owned->on_done), r = std::move(r)]() mutable { cb(std::move(r)); });
          continue;
        }
        FailHeadLocked(s,
                       absl::AbortedError(absl::StrCat(
                           "expected_position: ", *w->expected_position,
                           " does not match the session's current position ", s->position)),
                       completions);
        return Advance::kNextTick;
      }
      if (s->position + w->length > kMaxPosition) {
        FailHeadLocked(s,
                       absl::OutOfRangeError(absl::StrCat(
                           "input: the session is at position ", s->position, "; ", w->length,
                           " more tokens would pass the largest position, 2^53")),
                       completions);
        return Advance::kNextTick;
      }
      w->position_checked = true;
      w->cursor = s->position;
    }
    return Advance::kRunnable;
  }
  return Advance::kRunnable;
}

void Engine::SelectLocked(std::vector<Picked>& picked, std::vector<Completion>& completions) {
  std::vector<Session*> runnable;
  std::vector<Session*> next_tick;
  runnable.reserve(ready_.size());
  for (Session* s : ready_) {
    s->in_ready = false;
    const Advance advance = AdvanceLocked(s, completions);
    if (advance == Advance::kRemoved) continue;
    if (advance == Advance::kNextTick) {
      if (!s->pinned()) store_.LruPushFront(s);
      if (s->has_work()) next_tick.push_back(s);
      continue;
    }
    const bool parked = s->has_work() && s->head->kind == Work::Kind::kGenerate &&
                        s->head->generate->flow != nullptr && s->head->generate->flow->parked == s;
    if (s->has_work() && !parked) runnable.push_back(s);
    // Work that ended here (cancelled, aborted, replayed) may have unpinned it: evictable again.
    if (!s->pinned()) store_.LruPushFront(s);
  }
  ready_.clear();
  for (Session* s : next_tick) {
    s->in_ready = true;
    ready_.push_back(s);
  }

  const int64_t max_tokens = options_.max_batch_tokens;
  auto remaining = [](const Session* s) { return s->head->length - s->head->done; };
  const bool bulk_waiting = std::any_of(runnable.begin(), runnable.end(), [&](const Session* s) {
    return remaining(s) > options_.interactive_tokens;
  });
  const int64_t interactive_cap = bulk_waiting ? max_tokens - max_tokens / 4 : max_tokens;
  int64_t used = 0;
  // 1: picked. 2: its state could not be moved or copied, so its head work failed: not picked
  // this tick (what follows in its queue has not been through AdvanceLocked), back to ready_.
  std::vector<char> taken(runnable.size(), 0);
  auto pick = [&](size_t i, int64_t take) {
    Session* s = runnable[i];
    auto fail = [&](absl::Status st) {
      FailHeadLocked(s, std::move(st), completions);
      taken[i] = 2;
    };
    absl::StatusOr<bool> resident = store_.MakeResident(s);
    if (!resident.ok()) return fail(resident.status());
    if (!*resident) return;
    Work* w = s->head;
    const ServedModel& m = *s->model;
    if (w->done == 0) {
      if (take < w->length) {  // chunked: keep the state to undo a failure half-way
        w->snapshot.resize(static_cast<size_t>(m.state_floats));
        if (absl::Status st = store_.ReadState(s, w->snapshot.data()); !st.ok()) {
          w->snapshot.clear();
          return fail(st);
        }
      }
      if (options_.observer != nullptr) {
        options_.observer->OnQueueWait(m,
                                       static_cast<double>(SteadyNowNs() - w->enqueued_ns) * 1e-9);
      }
      w->outputs.resize(
          static_cast<size_t>((w->mode == OutputMode::kAll ? w->length : 1) * m.output_dim));
    }
    if (w->done == 0) CaptureUndoLocked(s);
    store_.LruRemove(s);
    s->SetState(SessionState::kRunning);
    picked.push_back(Picked{s, w, take, store_.State(s), absl::OkStatus(), McaCounts{}});
    used += take;
    taken[i] = 1;
  };
  for (size_t i = 0; i < runnable.size(); ++i) {
    const int64_t r = remaining(runnable[i]);
    if (r <= options_.interactive_tokens && used + r <= interactive_cap) pick(i, r);
  }
  for (size_t i = 0; i < runnable.size() && used < max_tokens; ++i) {
    if (taken[i]) continue;
    const int64_t r = remaining(runnable[i]);
    if (r > options_.interactive_tokens) pick(i, std::min(r, max_tokens - used));
  }
  for (size_t i = 0; i < runnable.size(); ++i) {
    if (taken[i] != 1 && runnable[i]->has_work()) {
      runnable[i]->in_ready = true;
      ready_.push_back(runnable[i]);
    }
  }
}

void Engine::RunForward(std::vector<Picked>& picked) {
  // One Forward per model, spans in pick order.
  std::vector<const ServedModel*> order;
  absl::flat_hash_map<const ServedModel*, std::vector<size_t>> groups;
  for (size_t i = 0; i < picked.size(); ++i) {
    auto& g = groups[picked[i].session->model];
    if (g.empty()) order.push_back(picked[i].session->model);
    g.push_back(i);
  }
  std::vector<Span> spans;
  for (const ServedModel* m : order) {
    const std::vector<size_t>& idx = groups[m];
    const int64_t n_features = m->config().n_features;
    const int64_t od = m->output_dim;
    spans.assign(idx.size(), Span{});
    for (size_t k = 0; k < idx.size(); ++k) {
      const Picked& p = picked[idx[k]];
      Work* w = p.work;
      Span& sp = spans[k];
      if (!w->input.tokens.empty()) {
        sp.tokens = absl::MakeConstSpan(w->input.tokens)
                        .subspan(static_cast<size_t>(w->done), static_cast<size_t>(p.take));
      } else {
        sp.features = absl::MakeConstSpan(w->input.features)
                          .subspan(static_cast<size_t>(w->done * n_features),
                                   static_cast<size_t>(p.take * n_features));
      }
      sp.state = p.state;
      sp.position = &w->cursor;
      sp.mca = w->mca;
      sp.mca_counts = &picked[idx[k]].mca;
      const bool final_chunk = w->done + p.take == w->length;
      if (w->mode == OutputMode::kAll) {
        sp.output = OutputSelect::kAll;
        sp.outputs = w->outputs.data() + w->done * od;
      } else if (final_chunk) {
        sp.output = OutputSelect::kLast;
        sp.outputs = w->outputs.data();
      } else {
        sp.output = OutputSelect::kNone;
      }
    }
    const int64_t start_ns = SteadyNowNs();
    absl::Status st = m->backend->Forward(spans);
    if (options_.observer != nullptr) {
      int64_t tokens = 0;
      bool step = true;
      for (size_t k : idx) {
        tokens += picked[k].take;
        step = step && picked[k].take == 1;
      }
      options_.observer->OnForward(*m, step, tokens,
                                   static_cast<double>(SteadyNowNs() - start_ns) * 1e-9);
    }
    if (!st.ok() && spans.size() > 1) {
      // The batch was undone as a whole: run each span alone so only the bad one fails.
      for (size_t k = 0; k < idx.size(); ++k) {
        picked[idx[k]].status = m->backend->Forward(absl::MakeConstSpan(&spans[k], 1));
      }
    } else {
      for (size_t k : idx) picked[k].status = st;
    }
  }
}

void Engine::CommitLocked(std::vector<Picked>& picked, std::vector<Completion>& completions) {
  ++stats_.forward_calls;
  for (Picked& p : picked) {
    Session* s = p.session;
    s->SetState(SessionState::kIdle);
    if (!p.status.ok()) {
      FailHeadLocked(s, AsInputError(p.status), completions);
    } else {
      Work* w = p.work;
      w->done += p.take;
      w->mca_count += p.mca;
      stats_.tokens_run += static_cast<uint64_t>(p.take);
      pending_tokens_ = std::max<int64_t>(0, pending_tokens_ - p.take);
      if (w->done == w->length) FinishAppendLocked(s, w, completions);
    }
    if (s->state == SessionState::kClosed) continue;
    ReadyLocked(s);
    if (!s->pinned()) store_.LruPushFront(s);
  }
}

void Engine::FinishAppendLocked(Session* s, Work* w, std::vector<Completion>& completions) {
  const ServedModel& m = *s->model;
  const int64_t od = m.output_dim;
  const int64_t before = s->position;
  s->position = w->cursor;
  if (s->tier != Tier::kScratch) s->last_used_ms = NowUnixMs();
  const McaCounts mca = w->mca_count;
  w->mca_count = McaCounts{};  // Generate: the next token counts afresh
  if (options_.observer != nullptr) {
    options_.observer->OnTokens(m, w->scored, w->length);
    options_.observer->OnMcaFlops(m, mca);
  }
  const float* row =
      w->mode == OutputMode::kAll ? w->outputs.data() + (w->length - 1) * od : w->outputs.data();
  std::copy(row, row + od, store_.LastOutput(s));
  MarkDirtyLocked(s);  // (scratch sessions are never stored)

  if (w->kind == Work::Kind::kGenerate) {
    s->last_append.position_before = -1;
    store_.SetRetryOutputs(s, {});
    GenerateProgress& g = *w->generate;
    g.last_window = window_;
    bool finished = false;
    if (g.prompt_pending) {
      g.prompt_pending = false;
    } else {
      ++g.generated;
      if (g.flow != nullptr) ++g.flow->unacked;
      const GeneratedToken t{g.pending.token, s->position, g.pending.logprob};
      ReplyLocked(
          true, HoldKeyLocked(s),
          [cb = g.on_token, t](const absl::Status& st) {
            if (st.ok()) (*cb)(t);
          },
          completions);
      finished = g.generated >= g.max_tokens || g.stop_tokens.contains(t.token);
    }
    if (!finished) {
      // Next token: sampled when the session reaches the scheduler again.
      w->input.tokens.clear();
      w->length = 0;
      w->done = 0;
      w->position_checked = false;
      w->snapshot.clear();
      w->enqueued_ns = SteadyNowNs();
      return;
    }
    std::unique_ptr<Work> owned = s->Pop();
    if (owned->generate->flow != nullptr) owned->generate->flow->parked = nullptr;
    ReplyLocked(
        true, HoldKeyLocked(s),
        [cb = std::move(owned->generate->on_done)](const absl::Status& st) mutable { cb(st); },
        completions);
    return;
  }

  AppendRecord& rec = s->last_append;
  if (w->expected_position && w->length <= std::numeric_limits<int32_t>::max()) {
    rec.position_before = before;
    rec.length = static_cast<int32_t>(w->length);
    rec.fingerprint = w->fingerprint;
    rec.mode = w->mode;
    rec.mca = mca;
    store_.SetRetryOutputs(
        s, w->mode == OutputMode::kAll && w->length > 1 ? w->outputs : std::vector<float>());
  } else {
    rec.position_before = -1;
    store_.SetRetryOutputs(s, {});
  }
  std::unique_ptr<Work> owned = s->Pop();
  AppendResult r;
  r.output_dim = od;
  r.position = s->position;
  r.uid = s->uid;
  r.mca = mca;
  if (w->mode != OutputMode::kNone) r.outputs = std::move(owned->outputs);
  const bool stored_session = s->tier != Tier::kScratch;
  ReplyLocked(
      stored_session, stored_session ? HoldKeyLocked(s) : std::string(),
      [cb = std::move(owned->on_done), r = std::move(r)](const absl::Status& st) mutable {
        if (st.ok()) {
          cb(std::move(r));
        } else {
          cb(st);
        }
      },
      completions);
  ReleaseScratchLocked(s);
}

}  // namespace aaren
