// SPDX-License-Identifier: Apache-2.0
#include "server/generate_reactor.h"

#include <utility>

#include "server/proto_convert.h"
#include "server/status_convert.h"

namespace aaren {

GenerateReactor::GenerateReactor(Engine* engine, ServerMetrics* metrics,
                                 const v1::GenerateRequest& request)
    : metrics_(metrics),
      start_(std::chrono::steady_clock::now()),
      cancel_(std::make_shared<CancelFlag>(false)) {
  if (metrics_ != nullptr) metrics_->StreamOpened();
  Engine::GenerateParams params;
  params.session_id = request.session_id();
  params.max_tokens = request.max_tokens();
  params.sampling.temperature = request.temperature();
  params.sampling.top_k = request.top_k();
  params.seed = request.seed();
  params.prompt = FromProto(request.prompt());
  params.stop_tokens.assign(request.stop_tokens().begin(), request.stop_tokens().end());
  params.cancel = cancel_;
  engine->Generate(
      std::move(params),
      [this](const GeneratedToken& t) {
        std::lock_guard<std::mutex> lock(mu_);
        v1::GenerateResponse reply;
        reply.set_token(t.token);
        reply.set_position(t.position);
        reply.set_logprob(t.logprob);
        replies_.push_back(std::move(reply));
        PumpLocked();
      },
      [this](absl::Status st) {
        std::lock_guard<std::mutex> lock(mu_);
        engine_done_ = true;
        status_ = std::move(st);
        PumpLocked();
      });
}

void GenerateReactor::OnWriteDone(bool ok) {
  std::lock_guard<std::mutex> lock(mu_);
  writing_ = false;
  replies_.pop_front();
  if (!ok) {
    cancel_->store(true);
    replies_.clear();
  }
  PumpLocked();
}

void GenerateReactor::PumpLocked() {
  if (finished_ || writing_) return;
  if (!replies_.empty() && !cancel_->load()) {
    writing_ = true;
    StartWrite(&replies_.front());
    return;
  }
  if (engine_done_) {
    finished_ = true;
    const grpc::Status status = ToGrpcStatus(status_);
    if (metrics_ != nullptr) {
      metrics_->StreamClosed();  // before the client can see the status
      metrics_->RecordRequest(
          "Generate", status.error_code(),
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
    }
    Finish(status);
  }
}

}  // namespace aaren
