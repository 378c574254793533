// SPDX-License-Identifier: Apache-2.0
// V2StreamReactor: one ModelStreamInfer call (raw frames). Every message is an inference
// request; each gets one ModelStreamInferResponse, OK or with error_message set, and the stream
// stays open after errors (a frame that does not parse included), as Triton's does.
//
// Order: requests of one sequence_id run one at a time in the order they arrived (a request
// waits while an earlier one of its sequence is in the engine), so a client may send a
// sequence's START and its next appends without waiting for replies; requests of different
// sequences, and stateless ones, run concurrently and may be answered out of order (responses
// carry the request id).
//
// Bounded, drained, cancelled and finished as every BoundedStream (server/bounded_stream.h),
// like aaren.v1 Stream: requests waiting behind their sequence count as in flight. Counted
// against --max_streams_per_tenant. SIGTERM ends it with UNAVAILABLE after the replies already
// made.
#ifndef AAREN_SERVER_KSERVE_V2_V2_STREAM_REACTOR_H_
#define AAREN_SERVER_KSERVE_V2_V2_STREAM_REACTOR_H_

#include <deque>
#include <functional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "server/bounded_stream.h"
#include "server/kserve_v2/v2_grpc_service.h"
#include "server/kserve_v2/v2_infer.h"

namespace aaren::v2 {

class V2StreamReactor final : public BoundedStream {
 public:
  V2StreamReactor(const V2Env& v2, grpc::CallbackServerContext* context);

  void OnReadDone(bool ok) override;

 private:
  // The stream's requests queued in the engine (one per sequence) drop now, not when their
  // sessions reach the scheduler (they may wait behind a long Generate).
  std::function<void()> OnCancelLocked() override;

  struct Pending {
    InferCall call;
    int64_t reserved = 0;  // reply bytes counted in pending_bytes_
    int64_t start_ns = 0;
  };

  // Under mu_: true when `p` should run now; otherwise it is queued behind its sequence's
  // request in the engine.
  bool AdmitLocked(Pending& p);
  void Run(Pending p);
  void OnInferDone(const ServedModel* model, std::string sequence_id, std::string request_id,
                   int64_t reserved, int64_t start_ns, absl::StatusOr<InferResult> result);
  // Under mu_: queues a response with error_message set.
  void QueueErrorLocked(const std::string& model, const std::string& request_id,
                        const absl::Status& error);

  const V2Env& v2_;
  // Under mu_: sequences with a request in the engine, and the requests waiting behind it.
  absl::flat_hash_map<std::string, std::deque<Pending>> sequences_;
};

}  // namespace aaren::v2

#endif  // AAREN_SERVER_KSERVE_V2_V2_STREAM_REACTOR_H_
