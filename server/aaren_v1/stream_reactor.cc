// SPDX-License-Identifier: Apache-2.0
#include "server/aaren_v1/stream_reactor.h"

#include <atomic>
#include <memory>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/input_validation.h"
#include "server/aaren_v1/aaren_service.h"
#include "server/aaren_v1/proto_convert.h"
#include "server/status_convert.h"
#include "server/unary_call.h"

namespace aaren {
namespace {

// Bytes an append's reply carries besides its output floats (an overestimate).
constexpr int64_t kReplyOverheadBytes = 256;

int64_t ExpectedReplyBytes(const Engine::AppendParams& params, int64_t n_features,
                           int64_t output_dim) {
  const int64_t tokens = params.input.length(n_features);
  int64_t floats = 0;
  if (params.mode == OutputMode::kAll) floats = tokens * output_dim;
  if (params.mode == OutputMode::kLast) floats = output_dim;
  return floats * 4 + kReplyOverheadBytes;
}

absl::Status DrainingStatus() {
  return absl::UnavailableError(
      "the server is shutting down: reconnect (every append answered on this stream was "
      "applied; retry the others with expected_position)");
}

}  // namespace

StreamReactor::StreamReactor(const CallEnv& env, grpc::CallbackServerContext* context)
    : BoundedStream(env, "Stream", context, DrainingStatus()) {
  Begin();
}

void StreamReactor::OnReadDone(bool ok) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    // reading_ stays true until the frame is handled, so that no other thread starts the next
    // read before this append has reached the engine (appends must arrive in order).
    if (!ok) {
      reading_ = false;
      // The raw frames always "parse": a failed read is the client's half-close or a broken
      // call, never a malformed message (that is ours to detect, below).
      reads_done_ = true;
      PumpLocked();
      return;
    }
    if (EndingLocked()) {  // ending: ignore what the client still sends
      reading_ = false;
      return;
    }
    request_.Clear();
    if (absl::Status st = ParseRawMessage(frame_, &request_); !st.ok()) {
      reading_ = false;
      return StopLocked(std::move(st));
    }
  }
  switch (request_.request_case()) {
    case v1::StreamRequest::kOpen:
      HandleOpen(request_.open());
      break;
    case v1::StreamRequest::kAppend:
      HandleAppend(*request_.mutable_append());
      break;
    default: {
      std::lock_guard<std::mutex> lock(mu_);
      reading_ = false;
      StopLocked(absl::InvalidArgumentError("request: set either open or append"));
    }
  }
}

void StreamReactor::HandleOpen(const v1::OpenSession& open) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!session_id_.empty()) {
      reading_ = false;
      return StopLocked(absl::InvalidArgumentError(
          absl::StrCat("open: the stream is already attached to session '", session_id_, "'")));
    }
    // The open runs without mu_: it may read a shared store or, under --durability=ack, wait
    // for a commit, and meanwhile a cancel or the server's drain (which asks every stream in
    // turn) must not wait for it. Counted in in_flight_, so the call cannot finish under it;
    // reading_ stays true, so no read replaces `open` (a part of request_) before it is done.
    ++in_flight_;
  }
  auto info =
      env_.engine->OpenSession(SessionRef(record_.tenant(), open.session_id()), open.model(),
                               open.create_if_missing(), open.idle_ttl_seconds());
  std::lock_guard<std::mutex> lock(mu_);
  --in_flight_;
  reading_ = false;
  if (!info.ok()) return FailLocked(info.status());
  session_id_ = info->session_id;
  session_uid_ = info->uid;
  if (const ServedModel* m = env_.engine->models().Find(info->model); m != nullptr) {
    output_dim_ = m->output_dim;
    n_features_ = m->config().n_features;
  }
  v1::StreamResponse reply;
  ToProto(*info, reply.mutable_session());
  QueueLocked(reply);
  MaybeReadLocked();
  PumpLocked();
}

void StreamReactor::HandleAppend(v1::AppendRequest& append) {
  absl::StatusOr<Engine::AppendParams> params;
  int64_t reserved = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto fail = [&](absl::Status st) {
      reading_ = false;
      StopLocked(std::move(st));
    };
    if (session_id_.empty()) {
      return fail(absl::FailedPreconditionError(
          "append: the stream has no session yet; its first message must be open"));
    }
    if (!append.session_id().empty() && append.session_id() != session_id_) {
      return fail(absl::InvalidArgumentError(
          absl::StrCat("append.session_id: '", Quoted(append.session_id()),
                       "' is not the stream's session '", session_id_, "'")));
    }
    params = AppendParamsFromProto(append, "append.", env_.default_mca);
    if (!params.ok()) return fail(params.status());
    params->tenant = record_.tenant();
    params->session_id = session_id_;
    params->expected_uid = session_uid_;
    params->cancel = cancel_;
    // Its reply and its input, held by the engine until it runs: both count toward the
    // stream's kMaxPendingBytes, so a client cannot queue unbounded input (64 appends of 32 MB
    // with OUTPUT_MODE_NONE held 1.4 GB) behind a long one.
    reserved = ExpectedReplyBytes(*params, n_features_, output_dim_) +
               static_cast<int64_t>(params->input.tokens.size() * sizeof(int32_t) +
                                    params->input.features.size() * sizeof(float));
    pending_bytes_ += reserved;
    ++in_flight_;
  }
  // Outside mu_ (the engine may call back at once), and before the next read starts (no read
  // is outstanding: this runs from OnReadDone): the next append reaches the engine after this.
  // A refusal from inside Append, on this thread (validation: nothing was queued), ends the
  // stream like the reactor's own refusals: the appends before it are still answered. A failure
  // once queued (on the scheduler thread) cancels what the stream queued behind it.
  const std::thread::id caller = std::this_thread::get_id();
  auto in_call = std::make_shared<std::atomic<bool>>(true);
  env_.engine->Append(
      std::move(*params), [this, reserved, caller, in_call](absl::StatusOr<AppendResult> r) {
        const bool refused = in_call->load() && std::this_thread::get_id() == caller;
        OnAppendDone(std::move(r), reserved, refused);
      });
  in_call->store(false);
  std::lock_guard<std::mutex> lock(mu_);
  reading_ = false;
  MaybeReadLocked();
}

void StreamReactor::OnAppendDone(absl::StatusOr<AppendResult> result, int64_t reserved_bytes,
                                 bool refused_before_queueing) {
  std::lock_guard<std::mutex> lock(mu_);
  --in_flight_;
  pending_bytes_ -= reserved_bytes;
  if (!result.ok()) {
    if (refused_before_queueing) return StopLocked(result.status());
    FailLocked(result.status());
    return;
  }
  // Answered unless the call was cancelled or failed in a way that dropped its queued work (an
  // append that ran before that is applied; the client retries it with expected_position). A
  // refusal (StopLocked) comes after every append in flight: they are all answered.
  if (!cancelled_ && !cancel_->load()) {
    v1::StreamResponse reply;
    AppendResponseToProto(session_id_, std::move(*result), reply.mutable_append());
    QueueLocked(reply);
  }
  MaybeReadLocked();
  PumpLocked();
}

std::function<void()> StreamReactor::OnCancelLocked() {
  if (session_id_.empty()) return nullptr;
  // Queued appends of this call drop now rather than when the session reaches the scheduler.
  return [engine = env_.engine, ref = SessionRef(record_.tenant(), session_id_)] {
    engine->SweepCancelled(ref);
  };
}

}  // namespace aaren
