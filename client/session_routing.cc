// SPDX-License-Identifier: Apache-2.0
#include "client/session_routing.h"

#include <string>

namespace aaren::client {
namespace {

// The longest id the server accepts (proto/aaren/v1/aaren.proto, CreateSessionRequest).
constexpr size_t kMaxSessionIdLength = 128;

}  // namespace

bool IsRoutableSessionId(absl::string_view session_id) {
  if (session_id.empty() || session_id.size() > kMaxSessionIdLength) return false;
  for (char c : session_id) {
    // gRPC accepts exactly these bytes in a non-binary metadata value.
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

void AddSessionIdMetadata(grpc::ClientContext& context, absl::string_view session_id) {
  if (IsRoutableSessionId(session_id)) {
    context.AddMetadata(kSessionIdMetadataKey, std::string(session_id));
  }
}

}  // namespace aaren::client
