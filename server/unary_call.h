// SPDX-License-Identifier: Apache-2.0
// UnaryCall<Request, Response>: the reactor of one unary RPC of a raw (ByteBuffer) service. It
// owns the request and response messages, so that parsing is the server's own step: a request
// that is not a valid message gets INVALID_ARGUMENT naming its type (gRPC's own parse failure
// would give a bare status the server never sees, uncounted). It authenticates the caller
// (CallRecord), owns the call's cancel flag (set when the client cancels or the deadline
// passes, so the engine drops the call's queued work; an optional hook runs then too), and on
// Done serializes the response, counts the call and finishes it. Self-owning: gRPC's OnDone
// deletes it. Call Done exactly once, from any thread.
#ifndef AAREN_SERVER_UNARY_CALL_H_
#define AAREN_SERVER_UNARY_CALL_H_

#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/server_callback.h>

#include <functional>
#include <memory>
#include <mutex>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/session.h"
#include "server/call_env.h"
#include "server/status_convert.h"

namespace aaren {

// Parses a message from a raw request; INVALID_ARGUMENT naming the message type otherwise.
template <typename Message>
absl::Status ParseRawMessage(const grpc::ByteBuffer& raw, Message* out) {
  grpc::ByteBuffer copy(raw);  // Deserialize consumes its buffer (a reference count here)
  if (!grpc::SerializationTraits<Message>::Deserialize(&copy, out).ok()) {
    return absl::InvalidArgumentError(absl::StrCat("request: not a valid ",
                                                   Message::descriptor()->full_name(),
                                                   " message (the protobuf encoding is broken)"));
  }
  return absl::OkStatus();
}

// Serializes a reply; false (with `out` untouched) when it cannot be encoded.
template <typename Message>
bool SerializeRawMessage(const Message& message, grpc::ByteBuffer* out) {
  bool own = false;
  return grpc::SerializationTraits<Message>::Serialize(message, out, &own).ok();
}

template <typename Request, typename Response>
class UnaryCall final : public grpc::ServerUnaryReactor {
 public:
  // `reply` is gRPC's response buffer for this call.
  UnaryCall(const CallEnv& env, const char* rpc, grpc::CallbackServerContext* context,
            grpc::ByteBuffer* reply)
      : record_(env, rpc, context), reply_(reply), cancel_(std::make_shared<CancelFlag>(false)) {}

  // Authenticates the caller (unless `authenticate` is false: health probes), then parses `raw`
  // into request. Done it with the error otherwise.
  absl::Status Begin(const grpc::ByteBuffer& raw, bool authenticate = true) {
    if (authenticate) {
      if (absl::Status st = record_.Authenticate(); !st.ok()) return st;
    }
    return ParseRawMessage(raw, &request);
  }

  Request request;
  Response response;
  const std::string& tenant() const { return record_.tenant(); }
  const std::shared_ptr<CancelFlag>& cancel() const { return cancel_; }
  // Runs once (on gRPC's thread) if the call is cancelled or passes its deadline after this.
  void OnCancelled(std::function<void()> hook) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!cancelled_) {
        on_cancel_ = std::move(hook);
        return;
      }
    }
    hook();  // already cancelled: at once
  }

  void Done(const absl::Status& status) {
    grpc::Status st = ToGrpcStatus(status);
    if (st.ok() && !SerializeRawMessage(response, reply_)) {
      st = grpc::Status(grpc::StatusCode::INTERNAL, "the reply could not be encoded");
    }
    record_.Finish(st.error_code());
    Finish(st);
  }

  void OnCancel() override {
    cancel_->store(true);
    std::function<void()> hook;
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled_ = true;
      hook = std::move(on_cancel_);
    }
    if (hook) hook();
  }
  void OnDone() override { delete this; }

 private:
  CallRecord record_;
  grpc::ByteBuffer* reply_;
  std::shared_ptr<CancelFlag> cancel_;
  std::mutex mu_;
  bool cancelled_ = false;
  std::function<void()> on_cancel_;
};

}  // namespace aaren

#endif  // AAREN_SERVER_UNARY_CALL_H_
