// SPDX-License-Identifier: Apache-2.0
#include "server/aaren_v1/generate_reactor.h"

#include <utility>

#include "aaren/v1/aaren.pb.h"
#include "server/aaren_v1/proto_convert.h"
#include "server/status_convert.h"
#include "server/unary_call.h"

namespace aaren {

GenerateReactor::GenerateReactor(const CallEnv& env, grpc::CallbackServerContext* context,
                                 const grpc::ByteBuffer& raw)
    : env_(env),
      record_(env, "Generate", context),
      cancel_(std::make_shared<CancelFlag>(false)),
      flow_(std::make_shared<GenerateFlow>(kWindow)) {
  if (env_.metrics != nullptr) env_.metrics->StreamOpened();
  v1::GenerateRequest request;
  absl::Status st = record_.Authenticate();
  if (st.ok()) st = ParseRawMessage(raw, &request);
  if (st.ok() && env_.streams != nullptr) {
    st = env_.streams->Acquire(record_.tenant());
    holds_stream_slot_ = st.ok();
  }
  if (!st.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    engine_done_ = true;
    status_ = std::move(st);
    PumpLocked();
    return;
  }
  session_id_ = request.session_id();
  Engine::GenerateParams params;
  params.tenant = record_.tenant();
  params.session_id = request.session_id();
  params.max_tokens = request.max_tokens();
  params.sampling.temperature = request.temperature();
  params.sampling.top_k = request.top_k();
  params.seed = request.seed();
  params.prompt = FromProto(request.prompt());
  params.stop_tokens.assign(request.stop_tokens().begin(), request.stop_tokens().end());
  params.cancel = cancel_;
  params.flow = flow_;
  env_.engine->Generate(
      std::move(params),
      [this](const GeneratedToken& t) {
        v1::GenerateResponse reply;
        reply.set_token(t.token);
        reply.set_position(t.position);
        reply.set_logprob(t.logprob);
        grpc::ByteBuffer frame;
        std::lock_guard<std::mutex> lock(mu_);
        if (!SerializeRawMessage(reply, &frame)) return;
        replies_.push_back(std::move(frame));
        PumpLocked();
      },
      [this](absl::Status done) {
        std::lock_guard<std::mutex> lock(mu_);
        engine_done_ = true;
        status_ = std::move(done);
        PumpLocked();
      });
}

void GenerateReactor::OnWriteDone(bool ok) {
  // Copies: once PumpLocked has called Finish, `this` may be deleted at any moment.
  Engine* engine = env_.engine;
  std::shared_ptr<GenerateFlow> flow = flow_;
  const SessionRef ref(record_.tenant(), session_id_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    replies_.pop_front();
    if (!ok) {
      cancel_->store(true);
      replies_.clear();
    }
    PumpLocked();
  }
  // The engine outside mu_ (its callbacks take mu_).
  if (ok) {
    engine->AckGenerated(flow);
  } else {
    engine->SweepCancelled(ref);
  }
}

void GenerateReactor::OnDone() {
  // Finish may have been called by the engine's on_done on the scheduler thread, which may still
  // be releasing mu_: wait for it before deleting.
  { std::lock_guard<std::mutex> lock(mu_); }
  delete this;
}

void GenerateReactor::OnCancel() {
  // OnCancel runs before OnDone, and the engine's on_done (which lets the call finish) cannot
  // have run yet while the Generate is parked, so `this` is alive here.
  cancel_->store(true);
  // A Generate parked for acks would otherwise wait for a client that is gone.
  if (!session_id_.empty()) env_.engine->SweepCancelled(SessionRef(record_.tenant(), session_id_));
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
    if (holds_stream_slot_) env_.streams->Release(record_.tenant());
    if (env_.metrics != nullptr) env_.metrics->StreamClosed();  // before the client sees it
    record_.Finish(status.error_code());
    Finish(status);
  }
}

}  // namespace aaren
