// SPDX-License-Identifier: Apache-2.0
// UnaryCall: the reactor of one unary RPC. It owns the call's cancel flag (set when the client
// cancels or the deadline passes, so the engine drops the call's queued work) and deletes
// itself when gRPC is done with it. Finish it exactly once, from any thread.
#ifndef AAREN_SERVER_UNARY_CALL_H_
#define AAREN_SERVER_UNARY_CALL_H_

#include <grpcpp/support/server_callback.h>

#include <memory>

#include "absl/status/status.h"
#include "engine/session.h"
#include "server/status_convert.h"

namespace aaren {

class UnaryCall : public grpc::ServerUnaryReactor {
 public:
  UnaryCall() : cancel_(std::make_shared<CancelFlag>(false)) {}

  const std::shared_ptr<CancelFlag>& cancel() const { return cancel_; }
  void Done(const absl::Status& status) { Finish(ToGrpcStatus(status)); }

  void OnCancel() override { cancel_->store(true); }
  void OnDone() override { delete this; }

 private:
  std::shared_ptr<CancelFlag> cancel_;
};

}  // namespace aaren

#endif  // AAREN_SERVER_UNARY_CALL_H_
