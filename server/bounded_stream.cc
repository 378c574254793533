// SPDX-License-Identifier: Apache-2.0
#include "server/bounded_stream.h"

#include <utility>

#include "server/status_convert.h"

namespace aaren {

BoundedStream::BoundedStream(const CallEnv& env, const char* rpc,
                             grpc::CallbackServerContext* context, absl::Status draining)
    : env_(env),
      record_(env, rpc, context),
      cancel_(std::make_shared<CancelFlag>(false)),
      draining_(std::move(draining)) {}

void BoundedStream::Begin() {
  if (env_.metrics != nullptr) env_.metrics->StreamOpened();
  const bool draining = env_.drain != nullptr && !(registered_ = env_.drain->Add(this));
  std::lock_guard<std::mutex> lock(mu_);
  if (EndingLocked()) return;  // drained between Add and here: already finished
  absl::Status st = draining ? draining_ : record_.Authenticate();
  if (st.ok() && env_.streams != nullptr) {
    st = env_.streams->Acquire(record_.tenant());
    holds_stream_slot_ = st.ok();
  }
  if (!st.ok()) return FailLocked(std::move(st));
  MaybeReadLocked();
}

void BoundedStream::OnDone() {
  if (registered_) env_.drain->Remove(this);
  // The thread that called Finish may still be releasing mu_: wait for it before deleting.
  { std::lock_guard<std::mutex> lock(mu_); }
  delete this;
}

void BoundedStream::Drain() {
  std::lock_guard<std::mutex> lock(mu_);
  FailLocked(draining_);
}

void BoundedStream::MaybeReadLocked() {
  if (reading_ || reads_done_ || EndingLocked()) return;
  const int pending = in_flight_ + static_cast<int>(replies_.size());
  if (pending >= kMaxPending) return;
  if (pending > 0 && pending_bytes_ >= kMaxPendingBytes) return;
  reading_ = true;
  StartRead(&frame_);
}

void BoundedStream::OnWriteDone(bool ok) {
  std::lock_guard<std::mutex> lock(mu_);
  writing_ = false;
  pending_bytes_ -= replies_.front().bytes;
  replies_.pop_front();
  if (!ok) {
    // The client is gone: drop queued work (what was applied stays applied).
    cancel_->store(true);
    cancelled_ = true;
  }
  MaybeReadLocked();
  PumpLocked();
}

void BoundedStream::OnCancel() {
  cancel_->store(true);
  std::function<void()> after;
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    after = OnCancelLocked();
    PumpLocked();  // may Finish: `this` may be gone once the lock is released
  }
  if (after) after();
}

void BoundedStream::FailLocked(absl::Status status) {
  if (error_.ok()) error_ = std::move(status);
  cancel_->store(true);  // requests queued behind the failed one must not apply
  PumpLocked();
}

void BoundedStream::StopLocked(absl::Status status) {
  if (error_.ok()) error_ = std::move(status);
  PumpLocked();
}

void BoundedStream::PumpLocked() {
  if (finished_ || writing_) return;
  // Replies queued before an error are still delivered; then the error ends the call.
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
