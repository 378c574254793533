// SPDX-License-Identifier: Apache-2.0
// Conversions between aaren.v1 protobuf messages and the engine's types, with request checks
// the engine cannot make (enum values, MCA options). Errors name the request field.
#ifndef AAREN_SERVER_AAREN_V1_PROTO_CONVERT_H_
#define AAREN_SERVER_AAREN_V1_PROTO_CONVERT_H_

#include "aaren/v1/aaren.pb.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/engine.h"

namespace aaren {

SequenceInput FromProto(const v1::Sequence& sequence);
// INVALID_ARGUMENT naming `field` for a value outside the enum.
absl::StatusOr<OutputMode> FromProto(v1::OutputMode mode, absl::string_view field);
// A request's MCA options: its own when mca.enabled (INVALID_ARGUMENT naming `field`.alpha unless
// alpha is finite and >= 0), else the server's default (--mca_alpha, --mca_seed).
absl::StatusOr<McaOptions> FromProto(const v1::McaOptions& mca, absl::string_view field,
                                     const McaOptions& server_default);
void ToProto(const McaCounts& counts, v1::McaStats* out);

void ToProto(const SessionInfo& info, v1::Session* out);
void ToProto(const ServedModel& model, v1::ModelInfo* out);
void ToProto(const SessionSnapshot& snapshot, v1::SessionSnapshot* out);
// Sizes are checked by the engine (ImportSession); here only the byte counts' alignment.
absl::StatusOr<SessionSnapshot> FromProto(const v1::SessionSnapshot& snapshot);

// Copies floats into a repeated field with one resize and memcpy.
void SetFloats(const std::vector<float>& values, google::protobuf::RepeatedField<float>* out);

}  // namespace aaren

#endif  // AAREN_SERVER_AAREN_V1_PROTO_CONVERT_H_
