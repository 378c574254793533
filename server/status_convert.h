// SPDX-License-Identifier: Apache-2.0
// The one place where an absl::Status becomes a grpc::Status (same code, same message).
#ifndef AAREN_SERVER_STATUS_CONVERT_H_
#define AAREN_SERVER_STATUS_CONVERT_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace aaren {

grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace aaren

#endif  // AAREN_SERVER_STATUS_CONVERT_H_
