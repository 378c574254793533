// SPDX-License-Identifier: Apache-2.0
// GenerateReactor: one Aaren.Generate call (server streaming). The engine samples and appends
// one token per scheduler tick; each token is queued here and written in order, one write in
// flight. Cancelling the call stops generation after the token being appended. Self-owning.
#ifndef AAREN_SERVER_GENERATE_REACTOR_H_
#define AAREN_SERVER_GENERATE_REACTOR_H_

#include <grpcpp/support/server_callback.h>

#include <chrono>
#include <deque>
#include <memory>
#include <mutex>

#include "aaren/v1/aaren.pb.h"
#include "absl/status/status.h"
#include "engine/engine.h"
#include "server/metrics/server_metrics.h"

namespace aaren {

class GenerateReactor : public grpc::ServerWriteReactor<v1::GenerateResponse> {
 public:
  // `metrics` may be null.
  GenerateReactor(Engine* engine, ServerMetrics* metrics, const v1::GenerateRequest& request);

  void OnWriteDone(bool ok) override;
  void OnCancel() override { cancel_->store(true); }
  void OnDone() override { delete this; }

 private:
  void PumpLocked();

  ServerMetrics* metrics_;
  std::chrono::steady_clock::time_point start_;
  std::shared_ptr<CancelFlag> cancel_;
  std::mutex mu_;
  std::deque<v1::GenerateResponse> replies_;
  bool writing_ = false;
  bool engine_done_ = false;
  bool finished_ = false;
  absl::Status status_;
};

}  // namespace aaren

#endif  // AAREN_SERVER_GENERATE_REACTOR_H_
