// SPDX-License-Identifier: Apache-2.0
// V2HttpServer: the KServe v2 / Triton REST API on --http_port (cpp-httplib, Debian
// libcpp-httplib-dev; civetweb, which serves /metrics, cannot do TLS with Debian 12's OpenSSL 3:
// it looks up SSL_get_peer_certificate, which OpenSSL 3 no longer exports, and calls a null
// pointer on the first HTTPS connection), over the same engine
// calls, validation and statistics as the gRPC service (V2GrpcService):
//
//   GET  /v2/health/live, /v2/health/ready                     open (probes), 200 or 503
//   GET  /v2                                                   server metadata
//   GET  /v2/models/{m}[/versions/{v}]                         model metadata
//   GET  /v2/models/{m}[/versions/{v}]/ready                   open, 200 or 503
//   GET  /v2/models/{m}[/versions/{v}]/config                  model configuration
//   GET  /v2/models[/{m}[/versions/{v}]]/stats                 statistics
//   POST /v2/models/{m}[/versions/{v}]/infer                   inference (v2_json.h)
//   POST /v2/repository/index                                  the served models
//
// Errors are {"error": "message"} with the HTTP status of the gRPC code (INVALID_ARGUMENT 400,
// UNAUTHENTICATED 401, NOT_FOUND 404, RESOURCE_EXHAUSTED 429 (413 for a body over the limit),
// UNIMPLEMENTED 501, UNAVAILABLE 503, ...). Bearer tokens travel in the Authorization header and
// act for the same tenants as on gRPC; the open endpoints need none. With TLS the port serves
// HTTPS only, with the gRPC port's certificate, key and (mutual TLS) client CA.
//
// Every request is counted in aaren_requests_total with rpc "rest:" + the gRPC method's name
// (rest:ModelInfer, ...) and access-logged like a gRPC call. Connections are served by
// HttpOptions::threads worker threads, one connection each at a time (keep-alive included);
// at most as many more wait for a worker, then the server stops accepting (the kernel's listen
// backlog holds the rest), so nothing queues without bound. A body over max_body_bytes is
// refused (413) by its Content-Length before it is read; bodies whose size is not known up front
// (chunked, compressed) are refused (411, 415), and an unauthenticated POST gets its 401
// without its body being read. Methods other than GET and POST: 405.
#ifndef AAREN_SERVER_KSERVE_V2_V2_HTTP_SERVER_H_
#define AAREN_SERVER_KSERVE_V2_V2_HTTP_SERVER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "server/auth/tls_credentials.h"
#include "server/kserve_v2/v2_grpc_service.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace aaren::v2 {

struct HttpOptions {
  std::string host = "0.0.0.0";
  int port = 8000;  // 0: any free port (see V2HttpServer::port)
  TlsFiles tls;     // HTTPS when tls.enabled()
  int threads = 32;
  int64_t max_body_bytes = 64 << 20;  // --max_message_bytes
};

class V2HttpServer {
 public:
  // Listens and serves until destroyed. UNAVAILABLE naming the address when it cannot listen;
  // INVALID_ARGUMENT naming the flag when a TLS file is unusable.
  static absl::StatusOr<std::unique_ptr<V2HttpServer>> Start(const V2Env* v2,
                                                             const HttpOptions& options);
  // Stops listening and waits for the requests in progress.
  ~V2HttpServer();
  V2HttpServer(const V2HttpServer&) = delete;
  V2HttpServer& operator=(const V2HttpServer&) = delete;

  int port() const { return port_; }
  // Closes the listening socket (SIGTERM's drain): requests in progress finish, kept-alive
  // connections end after their current request. The destructor waits for them.
  void StopAccepting();

 private:
  V2HttpServer(const V2Env* v2, const HttpOptions& options);
  // `body`: the request's body (read by the POST handler; empty otherwise).
  void Serve(const httplib::Request& request, const std::string& body, httplib::Response& response);

  const V2Env* v2_;
  const HttpOptions options_;
  std::unique_ptr<httplib::Server> http_;
  std::thread listener_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> listening_done_{false};
  int port_ = 0;
};

}  // namespace aaren::v2

#endif  // AAREN_SERVER_KSERVE_V2_V2_HTTP_SERVER_H_
