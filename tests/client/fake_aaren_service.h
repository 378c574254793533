// SPDX-License-Identifier: Apache-2.0
// FakeAarenService: a scripted aaren.v1.Aaren service for the client library's tests, and
// FakeServer, which serves it (plus the standard health service) on an in-process channel and a
// loopback port. Requests steer the fake (an id or a token value picks the behaviour, see each
// method), so the tests exercise the client's side of every RPC without a model.
//
// Every call records the `aaren-session-id` metadata it received (routing_headers()), for the
// tests of client/session_routing.h.
//
// Thread-safety: the service runs on gRPC's sync-server threads; its counters are atomic or
// guarded, and may be read from the test thread at any time.
#ifndef AAREN_TESTS_CLIENT_FAKE_AAREN_SERVICE_H_
#define AAREN_TESTS_CLIENT_FAKE_AAREN_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "aaren/v1/aaren.grpc.pb.h"

namespace aaren::testing {

class FakeAarenService final : public v1::Aaren::Service {
 public:
  // Token values with special meaning in Stream appends.
  static constexpr int32_t kWrongReplyToken = 1000;  // the reply is a Session, not an append
  static constexpr int32_t kEndStreamToken = 1001;   // the server ends the stream with OK
  // Tokens below zero end the stream with INVALID_ARGUMENT.

  // demo-lm (tokens, vocab 43) and demo-ts (features, 8).
  grpc::Status ListModels(grpc::ServerContext* context, const v1::ListModelsRequest*,
                          v1::ListModelsResponse* response) override;
  // Call i is the request whose first sequence's first token is i: it takes (7 * i) % 5 ms, and
  // fails with INVALID_ARGUMENT "score i rejected" when i == fail_index. Result 0's position is i.
  grpc::Status Score(grpc::ServerContext* context, const v1::ScoreRequest* request,
                     v1::ScoreResponse* response) override;
  // Model "none": NOT_FOUND. Otherwise a session with the requested id, or "made-N".
  grpc::Status CreateSession(grpc::ServerContext* context, const v1::CreateSessionRequest* request,
                             v1::Session* response) override;
  // Session id "status:N": fails with code N and message "append status N". Id "slow": answers
  // after 2 s. Otherwise position = expected_position (or 0) + the number of tokens.
  grpc::Status Append(grpc::ServerContext* context, const v1::AppendRequest* request,
                      v1::AppendResponse* response) override;
  // "s1" exists (demo-lm, position 5); anything else is NOT_FOUND.
  grpc::Status GetSession(grpc::ServerContext* context, const v1::GetSessionRequest* request,
                          v1::Session* response) override;
  // "missing": NOT_FOUND; otherwise recorded in deleted().
  grpc::Status DeleteSession(grpc::ServerContext* context, const v1::DeleteSessionRequest* request,
                             v1::DeleteSessionResponse*) override;
  // The new session is new_session_id or "<id>-fork".
  grpc::Status ForkSession(grpc::ServerContext* context, const v1::ForkSessionRequest* request,
                           v1::Session* response) override;
  // A snapshot of demo-lm at position 5 with 8 state bytes.
  grpc::Status ExportSession(grpc::ServerContext* context, const v1::ExportSessionRequest* request,
                             v1::ExportSessionResponse* response) override;
  // A session with the requested id (or "imported") at the snapshot's position.
  grpc::Status ImportSession(grpc::ServerContext* context, const v1::ImportSessionRequest* request,
                             v1::Session* response) override;
  // Writes max_tokens tokens (token i % 43, position i + 1, logprob -i). Session
  // "fail-after-3" ends with RESOURCE_EXHAUSTED "generation stopped" after three tokens.
  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  // The first message must be an open (INVALID_ARGUMENT otherwise). Opening "missing" without
  // create_if_missing is NOT_FOUND; an empty id becomes "stream-1". Each append is answered with
  // its tokens as float outputs (output_dim 1) and the new position; see the token constants.
  grpc::Status Stream(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::StreamResponse, v1::StreamRequest>* stream) override;

  void set_fail_index(int64_t i) { fail_index_ = i; }
  int64_t score_calls() const { return score_calls_; }
  int64_t score_peak_in_flight() const { return score_peak_; }
  int64_t stream_appends() const { return stream_appends_; }
  std::vector<std::string> deleted() const;

  // What a call received as `aaren-session-id` metadata; kNoHeader when it had none (several
  // values are joined with ",", which a well-behaved client never sends).
  static constexpr char kNoHeader[] = "<none>";
  // One (method, header) pair per call, in arrival order; method is the RPC's name, e.g.
  // "GetSession".
  std::vector<std::pair<std::string, std::string>> routing_headers() const;
  // The headers of the calls of `method`, in arrival order.
  std::vector<std::string> RoutingHeaders(const std::string& method) const;
  void ClearRoutingHeaders();

 private:
  void RecordRouting(const std::string& method, const grpc::ServerContext* context);

  std::atomic<int64_t> fail_index_{-1};
  std::atomic<int64_t> score_calls_{0};
  std::atomic<int64_t> score_active_{0};
  std::atomic<int64_t> score_peak_{0};
  std::atomic<int64_t> created_{0};
  std::atomic<int64_t> stream_appends_{0};
  mutable std::mutex mu_;
  std::vector<std::string> deleted_;                          // guarded by mu_
  std::vector<std::pair<std::string, std::string>> routing_;  // guarded by mu_
};

class FakeServer {
 public:
  // Starts serving; fails the calling test (ADD_FAILURE) if the port cannot be bound.
  FakeServer();
  ~FakeServer();
  FakeServer(const FakeServer&) = delete;
  FakeServer& operator=(const FakeServer&) = delete;

  FakeAarenService& service() { return service_; }
  // A new in-process channel.
  std::shared_ptr<grpc::Channel> InProcessChannel();
  // "127.0.0.1:PORT".
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  FakeAarenService service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace aaren::testing

#endif  // AAREN_TESTS_CLIENT_FAKE_AAREN_SERVICE_H_
