// SPDX-License-Identifier: Apache-2.0
// The JSON forms of the KServe v2 / Triton REST protocol, turned into (and out of) the gRPC
// protocol's messages, so that both transports share one validation and one engine path
// (v2_infer.h).
//
// Inference requests: the JSON object of the protocol ({"id", "parameters", "inputs": [{"name",
// "shape", "datatype", "parameters", "data"}], "outputs": [{"name", "parameters"}]}) and Triton's
// binary-tensor extension: when the body is longer than its JSON part (the header
// Inference-Header-Content-Length gives that part's length), the input whose parameter
// binary_data_size is N takes the next N bytes after the JSON, in input order. An output is
// returned in binary when its parameter binary_data is true or the request's parameter
// binary_data_output is; the response's JSON then gives the output's binary_data_size and the
// raw little-endian bytes follow the JSON.
//
// Parameters: a JSON string becomes a string parameter, true/false a bool, an integer an
// int64 (a uint64 above 2^63 - 1), any other number a double: sequence_id may thus be a number
// or a string, as Triton's HTTP clients send it.
#ifndef AAREN_SERVER_KSERVE_V2_V2_JSON_H_
#define AAREN_SERVER_KSERVE_V2_V2_JSON_H_

#include <google/protobuf/message.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "inference/grpc_service.pb.h"

namespace aaren::v2 {

inline constexpr int64_t kDefaultJsonElements = int64_t{1} << 22;
// The most characters a float of a JSON reply takes, its comma included ("-1.1754944e-38,").
inline constexpr int64_t kJsonBytesPerFloat = 16;

// A message as the protocol's JSON: field names as in the .proto (snake_case), every scalar and
// repeated field present (defaults included), sub-messages only when set, enums by name, 64-bit
// integers as JSON numbers (not strings, as protobuf's JSON mapping has them), maps as objects.
nlohmann::json ProtoToJson(const google::protobuf::Message& message);

// Parses an inference request `body`, whose first `json_bytes` bytes are its JSON (all of it when
// json_bytes is body.size()), into `out` (its model_name and model_version are the caller's).
// `binary_output` says whether OUTPUTS should be returned in binary. INVALID_ARGUMENT naming the
// field (e.g. "inputs[0].data") otherwise.
//
// Before the JSON is parsed into a tree (which takes ~16-56 bytes per element, far more than its
// text), a scan without allocation counts its elements: more than `max_elements` values and
// arrays/objects together is RESOURCE_EXHAUSTED naming the request, so that memory stays within
// what a legitimate request of the server's limits needs (JsonElementLimit).
absl::Status ParseInferRequestJson(absl::string_view body, size_t json_bytes,
                                   inference::ModelInferRequest* out, bool* binary_output,
                                   int64_t max_elements = kDefaultJsonElements);

// The element limit for requests of at most `max_sequence_tokens` tokens of at most
// `max_row_values` values each (n_features of the widest features model; 1 for tokens): the
// data itself, one array per row (nested FEATURES), and room for the rest of the request.
int64_t JsonElementLimit(int64_t max_sequence_tokens, int64_t max_row_values);

// The reply's JSON (outputs as "data" arrays, or with binary_data_size when `binary_output`, the
// bytes then appended to `binary`).
std::string InferResponseToJson(const inference::ModelInferResponse& response, bool binary_output,
                                std::string* binary);

}  // namespace aaren::v2

#endif  // AAREN_SERVER_KSERVE_V2_V2_JSON_H_
