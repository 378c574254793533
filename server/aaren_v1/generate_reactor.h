// SPDX-License-Identifier: Apache-2.0
// GenerateReactor: one Aaren.Generate call (server streaming, raw frames; see AarenService). The
// engine samples and appends one token per scheduler tick; each token is queued here and written
// in order, one write in flight. Flow-controlled (GenerateFlow): the engine stops sampling while
// kWindow tokens are unsent, so a client that does not read pauses generation instead of
// filling memory. Cancelling the call stops generation after the token being appended; deleting
// the session ends it with NOT_FOUND. Self-owning.
#ifndef AAREN_SERVER_AAREN_V1_GENERATE_REACTOR_H_
#define AAREN_SERVER_AAREN_V1_GENERATE_REACTOR_H_

#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/server_callback.h>

#include <deque>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "engine/engine.h"
#include "server/call_env.h"

namespace aaren {

class GenerateReactor : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  static constexpr int64_t kWindow = 16;

  GenerateReactor(const CallEnv& env, grpc::CallbackServerContext* context,
                  const grpc::ByteBuffer& request);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  void PumpLocked();

  const CallEnv& env_;
  CallRecord record_;
  std::shared_ptr<CancelFlag> cancel_;
  std::shared_ptr<GenerateFlow> flow_;
  std::string session_id_;
  bool holds_stream_slot_ = false;
  std::mutex mu_;
  std::deque<grpc::ByteBuffer> replies_;
  bool writing_ = false;
  bool engine_done_ = false;
  bool finished_ = false;
  absl::Status status_;
};

}  // namespace aaren

#endif  // AAREN_SERVER_AAREN_V1_GENERATE_REACTOR_H_
