// SPDX-License-Identifier: Apache-2.0
#include "server/stream_reactor.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/aaren_service.h"
#include "server/proto_convert.h"
#include "server/status_convert.h"

namespace aaren {

StreamReactor::StreamReactor(Engine* engine, ServerMetrics* metrics, McaOptions default_mca)
    : engine_(engine),
      metrics_(metrics),
      default_mca_(default_mca),
      start_(std::chrono::steady_clock::now()),
      cancel_(std::make_shared<CancelFlag>(false)) {
  if (metrics_ != nullptr) metrics_->StreamOpened();
  std::lock_guard<std::mutex> lock(mu_);
  reading_ = true;
  StartRead(&request_);
}

void StreamReactor::OnReadDone(bool ok) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    reading_ = false;
    if (!ok) {
      reads_done_ = true;
      PumpLocked();
      return;
    }
    if (!error_.ok() || finished_) return;  // ending: ignore what the client still sends
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
      FailLocked(absl::InvalidArgumentError("request: set either open or append"));
    }
  }
}

void StreamReactor::HandleOpen(const v1::OpenSession& open) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!session_id_.empty()) {
    return FailLocked(absl::InvalidArgumentError(
        absl::StrCat("open: the stream is already attached to session '", session_id_, "'")));
  }
  auto info = engine_->OpenSession(open.session_id(), open.model(), open.create_if_missing(),
                                   open.idle_ttl_seconds());
  if (!info.ok()) return FailLocked(info.status());
  session_id_ = info->session_id;
  v1::StreamResponse reply;
  ToProto(*info, reply.mutable_session());
  replies_.push_back(std::move(reply));
  reading_ = true;
  StartRead(&request_);
  PumpLocked();
}

void StreamReactor::HandleAppend(v1::AppendRequest& append) {
  absl::StatusOr<Engine::AppendParams> params;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (session_id_.empty()) {
      return FailLocked(absl::FailedPreconditionError(
          "append: the stream has no session yet; its first message must be open"));
    }
    if (!append.session_id().empty() && append.session_id() != session_id_) {
      return FailLocked(absl::InvalidArgumentError(
          absl::StrCat("append.session_id: '", append.session_id(),
                       "' is not the stream's session '", session_id_, "'")));
    }
    params = AppendParamsFromProto(append, "append.", default_mca_);
    if (!params.ok()) return FailLocked(params.status());
    params->session_id = session_id_;
    params->cancel = cancel_;
    ++in_flight_;
  }
  // Outside mu_ (the engine may call back at once), and before the next read starts: the next
  // append must reach the engine after this one.
  engine_->Append(std::move(*params),
                  [this](absl::StatusOr<AppendResult> r) { OnAppendDone(std::move(r)); });
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_ || !error_.ok() || cancelled_ || reads_done_) return;
  if (in_flight_ < kMaxInFlight) {
    reading_ = true;
    StartRead(&request_);
  } else {
    read_paused_ = true;
  }
}

void StreamReactor::OnAppendDone(absl::StatusOr<AppendResult> result) {
  std::lock_guard<std::mutex> lock(mu_);
  --in_flight_;
  if (!result.ok()) {
    FailLocked(result.status());
    return;
  }
  if (error_.ok() && !cancelled_) {
    v1::StreamResponse reply;
    AppendResponseToProto(session_id_, std::move(*result), reply.mutable_append());
    replies_.push_back(std::move(reply));
  }
  if (read_paused_ && error_.ok() && !reads_done_) {
    read_paused_ = false;
    reading_ = true;
    StartRead(&request_);
  }
  PumpLocked();
}

void StreamReactor::OnWriteDone(bool ok) {
  std::lock_guard<std::mutex> lock(mu_);
  writing_ = false;
  replies_.pop_front();
  if (!ok) {
    // The client is gone: drop queued work; the session keeps its applied appends.
    cancel_->store(true);
    cancelled_ = true;
  }
  PumpLocked();
}

void StreamReactor::OnCancel() {
  cancel_->store(true);
  std::lock_guard<std::mutex> lock(mu_);
  cancelled_ = true;
  PumpLocked();
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
    StartWrite(&replies_.front());
    return;
  }
  replies_.clear();
  if (in_flight_ == 0 && (reads_done_ || !error_.ok() || cancelled_)) {
    finished_ = true;
    const grpc::Status status =
        cancelled_ && error_.ok() ? grpc::Status::CANCELLED : ToGrpcStatus(error_);
    if (metrics_ != nullptr) {
      metrics_->StreamClosed();  // before the client can see the status
      metrics_->RecordRequest(
          "Stream", status.error_code(),
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
    }
    Finish(status);
  }
}

}  // namespace aaren
