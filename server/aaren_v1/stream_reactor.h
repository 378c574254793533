// SPDX-License-Identifier: Apache-2.0
// StreamReactor: one Aaren.Stream call (raw frames; see AarenService). The first message opens a
// session (attach or create) for the caller's tenant; each later message is an append handed to
// the engine at once, so a client may pipeline appends before reading replies.
//
// Bounded: at most kMaxPending appends are in the engine or answered but unsent, and at most
// kMaxPendingBytes of their replies (counted from each append's known reply size before it is
// handed over, then from the encoded reply); past either bound the reactor stops reading until
// the client reads replies, so a client that writes and never reads holds a fixed amount of
// server memory (TCP flow control then stops it). One append is always allowed, however large
// its reply (up to --max_message_bytes, which the engine checks).
//
// The stream is bound to the session it opened, not to the id: appends carry the session's uid,
// so if the session is deleted and another made under the same id, this stream's next append
// fails with NOT_FOUND instead of landing in the new session.
//
// Replies are written from a queue, in order, one write in flight. The first error ends the
// stream with that status (a frame that does not parse included); appends queued behind it are
// dropped, and the session keeps the state of its last successful append. A client that goes
// away mid-stream cancels only its queued appends: the session stays. Self-owning: gRPC's OnDone
// deletes it, and Finish is called only once no engine callback is outstanding.
#ifndef AAREN_SERVER_AAREN_V1_STREAM_REACTOR_H_
#define AAREN_SERVER_AAREN_V1_STREAM_REACTOR_H_

#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/server_callback.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>

#include "aaren/v1/aaren.pb.h"
#include "absl/status/status.h"
#include "engine/engine.h"
#include "server/call_env.h"

namespace aaren {

class StreamReactor : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>,
                      public Drainable {
 public:
  static constexpr int kMaxPending = 64;
  static constexpr int64_t kMaxPendingBytes = 8 << 20;

  StreamReactor(const CallEnv& env, grpc::CallbackServerContext* context);

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;
  // Server drain (SIGTERM): replies already made are sent, appends still queued are dropped
  // (their clients retry them with expected_position), nothing more is read, and the stream
  // ends with UNAVAILABLE saying the server is shutting down.
  void Drain() override;

 private:
  struct Reply {
    grpc::ByteBuffer frame;
    int64_t bytes = 0;
  };
  void HandleOpen(const v1::OpenSession& open);
  void HandleAppend(v1::AppendRequest& append);
  void OnAppendDone(absl::StatusOr<AppendResult> result, int64_t reserved_bytes);
  // Under mu_: starts the next read when below both bounds.
  void MaybeReadLocked();
  // Under mu_: queues an encoded reply.
  void QueueLocked(const v1::StreamResponse& reply);
  // Under mu_: starts the next write, or Finish once nothing is outstanding.
  void PumpLocked();
  void FailLocked(absl::Status status);

  const CallEnv& env_;
  CallRecord record_;
  std::shared_ptr<CancelFlag> cancel_;
  bool holds_stream_slot_ = false;  // counted in TenantStreams
  bool registered_ = false;         // in env_.drain
  grpc::ByteBuffer frame_;          // the read in flight
  v1::StreamRequest request_;

  std::mutex mu_;
  std::string session_id_;  // empty until opened
  uint64_t session_uid_ = 0;
  int64_t output_dim_ = 0;
  int64_t n_features_ = 0;
  std::deque<Reply> replies_;
  int in_flight_ = 0;          // appends handed to the engine, not yet answered
  int64_t pending_bytes_ = 0;  // reply bytes of in-flight appends and unsent replies
  bool reading_ = false;       // a read is outstanding, or its frame is being handled
  bool reads_done_ = false;    // the client half-closed (or the call broke)
  bool writing_ = false;
  bool finished_ = false;
  bool cancelled_ = false;  // the call was cancelled or a write failed: write nothing more
  absl::Status error_;
};

}  // namespace aaren

#endif  // AAREN_SERVER_AAREN_V1_STREAM_REACTOR_H_
