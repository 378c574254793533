// SPDX-License-Identifier: Apache-2.0
#include "client/grpc_status.h"

#include <string>

namespace aaren::client {

absl::Status ToAbslStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  // Both enums list the canonical codes 0..16 with the same numbers; anything else (a code from
  // a newer peer) becomes UNKNOWN rather than an out-of-range enum value.
  const int code = static_cast<int>(status.error_code());
  const bool canonical = code > 0 && code <= static_cast<int>(absl::StatusCode::kUnauthenticated);
  return absl::Status(canonical ? static_cast<absl::StatusCode>(code) : absl::StatusCode::kUnknown,
                      status.error_message());
}

}  // namespace aaren::client
