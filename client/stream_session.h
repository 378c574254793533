// SPDX-License-Identifier: Apache-2.0
// StreamSession: one bidirectional Aaren.Stream call bound to one session (blocking API).
//
//   StreamSession stream(client);
//   v1::OpenSession open;
//   open.set_model("demo-lm");                          // empty session_id: a new session
//   absl::StatusOr<v1::Session> session = stream.Open(open);
//   absl::StatusOr<v1::AppendResponse> out = stream.Append(request);   // one round trip
//   stream.AppendPipelined(requests, on_response);      // many writes in flight, replies in order
//   absl::Status status = stream.Close();
//
// The server replies to appends in order. An error ends the stream (the session keeps its state
// as of the last successful append); every method then returns that status, and the stream
// cannot be used again. For many concurrent streams use the callback API instead (see
// client/cli/bench_streams.h): this class blocks a thread per call in progress.
//
// Thread-safety: not thread-safe; one thread at a time (AppendPipelined runs its own writer
// thread internally). The AarenClient must outlive the StreamSession.
#ifndef AAREN_CLIENT_STREAM_SESSION_H_
#define AAREN_CLIENT_STREAM_SESSION_H_

#include <grpcpp/client_context.h>
#include <grpcpp/support/sync_stream.h>

#include <memory>

#include "aaren/v1/aaren.grpc.pb.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "client/aaren_client.h"

namespace aaren::client {

class StreamSession {
 public:
  explicit StreamSession(AarenClient& client);
  // Cancels the call if it was not closed.
  ~StreamSession();

  StreamSession(const StreamSession&) = delete;
  StreamSession& operator=(const StreamSession&) = delete;

  // Starts the call and opens (attaches to or creates) the session; returns it as the server
  // describes it. FAILED_PRECONDITION if called twice. The call carries the routing metadata
  // `aaren-session-id: open.session_id()` (client/session_routing.h) when the id is set; an open
  // that creates a session under a server-made id (empty session_id) carries none, since the id
  // is not known when the call starts.
  absl::StatusOr<v1::Session> Open(const v1::OpenSession& open);

  // Sends one append and waits for its reply. An empty request.session_id means the opened
  // session.
  absl::StatusOr<v1::AppendResponse> Append(const v1::AppendRequest& request);

  // Sends every request without waiting for replies (a writer thread) while the calling thread
  // reads the replies and passes each to on_response, in request order. Returns the first error;
  // replies received before it were delivered.
  absl::Status AppendPipelined(absl::Span<const v1::AppendRequest> requests,
                               absl::FunctionRef<void(const v1::AppendResponse&)> on_response);

  // The two halves of Append, for callers that pipeline themselves: replies come in Send order.
  // Keep the number of unanswered sends bounded (flow control can block Send while replies go
  // unread).
  absl::Status Send(const v1::AppendRequest& request);
  absl::StatusOr<v1::AppendResponse> Receive();

  // Half-closes the stream and returns its final status (OK when the server ended it cleanly).
  absl::Status Close();

  // The session as returned by Open (position as of the open).
  const v1::Session& session() const { return session_; }

 private:
  // OK, or why the stream cannot be used: FAILED_PRECONDITION before Open or after Close, the
  // final status after an error.
  absl::Status CheckUsable() const;
  absl::Status Write(const v1::StreamRequest& request);
  // Reads the next reply, which must carry `expected` (kSession or kAppend).
  absl::StatusOr<v1::StreamResponse> Read(v1::StreamResponse::ResponseCase expected);
  // Ends the call after a failed read or write (local_error OK: the call's own status) or a local
  // error (which cancels the call and becomes the final status); drains unread replies. Returns
  // the final status, never OK.
  absl::Status End(absl::Status local_error);

  AarenClient& client_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::StreamRequest, v1::StreamResponse>> stream_;
  v1::Session session_;
  bool finished_ = false;
  absl::Status final_status_;
};

}  // namespace aaren::client

#endif  // AAREN_CLIENT_STREAM_SESSION_H_
