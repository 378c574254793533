// SPDX-License-Identifier: Apache-2.0
#include "server/aaren_v1/stream_reactor.h"

#include <utility>

#include "absl/strings/str_cat.h"
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
    : env_(env), record_(env, "Stream", context), cancel_(std::make_shared<CancelFlag>(false)) {
  if (env_.metrics != nullptr) env_.metrics->StreamOpened();
  const bool draining = env_.drain != nullptr && !(registered_ = env_.drain->Add(this));
  std::lock_guard<std::mutex> lock(mu_);
  absl::Status st = draining ? DrainingStatus() : record_.Authenticate();
  if (st.ok() && env_.streams != nullptr) {
    st = env_.streams->Acquire(record_.tenant());
    holds_stream_slot_ = st.ok();
  }
  if (!st.ok()) {
    FailLocked(std::move(st));
    return;
  }
  MaybeReadLocked();
}

void StreamReactor::OnDone() {
  if (registered_) env_.drain->Remove(this);
  delete this;
}

void StreamReactor::Drain() {
  std::lock_guard<std::mutex> lock(mu_);
  FailLocked(DrainingStatus());
}

void StreamReactor::MaybeReadLocked() {
  if (reading_ || reads_done_ || finished_ || !error_.ok() || cancelled_) return;
  const int pending = in_flight_ + static_cast<int>(replies_.size());
  if (pending >= kMaxPending) return;
  if (pending > 0 && pending_bytes_ >= kMaxPendingBytes) return;
  reading_ = true;
  StartRead(&frame_);
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
    if (!error_.ok() || finished_) {  // ending: ignore what the client still sends
      reading_ = false;
      return;
    }
    request_.Clear();
    if (absl::Status st = ParseRawMessage(frame_, &request_); !st.ok()) {
      reading_ = false;
      return FailLocked(std::move(st));
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
      FailLocked(absl::InvalidArgumentError("request: set either open or append"));
    }
  }
}

void StreamReactor::HandleOpen(const v1::OpenSession& open) {
  std::lock_guard<std::mutex> lock(mu_);
  reading_ = false;
  if (!session_id_.empty()) {
    return FailLocked(absl::InvalidArgumentError(
        absl::StrCat("open: the stream is already attached to session '", session_id_, "'")));
  }
  auto info =
      env_.engine->OpenSession(SessionRef(record_.tenant(), open.session_id()), open.model(),
                               open.create_if_missing(), open.idle_ttl_seconds());
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
      FailLocked(std::move(st));
    };
    if (session_id_.empty()) {
      return fail(absl::FailedPreconditionError(
          "append: the stream has no session yet; its first message must be open"));
    }
    if (!append.session_id().empty() && append.session_id() != session_id_) {
      return fail(absl::InvalidArgumentError(
          absl::StrCat("append.session_id: '", append.session_id(),
                       "' is not the stream's session '", session_id_, "'")));
    }
    params = AppendParamsFromProto(append, "append.", env_.default_mca);
    if (!params.ok()) return fail(params.status());
    params->tenant = record_.tenant();
    params->session_id = session_id_;
    params->expected_uid = session_uid_;
    params->cancel = cancel_;
    reserved = ExpectedReplyBytes(*params, n_features_, output_dim_);
    pending_bytes_ += reserved;
    ++in_flight_;
  }
  // Outside mu_ (the engine may call back at once), and before the next read starts (no read
  // is outstanding: this runs from OnReadDone): the next append reaches the engine after this.
  env_.engine->Append(std::move(*params), [this, reserved](absl::StatusOr<AppendResult> r) {
    OnAppendDone(std::move(r), reserved);
  });
  std::lock_guard<std::mutex> lock(mu_);
  reading_ = false;
  MaybeReadLocked();
}

void StreamReactor::QueueLocked(const v1::StreamResponse& reply) {
  Reply r;
  if (!SerializeRawMessage(reply, &r.frame)) {
    return FailLocked(absl::InternalError("the reply could not be encoded"));
  }
  r.bytes = static_cast<int64_t>(r.frame.Length());
  pending_bytes_ += r.bytes;
  replies_.push_back(std::move(r));
}

void StreamReactor::OnAppendDone(absl::StatusOr<AppendResult> result, int64_t reserved_bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  --in_flight_;
  pending_bytes_ -= reserved_bytes;
  if (!result.ok()) {
    FailLocked(result.status());
    return;
  }
  if (error_.ok() && !cancelled_) {
    v1::StreamResponse reply;
    AppendResponseToProto(session_id_, std::move(*result), reply.mutable_append());
    QueueLocked(reply);
  }
  MaybeReadLocked();
  PumpLocked();
}

void StreamReactor::OnWriteDone(bool ok) {
  std::lock_guard<std::mutex> lock(mu_);
  writing_ = false;
  pending_bytes_ -= replies_.front().bytes;
  replies_.pop_front();
  if (!ok) {
    // The client is gone: drop queued work; the session keeps its applied appends.
    cancel_->store(true);
    cancelled_ = true;
  }
  MaybeReadLocked();
  PumpLocked();
}

void StreamReactor::OnCancel() {
  cancel_->store(true);
  Engine* engine = env_.engine;
  SessionRef ref;
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    ref = SessionRef(record_.tenant(), session_id_);
    PumpLocked();  // may Finish: `this` may be gone after the lock is released
  }
  if (!ref.id.empty()) engine->SweepCancelled(ref);
}

void StreamReactor::FailLocked(absl::Status status) {
  if (error_.ok()) error_ = std::move(status);
  cancel_->store(true);  // appends queued behind the failed one must not apply
  PumpLocked();
}

void StreamReactor::PumpLocked() {
  if (finished_ || writing_) return;
  // Replies queued before an error are still delivered; then the error ends the stream.
  if (!replies_.empty() && !cancelled_) {
    writing_ = true;
    StartWrite(&replies_.front().frame);
    return;
  }
  for (const Reply& r : replies_) pending_bytes_ -= r.bytes;
  replies_.clear();
  if (in_flight_ == 0 && (reads_done_ || !error_.ok() || cancelled_)) {
    finished_ = true;
    const grpc::Status status =
        cancelled_ && error_.ok() ? grpc::Status::CANCELLED : ToGrpcStatus(error_);
    if (holds_stream_slot_) env_.streams->Release(record_.tenant());
    if (env_.metrics != nullptr) env_.metrics->StreamClosed();  // before the client sees it
    record_.Finish(status.error_code());
    Finish(status);
  }
}

}  // namespace aaren
