// SPDX-License-Identifier: Apache-2.0
// StreamReactor: one Aaren.Stream call (raw frames; see AarenService). The first message opens a
// session (attach or create) for the caller's tenant; each later message is an append handed to
// the engine at once, so a client may pipeline appends before reading replies.
//
// Bounded, drained, cancelled and finished as every BoundedStream (server/bounded_stream.h): at
// most kMaxPending appends in the engine or answered but unsent, and kMaxPendingBytes of their
// replies, before it stops reading.
//
// The stream is bound to the session it opened, not to the id: appends carry the session's uid,
// so if the session is deleted and another made under the same id, this stream's next append
// fails with NOT_FOUND instead of landing in the new session.
//
// Replies are written in order. The first error ends the stream with that status (a frame that does
// not parse included); appends queued behind it are dropped, and the session keeps the state of its
// last successful append. A client that goes away mid-stream cancels only its queued appends: the
// session stays. Self-owning: gRPC's OnDone deletes it, and Finish is called only once no engine
// callback is outstanding.
#ifndef AAREN_SERVER_AAREN_V1_STREAM_REACTOR_H_
#define AAREN_SERVER_AAREN_V1_STREAM_REACTOR_H_

#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/server_callback.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "aaren/v1/aaren.pb.h"
#include "absl/status/status.h"
#include "engine/engine.h"
#include "server/bounded_stream.h"
#include "server/call_env.h"

namespace aaren {

class StreamReactor final : public BoundedStream {
 public:
  StreamReactor(const CallEnv& env, grpc::CallbackServerContext* context);

  void OnReadDone(bool ok) override;

 private:
  void HandleOpen(const v1::OpenSession& open);
  void HandleAppend(v1::AppendRequest& append);
  // refused_before_queueing: the engine refused it inside Append (nothing was queued).
  void OnAppendDone(absl::StatusOr<AppendResult> result, int64_t reserved_bytes,
                    bool refused_before_queueing);
  std::function<void()> OnCancelLocked() override;

  v1::StreamRequest request_;
  // Under mu_:
  std::string session_id_;  // empty until opened
  uint64_t session_uid_ = 0;
  int64_t output_dim_ = 0;
  int64_t n_features_ = 0;
};

}  // namespace aaren

#endif  // AAREN_SERVER_AAREN_V1_STREAM_REACTOR_H_
