// SPDX-License-Identifier: Apache-2.0
// AarenClient: the C++ client of an Aaren Serve server (the aaren.v1.Aaren service plus the
// standard grpc.health.v1 health check). One method per RPC, returning absl::Status /
// absl::StatusOr with the server's code and message (client/grpc_status.h); the codes mean what
// proto/aaren/v1/aaren.proto says (e.g. ABORTED: re-read the session and retry).
//
//   aaren::client::AarenClient client("localhost:50051");
//   auto models = client.ListModels();
//   aaren::v1::CreateSessionRequest create;
//   create.set_model("demo-lm");
//   auto session = client.CreateSession(create);
//
// The bidirectional Stream RPC has its own class, StreamSession (client/stream_session.h).
// The *Many methods keep several unary calls in flight through gRPC's callback API.
//
// Every call that names a session carries gRPC metadata `aaren-session-id: ID` (the id in its
// request; client/session_routing.h), so that a proxy in front of several replicas keeps a
// session's calls on one replica. Calls without one (ListModels, Score, Health, a
// CreateSession or ImportSession with a server-made id) carry none.
//
// Thread-safety: every method may be called concurrently from any number of threads (each call
// has its own grpc::ClientContext; the channel and stubs are thread-safe).
#ifndef AAREN_CLIENT_AAREN_CLIENT_H_
#define AAREN_CLIENT_AAREN_CLIENT_H_

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "aaren/v1/aaren.grpc.pb.h"
#include "aaren/v1/bench.grpc.pb.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace aaren::client {

struct ClientOptions {
  // Largest message the channel sends or receives. gRPC's default receive limit (4 MiB) is too
  // small for Score responses of long sequences with every output row.
  int max_message_bytes = 64 << 20;
  // Channel credentials of the string-target constructor; null: plaintext. For a server with
  // --tls_cert_file, see TlsCredentialsFromFiles.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  // Bearer token for a server with --auth_tokens_file: sent as `authorization: Bearer TOKEN` on
  // every call (over plaintext too: protect it with TLS beyond a trusted network). Empty: none.
  std::string token;
  // Deadline of each unary call and of each Generate call; zero or negative: none.
  absl::Duration timeout = absl::ZeroDuration();
  // Deadline of each Stream (and BenchEcho.Echo) call, which lives as long as its session is
  // used; zero or negative: none.
  absl::Duration stream_timeout = absl::ZeroDuration();
};

class AarenClient {
 public:
  // A client of `target` (a gRPC target: "host:port", "unix:/path", "dns:///name:port") over an
  // insecure channel. Does not connect: the first call does, and fails with UNAVAILABLE if the
  // server cannot be reached.
  explicit AarenClient(const std::string& target, ClientOptions options = {});
  // A client over an existing channel (custom credentials, in-process servers in tests). The
  // channel's own limits apply; options.max_message_bytes is not used.
  explicit AarenClient(std::shared_ptr<grpc::Channel> channel, ClientOptions options = {});

  AarenClient(const AarenClient&) = delete;
  AarenClient& operator=(const AarenClient&) = delete;

  // ---- One method per RPC (blocking; each error is the server's status) ----

  absl::StatusOr<v1::ListModelsResponse> ListModels();
  // ListModels, then the model called `name`; NOT_FOUND listing the served names otherwise.
  absl::StatusOr<v1::ModelInfo> GetModel(absl::string_view name);
  absl::StatusOr<v1::ScoreResponse> Score(const v1::ScoreRequest& request);
  absl::StatusOr<v1::Session> CreateSession(const v1::CreateSessionRequest& request);
  absl::StatusOr<v1::AppendResponse> Append(const v1::AppendRequest& request);
  absl::StatusOr<v1::Session> GetSession(absl::string_view session_id);
  absl::Status DeleteSession(absl::string_view session_id);
  absl::StatusOr<v1::Session> ForkSession(const v1::ForkSessionRequest& request);
  absl::StatusOr<v1::SessionSnapshot> ExportSession(absl::string_view session_id);
  absl::StatusOr<v1::Session> ImportSession(const v1::ImportSessionRequest& request);
  // grpc.health.v1.Health/Check; `service` "" asks about the whole server. A server that does
  // not know `service` answers NOT_FOUND.
  absl::StatusOr<grpc::health::v1::HealthCheckResponse> Health(absl::string_view service = "");

