// SPDX-License-Identifier: Apache-2.0
#include "client/stream_session.h"

#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/grpc_status.h"
#include "client/session_routing.h"
#include "core/status_macros.h"

namespace aaren::client {
namespace {

absl::string_view ReplyName(v1::StreamResponse::ResponseCase c) {
  switch (c) {
    case v1::StreamResponse::kSession:
      return "session";
    case v1::StreamResponse::kAppend:
      return "append";
    default:
      return "empty";
  }
}

absl::Status CheckReplyType(const v1::StreamResponse& reply,
                            v1::StreamResponse::ResponseCase expected) {
  if (reply.response_case() == expected) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("Stream: expected a ", ReplyName(expected),
                                          " reply, got ", ReplyName(reply.response_case())));
}

v1::StreamRequest WrapAppend(const v1::AppendRequest& append) {
  v1::StreamRequest request;
  *request.mutable_append() = append;
  return request;
}

}  // namespace

StreamSession::StreamSession(AarenClient& client) : client_(client) {}

StreamSession::~StreamSession() {
  if (stream_ != nullptr && !finished_) {
    End(absl::CancelledError("StreamSession destroyed")).IgnoreError();
  }
}

absl::Status StreamSession::CheckUsable() const {
  if (stream_ == nullptr) return absl::FailedPreconditionError("Stream: call Open first");
  if (finished_) {
    return final_status_.ok() ? absl::FailedPreconditionError("Stream: already closed")
                              : final_status_;
  }
  return absl::OkStatus();
}

absl::Status StreamSession::End(absl::Status local_error) {
  if (finished_) return final_status_;
  if (!local_error.ok()) context_.TryCancel();
  v1::StreamResponse unread;
  while (stream_->Read(&unread)) {
  }
  const absl::Status status = ToAbslStatus(stream_->Finish());
  finished_ = true;
  if (!local_error.ok()) {
    final_status_ = local_error;
  } else if (!status.ok()) {
    final_status_ = status;
  } else {
    final_status_ = absl::InternalError("Stream: the server ended the stream before replying");
  }
  return final_status_;
}

absl::Status StreamSession::Write(const v1::StreamRequest& request) {
  RETURN_IF_ERROR(CheckUsable());
  // A failed write means the call is over; its status says why.
  if (!stream_->Write(request)) return End(absl::OkStatus());
  return absl::OkStatus();
}

absl::StatusOr<v1::StreamResponse> StreamSession::Read(v1::StreamResponse::ResponseCase expected) {
  RETURN_IF_ERROR(CheckUsable());
  v1::StreamResponse reply;
  if (!stream_->Read(&reply)) return End(absl::OkStatus());
  absl::Status type = CheckReplyType(reply, expected);
  if (!type.ok()) return End(type);
  return reply;
}

absl::StatusOr<v1::Session> StreamSession::Open(const v1::OpenSession& open) {
  if (stream_ != nullptr) return absl::FailedPreconditionError("Stream: already opened");
  // The routing metadata goes out with the call's headers, before the open message: known here
  // unless the open creates a session under a server-made id.
  client_.PrepareStreamContext(context_, SessionIdOf(open));
  stream_ = client_.stub().Stream(&context_);
  v1::StreamRequest request;
  *request.mutable_open() = open;
  RETURN_IF_ERROR(Write(request));
  ASSIGN_OR_RETURN(v1::StreamResponse reply, Read(v1::StreamResponse::kSession));
  session_ = std::move(*reply.mutable_session());
  return session_;
}

absl::Status StreamSession::Send(const v1::AppendRequest& request) {
  return Write(WrapAppend(request));
}

absl::StatusOr<v1::AppendResponse> StreamSession::Receive() {
  ASSIGN_OR_RETURN(v1::StreamResponse reply, Read(v1::StreamResponse::kAppend));
  return std::move(*reply.mutable_append());
}

absl::StatusOr<v1::AppendResponse> StreamSession::Append(const v1::AppendRequest& request) {
  RETURN_IF_ERROR(Send(request));
  return Receive();
}

absl::Status StreamSession::AppendPipelined(
    absl::Span<const v1::AppendRequest> requests,
    absl::FunctionRef<void(const v1::AppendResponse&)> on_response) {
  RETURN_IF_ERROR(CheckUsable());
  // gRPC allows one Write and one Read at a time, from different threads. The writer stops by
  // itself when the call ends (its Write fails), so joining it never waits on the server.
  std::thread writer([this, requests] {
    for (const v1::AppendRequest& request : requests) {
      if (!stream_->Write(WrapAppend(request))) return;
    }
  });
  absl::Status local_error;
  bool ended = false;
  for (size_t received = 0; received < requests.size(); ++received) {
    v1::StreamResponse reply;
    if (!stream_->Read(&reply)) {
      ended = true;
      break;
    }
    local_error = CheckReplyType(reply, v1::StreamResponse::kAppend);
    if (!local_error.ok()) break;
    on_response(reply.append());
  }
  // A local error must stop the writer, which may be blocked by flow control.
  if (!local_error.ok()) context_.TryCancel();
  writer.join();
  if (ended || !local_error.ok()) return End(local_error);
  return absl::OkStatus();
}

absl::Status StreamSession::Close() {
  if (stream_ == nullptr) return absl::OkStatus();
  if (finished_) return final_status_;
  stream_->WritesDone();
  v1::StreamResponse unread;
  bool extra_reply = false;
  while (stream_->Read(&unread)) extra_reply = true;
  const absl::Status status = ToAbslStatus(stream_->Finish());
  finished_ = true;
  final_status_ = !status.ok() || !extra_reply
                      ? status
                      : absl::InternalError("Stream: the server sent a reply nobody asked for");
  return final_status_;
}

}  // namespace aaren::client
