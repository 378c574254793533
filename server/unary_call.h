// SPDX-License-Identifier: Apache-2.0
// UnaryCall: the reactor of one unary RPC. It owns the call's cancel flag (set when the client
// cancels or the deadline passes, so the engine drops the call's queued work), records the
// call's status and duration in the metrics when it finishes, and deletes itself when gRPC is
// done with it. Finish it (Done) exactly once, from any thread.
#ifndef AAREN_SERVER_UNARY_CALL_H_
#define AAREN_SERVER_UNARY_CALL_H_

#include <grpcpp/support/server_callback.h>

#include <chrono>
#include <memory>

#include "absl/status/status.h"
#include "engine/session.h"
#include "server/metrics/server_metrics.h"
#include "server/status_convert.h"

namespace aaren {

class UnaryCall : public grpc::ServerUnaryReactor {
 public:
  // `metrics` may be null; `rpc` is the method name, a literal.
  UnaryCall(ServerMetrics* metrics, const char* rpc)
      : cancel_(std::make_shared<CancelFlag>(false)),
        metrics_(metrics),
        rpc_(rpc),
        start_(std::chrono::steady_clock::now()) {}

  const std::shared_ptr<CancelFlag>& cancel() const { return cancel_; }
  void Done(const absl::Status& status) {
    const grpc::Status st = ToGrpcStatus(status);
    if (metrics_ != nullptr) {
      metrics_->RecordRequest(
          rpc_, st.error_code(),
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
    }
    Finish(st);
  }

  void OnCancel() override { cancel_->store(true); }
  void OnDone() override { delete this; }

 private:
  std::shared_ptr<CancelFlag> cancel_;
  ServerMetrics* metrics_;
  const char* rpc_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace aaren

#endif  // AAREN_SERVER_UNARY_CALL_H_
