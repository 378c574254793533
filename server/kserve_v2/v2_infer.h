// SPDX-License-Identifier: Apache-2.0
// The KServe v2 / Triton inference request over the engine, shared by the gRPC service
// (ModelInfer, ModelStreamInfer) and the REST server (POST /v2/models/{m}/infer): the REST
// transport turns its JSON and binary tensors into the same inference::ModelInferRequest first.
//
// Mapping (DESIGN.md 7.4; README "KServe v2 / Triton"):
//   - input TOKENS INT32 [n] (token models) or FEATURES FP32 [n, F]; output OUTPUTS FP32
//     [n, output_dim] ("all") or [1, output_dim] ("last");
//   - parameter sequence_id (uint64, int64 or string; integers as decimal; 0 or "" = none) is a
//     session id of the caller's tenant; sequence_start makes it afresh from the empty state (an
//     existing session of that id is deleted first), sequence_end deletes it after this append;
//     without sequence_id the request is a stateless Score of one sequence;
//   - optional parameters output_mode ("all", "last"), mca_alpha, mca_seed and timeout
//     (microseconds; REST only: gRPC calls have their deadline).
//   - a sequence belongs to the model that started it: a request naming another model is told
//     that START is needed, as for an unknown sequence.
// Every check that needs only the request and the model is made by ParseInfer, before any work,
// with INVALID_ARGUMENT naming the tensor or parameter (RESOURCE_EXHAUSTED for a reply over
// --max_message_bytes). A request that fails changes nothing. (One exception remains: a START on
// an existing sequence deletes it first, after checking what would refuse the new one; a
// concurrent call taking the memory budget or the tenant's session limit in between, or a
// cancellation, can still leave the sequence deleted.)
#ifndef AAREN_SERVER_KSERVE_V2_V2_INFER_H_
#define AAREN_SERVER_KSERVE_V2_V2_INFER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/engine.h"
#include "inference/grpc_service.pb.h"

namespace aaren::v2 {

inline constexpr char kPlatform[] = "aaren";
inline constexpr char kModelVersion[] = "1";  // every model is served at one version
inline constexpr char kTokensInput[] = "TOKENS";
inline constexpr char kFeaturesInput[] = "FEATURES";
inline constexpr char kOutputsTensor[] = "OUTPUTS";

// The model `name` at `version` ("" or kModelVersion); NOT_FOUND naming the model or version.
absl::StatusOr<const ServedModel*> FindModel(const ModelRegistry& models, absl::string_view name,
                                             absl::string_view version);

// The name of the model's one input (TOKENS or FEATURES).
const char* InputName(const ServedModel& model);

// A parsed, validated inference request.
struct InferCall {
  const ServedModel* model = nullptr;
  std::string request_id;   // echoed
  std::string sequence_id;  // empty: stateless
  bool start = false;
  bool end = false;
  OutputMode mode = OutputMode::kAll;
  McaOptions mca;
  SequenceInput input;
  // Parameter `timeout` (microseconds; 0: none). REST waits at most this long, then cancels the
  // request (DEADLINE_EXCEEDED); gRPC callers set their call's deadline instead.
  int64_t timeout_us = 0;
};

struct ParseLimits {
  McaOptions default_mca;       // when the request sets no mca_alpha
  int64_t max_sequence_tokens;  // EngineOptions::max_sequence_tokens
  int64_t max_reply_bytes = 0;  // --max_message_bytes (0: no limit)
};

// Parses and checks `request`; `request` may be consumed (its tensor bytes are moved from).
absl::StatusOr<InferCall> ParseInfer(inference::ModelInferRequest& request,
                                     const ModelRegistry& models, const ParseLimits& limits);

struct InferResult {
  std::vector<float> outputs;  // row-major [rows, output_dim]
  int64_t rows = 0;
  int64_t output_dim = 0;
};
using InferDone = absl::AnyInvocable<void(absl::StatusOr<InferResult>)>;

// Runs `call` for `tenant`; `done` runs once, on any thread. Errors are the protocol's: an
// unknown or expired sequence without START is INVALID_ARGUMENT saying START is needed.
void RunInfer(Engine* engine, const std::string& tenant, InferCall call,
              std::shared_ptr<CancelFlag> cancel, InferDone done);

// The reply to a request for `model` with id `request_id`: OUTPUTS as raw_output_contents.
void ToInferResponse(const ServedModel& model, const std::string& request_id, InferResult result,
                     inference::ModelInferResponse* out);

// Bytes the reply to `call` will take (an overestimate): what stream reactors reserve.
int64_t ExpectedReplyBytes(const InferCall& call);

}  // namespace aaren::v2

#endif  // AAREN_SERVER_KSERVE_V2_V2_INFER_H_
