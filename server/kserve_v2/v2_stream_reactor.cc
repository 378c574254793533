// SPDX-License-Identifier: Apache-2.0
#include "server/kserve_v2/v2_stream_reactor.h"

#include <chrono>
#include <optional>
#include <utility>
#include <vector>

#include "server/status_convert.h"
#include "server/unary_call.h"

namespace aaren::v2 {
namespace {

int64_t SteadyNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

absl::Status DrainingStatus() {
  return absl::UnavailableError(
      "the server is shutting down: reconnect (every request answered on this stream was "
      "applied; the others were not)");
}

}  // namespace

V2StreamReactor::V2StreamReactor(const V2Env& v2, grpc::CallbackServerContext* context)
    : BoundedStream(*v2.env, "ModelStreamInfer", context, DrainingStatus()), v2_(v2) {
  Begin();
}

void V2StreamReactor::OnReadDone(bool ok) {
  inference::ModelInferRequest request;
  {
    std::lock_guard<std::mutex> lock(mu_);
    reading_ = false;
    if (!ok) {  // the client half-closed, or the call broke
      reads_done_ = true;
      return PumpLocked();
    }
    if (EndingLocked()) return;
    if (absl::Status st = ParseRawMessage(frame_, &request); !st.ok()) {
      QueueErrorLocked("", "", st);
      MaybeReadLocked();
      return PumpLocked();
    }
    reading_ = true;  // until this request is admitted: requests must be admitted in order
  }
  const int64_t start_ns = SteadyNs();
  std::string model_name = request.model_name();
  std::string request_id = request.id();
  auto parsed = ParseInfer(request, v2_.env->engine->models(), v2_.limits);
  std::lock_guard<std::mutex> lock(mu_);
  reading_ = false;
  if (EndingLocked()) return PumpLocked();  // ending: not run
  if (!parsed.ok()) {
    v2_.stats->RecordRequest(model_name, false, SteadyNs() - start_ns);
    QueueErrorLocked(model_name, request_id, parsed.status());
    MaybeReadLocked();
    return PumpLocked();
  }
  Pending p{*std::move(parsed), 0, start_ns};
  // Its reply, and its input while it is held here (a request waits in sequences_ behind its
  // sequence's request in the engine): both count toward the stream's kMaxPendingBytes, so a
  // client cannot park unbounded input in the call.
  p.reserved = ExpectedReplyBytes(p.call) +
               static_cast<int64_t>(p.call.input.tokens.size() * sizeof(int32_t) +
                                    p.call.input.features.size() * sizeof(float));
  pending_bytes_ += p.reserved;
  ++in_flight_;
  const bool run_now = AdmitLocked(p);
  MaybeReadLocked();
  if (run_now) {
    // The engine may answer at once, on this thread: run without mu_. `this` stays alive (an
    // engine callback is outstanding, so Finish cannot have run).
    mu_.unlock();
    Run(std::move(p));
    mu_.lock();
  }
}

bool V2StreamReactor::AdmitLocked(Pending& p) {
  if (p.call.sequence_id.empty()) return true;
  auto [it, fresh] = sequences_.try_emplace(p.call.sequence_id);
  if (fresh) return true;  // no request of this sequence in the engine
  it->second.push_back(std::move(p));
  return false;
}

void V2StreamReactor::Run(Pending p) {
  const ServedModel* model = p.call.model;
  std::string sequence_id = p.call.sequence_id;
  std::string request_id = p.call.request_id;
  const int64_t reserved = p.reserved;
  const int64_t start_ns = p.start_ns;
  if (cancel_->load(std::memory_order_relaxed)) {
    // The call ended while this waited behind its sequence: not run (no store read for a reply
    // nobody will get).
    return OnInferDone(model, std::move(sequence_id), std::move(request_id), reserved, start_ns,
                       absl::CancelledError("the stream ended before this request ran"));
  }
  RunInfer(v2_.env->engine, record_.tenant(), std::move(p.call), cancel_,
           [this, model, sequence_id = std::move(sequence_id), request_id = std::move(request_id),
            reserved, start_ns](absl::StatusOr<InferResult> r) mutable {
             OnInferDone(model, std::move(sequence_id), std::move(request_id), reserved, start_ns,
                         std::move(r));
           });
}

void V2StreamReactor::OnInferDone(const ServedModel* model, std::string sequence_id,
                                  std::string request_id, int64_t reserved, int64_t start_ns,
                                  absl::StatusOr<InferResult> result) {
  v2_.stats->RecordRequest(model->name, result.ok(), SteadyNs() - start_ns);
  std::optional<Pending> next;
  {
    std::lock_guard<std::mutex> lock(mu_);
    --in_flight_;
    pending_bytes_ -= reserved;
    if (error_.ok() && !cancelled_) {
      if (result.ok()) {
        inference::ModelStreamInferResponse reply;
        ToInferResponse(*model, request_id, *std::move(result), reply.mutable_infer_response());
        QueueLocked(reply);
      } else {
        QueueErrorLocked(model->name, request_id, result.status());
      }
    }
    if (auto it = sequences_.find(sequence_id); !sequence_id.empty() && it != sequences_.end()) {
      if (!error_.ok() || cancelled_) {
        // Ending: what still waits is dropped unrun (the client sees the stream's status).
        for (const Pending& p : it->second) {
          --in_flight_;
          pending_bytes_ -= p.reserved;
        }
        it->second.clear();
      }
      if (it->second.empty()) {
        sequences_.erase(it);
      } else {
        next.emplace(std::move(it->second.front()));
        it->second.pop_front();
      }
    }
    MaybeReadLocked();
    if (!next.has_value()) return PumpLocked();  // may Finish: nothing may touch `this` after
    // This reply goes out now, not once the next request is answered. (No Finish: `next` is
    // still counted in in_flight_.)
    PumpLocked();
  }
  // The sequence's next request. This may be the scheduler thread (the engine's completion),
  // and a request not bound to the engine's copy of its session reads a shared store first.
  // (`this` stays alive: `next` is still counted in in_flight_.)
  v2_.env->engine->RunOffScheduler(
      [this, next = *std::move(next)]() mutable { Run(std::move(next)); });
}

std::function<void()> V2StreamReactor::OnCancelLocked() {
  std::vector<SessionRef> refs;
  for (const auto& [id, waiting] : sequences_) refs.emplace_back(record_.tenant(), id);
  if (refs.empty()) return nullptr;
  return [engine = v2_.env->engine, refs = std::move(refs)] {
    for (const SessionRef& ref : refs) engine->SweepCancelled(ref);
  };
}

void V2StreamReactor::QueueErrorLocked(const std::string& model, const std::string& request_id,
                                       const absl::Status& error) {
  inference::ModelStreamInferResponse reply;
  const grpc::Status st = ToGrpcStatus(error);
  reply.set_error_message(st.error_message().empty() ? StatusCodeName(st.error_code())
                                                     : st.error_message());
  reply.mutable_infer_response()->set_model_name(model);
  reply.mutable_infer_response()->set_id(request_id);
  QueueLocked(reply);
}

}  // namespace aaren::v2