  // Generate: calls `on_token` for each generated token as it arrives (on the calling thread),
  // then returns the call's final status. Tokens already delivered stay delivered when the call
  // fails part-way.
  absl::Status Generate(const v1::GenerateRequest& request,
                        absl::FunctionRef<void(const v1::GenerateResponse&)> on_token);
  // Generate, collecting every token.
  absl::StatusOr<std::vector<v1::GenerateResponse>> Generate(const v1::GenerateRequest& request);

  // ---- Many unary calls in flight (callback API) ----
  //
  // Each runs calls 0..count-1, building call i's request with make_request(i) and keeping at
  // most `max_in_flight` calls (at least 1) outstanding, counted from the oldest one not yet
  // handed over, so at most that many responses are buffered. on_response(i, response) runs on
  // the calling thread in index order; an error it returns stops the batch. At the first failed
  // call or on_response error no further calls start; the method returns that error once every
  // started call has ended (later responses are dropped). When `latencies_ns` is not null, it
  // receives each completed call's latency (start to completion) in completion order.

  absl::Status ScoreMany(size_t count, int max_in_flight,
                         absl::FunctionRef<v1::ScoreRequest(size_t)> make_request,
                         absl::FunctionRef<absl::Status(size_t, v1::ScoreResponse&)> on_response,
                         std::vector<int64_t>* latencies_ns = nullptr);
  absl::Status CreateSessionMany(size_t count, int max_in_flight,
                                 absl::FunctionRef<v1::CreateSessionRequest(size_t)> make_request,
                                 absl::FunctionRef<absl::Status(size_t, v1::Session&)> on_response,
                                 std::vector<int64_t>* latencies_ns = nullptr);
  // Deletes every id in `session_ids`.
  absl::Status DeleteSessionMany(const std::vector<std::string>& session_ids, int max_in_flight,
                                 std::vector<int64_t>* latencies_ns = nullptr);

  // ---- Lower level, for StreamSession and custom calls ----

  v1::Aaren::Stub& stub() { return *stub_; }
  v1::BenchEcho::Stub& echo_stub() { return *echo_stub_; }
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }
  const ClientOptions& options() const { return options_; }
  // Sets options().timeout (unary and Generate calls), the token's authorization metadata and
  // the aaren-session-id routing metadata (when IsRoutableSessionId(session_id), e.g. not
  // empty; client/session_routing.h) on a fresh context.
  void PrepareUnaryContext(grpc::ClientContext& context, absl::string_view session_id = {}) const;
  // The same with options().stream_timeout (Stream, Echo); `session_id` is the session the
  // stream opens, when it is known before the call starts.
  void PrepareStreamContext(grpc::ClientContext& context, absl::string_view session_id = {}) const;

 private:
  template <typename Stub, typename Request, typename Response>
  absl::StatusOr<Response> Unary(Stub& stub,
                                 grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&,
                                                              Response*),
                                 const Request& request);

  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Aaren::Stub> stub_;
  std::unique_ptr<v1::BenchEcho::Stub> echo_stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_stub_;
};

// The gRPC channel arguments the string-target constructor uses (exposed for custom channels).
grpc::ChannelArguments MakeChannelArguments(const ClientOptions& options);

// TLS channel credentials: the server's certificate is verified against the PEM CAs in
// `ca_file` (empty: the system's roots); `cert_file` and `key_file` (both or neither) are the
// client's certificate and key for a server that requires mutual TLS. NOT_FOUND naming the file
// when one cannot be read.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> TlsCredentialsFromFiles(
    const std::string& ca_file, const std::string& cert_file = "",
    const std::string& key_file = "");

}  // namespace aaren::client

#endif  // AAREN_CLIENT_AAREN_CLIENT_H_
