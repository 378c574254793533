// SPDX-License-Identifier: Apache-2.0
// BoundedStream: what the bidirectional streaming calls of every protocol share (aaren.v1
// Stream, inference ModelStreamInfer): authentication and the --max_streams_per_tenant slot at
// the start, a reply queue written in order with one write in flight, the backpressure bound,
// the server drain, cancellation and the one Finish.
//
// Bounded: at most kMaxPending requests are in the engine (or waiting inside the call) or
// answered but unsent, and at most kMaxPendingBytes of their replies (a request's reply bytes
// are reserved from what is known before it is handed over, then the encoded reply counts);
// past either bound the call stops reading until the client reads replies, so a client that
// writes and never reads holds a fixed amount of server memory (TCP flow control then stops
// it). One request is always allowed, however large its reply.
//
// The derived reactor reads frames (OnReadDone), counts each request it hands to the engine in
// in_flight_ and its reservation in pending_bytes_, and queues replies with QueueLocked. The
// first error given to FailLocked ends the call with that status once the replies queued
// before it are written and nothing is in flight; a cancelled call (or a failed write) writes
// nothing more. A request refused by the reactor itself (StopLocked: unparsable, invalid) ends
// the call the same way but lets the requests before it finish and be answered first.
// Self-owning: gRPC's OnDone deletes it, and Finish is called only once no engine
// callback is outstanding.
//
// Thread-safety: every *Locked member runs under mu_; callbacks may come on any thread.
#ifndef AAREN_SERVER_BOUNDED_STREAM_H_
#define AAREN_SERVER_BOUNDED_STREAM_H_

#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/server_callback.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>

#include "absl/status/status.h"
#include "engine/session.h"
#include "server/call_env.h"
#include "server/unary_call.h"

namespace aaren {

class BoundedStream : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>,
                      public Drainable {
 public:
  static constexpr int kMaxPending = 64;
  static constexpr int64_t kMaxPendingBytes = 8 << 20;

  void OnWriteDone(bool ok) final;
  void OnCancel() final;
  void OnDone() final;
  // Server drain (SIGTERM): replies already made are sent, requests still queued are dropped,
  // nothing more is read, and the call ends with the drain status.
  void Drain() final;

 protected:
  // `rpc`: the metrics and access-log label. `draining`: the status the call ends with on drain
  // (UNAVAILABLE, saying what the client should retry).
  BoundedStream(const CallEnv& env, const char* rpc, grpc::CallbackServerContext* context,
                absl::Status draining);
  ~BoundedStream() override = default;

  // Authenticates the caller, takes its stream slot and starts reading (or fails the call).
  // Call once, at the end of the derived constructor.
  void Begin();

  // Runs (outside mu_, after the call may have finished: it must not touch `this`) when the
  // call is cancelled: e.g. sweeping the engine of the call's queued work.
  virtual std::function<void()> OnCancelLocked() { return nullptr; }

  // Under mu_: starts the next read when below both bounds and still reading.
  void MaybeReadLocked();
  // Under mu_: queues an encoded reply (INTERNAL ends the call if it cannot be encoded).
  template <typename Message>
  void QueueLocked(const Message& reply) {
    Reply r;
    if (!SerializeRawMessage(reply, &r.frame)) {
      return FailLocked(absl::InternalError("the reply could not be encoded"));
    }
    r.bytes = static_cast<int64_t>(r.frame.Length());
    pending_bytes_ += r.bytes;
    replies_.push_back(std::move(r));
  }
  // Under mu_: starts the next write, or Finish once nothing is outstanding. May Finish: the
  // caller must not touch `this` after releasing mu_ unless an engine callback is outstanding.
  void PumpLocked();
  // Under mu_: the first error ends the call (queued work is cancelled).
  void FailLocked(absl::Status status);
  // Under mu_: the request just read is refused before it reached the engine: nothing more is
  // read, the requests already handed over run and their replies are written, then the call
  // ends with `status` (the first error wins). What the client sent before the bad request is
  // answered, so it knows what was applied.
  void StopLocked(absl::Status status);
  // Under mu_: whether the call is ending (failed, cancelled or finished).
  bool EndingLocked() const { return finished_ || !error_.ok() || cancelled_; }

  const CallEnv& env_;
  CallRecord record_;
  std::shared_ptr<CancelFlag> cancel_;  // set when the call ends early: queued work drops
  grpc::ByteBuffer frame_;              // the read in flight

  std::mutex mu_;
  // Requests handed to the engine (or waiting), not yet answered; also an engine call the
  // reactor makes without mu_ (the aaren.v1 open): the call cannot Finish while it runs.
  int in_flight_ = 0;
  int64_t pending_bytes_ = 0;  // reply bytes reserved for them and of unsent replies
  bool reading_ = false;       // a read is outstanding, or its frame is being handled
  bool reads_done_ = false;    // the client half-closed (or the call broke)
  bool cancelled_ = false;     // cancelled, or a write failed: write nothing more
  absl::Status error_;         // ends the call

 private:
  struct Reply {
    grpc::ByteBuffer frame;
    int64_t bytes = 0;
  };

  const absl::Status draining_;
  bool holds_stream_slot_ = false;  // counted in TenantStreams
  bool registered_ = false;         // in env_.drain
  std::deque<Reply> replies_;
  bool writing_ = false;
  bool finished_ = false;
};

}  // namespace aaren

#endif  // AAREN_SERVER_BOUNDED_STREAM_H_
