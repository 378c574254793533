// SPDX-License-Identifier: Apache-2.0
// Session routing metadata (DESIGN.md 7.3): every call that works on one session carries gRPC
// metadata `aaren-session-id: ID`, so a proxy in front of several replicas (nginx `hash
// $http_aaren_session_id consistent`, Envoy ring_hash on the header; deploy/) sends a session's
// calls to the same replica. The affinity is soft: any replica can serve any session from the
// shared store, so a call without the header is still served correctly, only maybe elsewhere.
//
// AarenClient, StreamSession and aaren-cli add the header by themselves; use these functions
// for calls made on the raw stubs (AarenClient::stub()).
//
// Thread-safety: the functions are pure (AddSessionIdMetadata writes only to its context).
#ifndef AAREN_CLIENT_SESSION_ROUTING_H_
#define AAREN_CLIENT_SESSION_ROUTING_H_

#include <grpcpp/client_context.h>

#include "aaren/v1/aaren.pb.h"
#include "absl/strings/string_view.h"
#include "grpc/health/v1/health.pb.h"

namespace aaren::client {

// The metadata key (lower case, as gRPC requires).
inline constexpr char kSessionIdMetadataKey[] = "aaren-session-id";

// Whether `session_id` is sent as the header: not empty, at most 128 characters and printable
// ASCII (a legal gRPC metadata value). Any other id is one the server rejects anyway
// (ids match [A-Za-z0-9._-]{1,128}); leaving the header off lets the server's own error reach
// the caller instead of a client-side metadata error.
bool IsRoutableSessionId(absl::string_view session_id);

// Adds `aaren-session-id: session_id` to `context` when IsRoutableSessionId(session_id); does
// nothing otherwise. Call before the call starts (metadata goes out with the call's headers).
void AddSessionIdMetadata(grpc::ClientContext& context, absl::string_view session_id);

// The session each request works on, i.e. the header value its call carries; empty when the
// request names none. One overload per request type of the Aaren service (and health), so a new
// RPC has to decide here. The returned view points into the request.
inline absl::string_view SessionIdOf(const v1::ListModelsRequest&) { return {}; }
// Score is stateless; prefill sessions get server-made ids, unknown before the call.
inline absl::string_view SessionIdOf(const v1::ScoreRequest&) { return {}; }
// Empty (a server-made id) until the server has answered.
inline absl::string_view SessionIdOf(const v1::CreateSessionRequest& r) { return r.session_id(); }
inline absl::string_view SessionIdOf(const v1::AppendRequest& r) { return r.session_id(); }
inline absl::string_view SessionIdOf(const v1::GetSessionRequest& r) { return r.session_id(); }
inline absl::string_view SessionIdOf(const v1::DeleteSessionRequest& r) { return r.session_id(); }
// The source session: its state is what the call reads.
inline absl::string_view SessionIdOf(const v1::ForkSessionRequest& r) { return r.session_id(); }
inline absl::string_view SessionIdOf(const v1::ExportSessionRequest& r) { return r.session_id(); }
// The new session's id; empty (server-made) until the server has answered.
inline absl::string_view SessionIdOf(const v1::ImportSessionRequest& r) { return r.session_id(); }
inline absl::string_view SessionIdOf(const v1::GenerateRequest& r) { return r.session_id(); }
// A Stream's first message: the session it attaches to (or creates under a client-chosen id).
// Empty for create-on-open with a server-made id: the id is unknown when the call starts, so
// such a stream carries no header (the stream itself stays on one replica regardless).
inline absl::string_view SessionIdOf(const v1::OpenSession& r) { return r.session_id(); }
inline absl::string_view SessionIdOf(const grpc::health::v1::HealthCheckRequest&) { return {}; }

}  // namespace aaren::client

#endif  // AAREN_CLIENT_SESSION_ROUTING_H_
