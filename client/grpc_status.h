// SPDX-License-Identifier: Apache-2.0
// The one conversion from a gRPC call's status to the absl::Status every client API returns.
// gRPC and abseil share the canonical code numbering, so the code and message survive unchanged
// and callers branch on them as the wire contract (proto/aaren/v1/aaren.proto) describes.
#ifndef AAREN_CLIENT_GRPC_STATUS_H_
#define AAREN_CLIENT_GRPC_STATUS_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace aaren::client {

// Same code, same message; OK maps to absl::OkStatus(). Thread-safe (pure function).
absl::Status ToAbslStatus(const grpc::Status& status);

}  // namespace aaren::client

#endif  // AAREN_CLIENT_GRPC_STATUS_H_
