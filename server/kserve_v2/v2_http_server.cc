// SPDX-License-Identifier: Apache-2.0
#include "server/kserve_v2/v2_http_server.h"

#include <httplib.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/status_macros.h"
#include "server/kserve_v2/v2_json.h"
#include "server/logging.h"
#include "server/status_convert.h"

namespace aaren::v2 {
namespace {

using inference::ModelInferRequest;
using inference::ModelInferResponse;
using nlohmann::json;

int64_t SteadyNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// What a handler answers: a JSON body (or an error), and for binary inference replies the
// length of the body's JSON part.
struct Reply {
  int http_status = 200;
  absl::StatusCode code = absl::StatusCode::kOk;  // what the call is counted as
  std::string body;
  std::optional<size_t> json_bytes;  // Inference-Header-Content-Length
};

int HttpStatusOf(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kCancelled:
      return 499;
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

// JSON text; invalid UTF-8 (a percent-decoded path, say) becomes U+FFFD instead of throwing.
std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

Reply ErrorReply(const absl::Status& st, int http_status = 0) {
  Reply r;
  r.http_status = http_status != 0 ? http_status : HttpStatusOf(st.code());
  r.code = st.code();
  r.body = Dump(json{{"error", std::string(st.message())}});
  return r;
}

// Not ready (draining): 503, counted as an answered call (as ServerReady's ready=false is).
Reply NotReady() {
  Reply r;
  r.http_status = 503;
  r.body = Dump(json{{"error", "not ready: the server is shutting down"}});
  return r;
}

Reply JsonReply(const json& j) {
  Reply r;
  r.body = Dump(j);
  return r;
}

// An endpoint: its rpc label, whether it is open (no token), the HTTP method it takes.
struct Endpoint {
  const char* rpc;
  bool open;
  const char* method;
};

// The path's model part: /v2/models/{m}[/versions/{v}]/{rest...}.
struct ModelPath {
  std::string name;
  std::string version;
  std::string action;  // "", "ready", "config", "stats", "infer"; "?" when unknown
};

std::optional<ModelPath> ParseModelPath(const std::vector<std::string>& seg) {
  // seg[0] == "v2", seg[1] == "models", seg[2] = name.
  if (seg.size() < 3) return std::nullopt;
  ModelPath p;
  p.name = seg[2];
  size_t i = 3;
  if (i < seg.size() && seg[i] == "versions") {
    if (i + 1 >= seg.size()) return std::nullopt;
    p.version = seg[i + 1];
    i += 2;
  }
  if (i + 1 < seg.size()) return std::nullopt;
  if (i < seg.size()) p.action = seg[i];
  return p;
}

// POST /v2/models/{m}/infer: the body (at most max_body_bytes: httplib refuses larger ones)
// parsed into a ModelInferRequest, then the gRPC service's path: ParseInfer, RunInfer (this
// worker thread waits for it), the statistics.
Reply Infer(const V2Env& v2, const std::string& tenant, const httplib::Request& http,
            const std::string& body, const ModelPath& path) {
  const int64_t start_ns = SteadyNs();
  auto fail = [&](const absl::Status& st) {
    v2.stats->RecordRequest(path.name, false, SteadyNs() - start_ns);
    return ErrorReply(st);
  };
  size_t json_bytes = body.size();
  if (http.has_header("Inference-Header-Content-Length")) {
    const std::string h = http.get_header_value("Inference-Header-Content-Length");
    uint64_t v = 0;
    if (!absl::SimpleAtoi(h, &v)) {
      return fail(absl::InvalidArgumentError(
          absl::StrCat("Inference-Header-Content-Length: '", h, "' is not a byte count")));
    }
    json_bytes = static_cast<size_t>(std::min<uint64_t>(v, body.size() + 1));
  }
  ModelInferRequest request;
  request.set_model_name(path.name);
  request.set_model_version(path.version);
  bool binary_output = false;
  if (absl::Status st =
          ParseInferRequestJson(body, json_bytes, &request, &binary_output, v2.json_elements);
      !st.ok()) {
    return fail(st);
  }
  auto parsed = ParseInfer(request, v2.env->engine->models(), v2.limits);
  if (!parsed.ok()) return fail(parsed.status());
  if (!binary_output && v2.limits.max_reply_bytes > 0) {
    // A JSON reply prints each float in up to kJsonBytesPerFloat characters, not 4 bytes: the
    // limit applies to the body it would be, before any work.
    const int64_t rows = parsed->mode == OutputMode::kLast
                             ? 1
                             : parsed->input.length(parsed->model->config().n_features);
    const int64_t bytes =
        ExpectedReplyBytes(*parsed) + rows * parsed->model->output_dim * (kJsonBytesPerFloat - 4);
    if (bytes > v2.limits.max_reply_bytes) {
      return fail(absl::ResourceExhaustedError(absl::StrCat(
          InputName(*parsed->model), ": the JSON reply could be ", bytes, " bytes (", rows,
          " rows x ", parsed->model->output_dim, " outputs x up to ", kJsonBytesPerFloat,
          " characters), more than --max_message_bytes (", v2.limits.max_reply_bytes,
          "); ask for binary outputs (binary_data_output), fewer tokens or output_mode "
          "\"last\"")));
    }
  }
  const ServedModel* model = parsed->model;
  const std::string request_id = parsed->request_id;
  std::promise<absl::StatusOr<InferResult>> promise;
  std::future<absl::StatusOr<InferResult>> result = promise.get_future();
  // The promise goes with the callback: were the callback ever dropped uncalled, get() would
  // throw (broken promise) rather than wait forever.
  const int64_t timeout_us = parsed->timeout_us;
  const std::string sequence_id = parsed->sequence_id;
  const bool start = parsed->start;
  auto cancel = std::make_shared<CancelFlag>(false);
  RunInfer(v2.env->engine, tenant, *std::move(parsed), cancel,
           [promise = std::move(promise)](absl::StatusOr<InferResult> r) mutable {
             promise.set_value(std::move(r));
           });
  bool timed_out = false;
  if (timeout_us > 0 &&
      result.wait_for(std::chrono::microseconds(timeout_us)) != std::future_status::ready) {
    // Past the request's timeout: cancelled, so queued work drops (a running chunk finishes
    // and is undone); the engine then answers.
    cancel->store(true, std::memory_order_relaxed);
    timed_out = true;
    // Queued behind other work on its sequence: dropped now, not when that work ends.
    if (!sequence_id.empty()) v2.env->engine->SweepCancelled(SessionRef(tenant, sequence_id));
  }
  absl::StatusOr<InferResult> r = result.get();
  if (timed_out && absl::IsCancelled(r.status())) {
    r = absl::DeadlineExceededError(absl::StrCat(
        "parameters.timeout: the request did not finish within ", timeout_us,
        " microseconds and was cancelled: its input was not applied",
        start ? " (with START, the sequence's earlier session may already be deleted)" : ""));
  }
  v2.stats->RecordRequest(model->name, r.ok(), SteadyNs() - start_ns);
  if (!r.ok()) return ErrorReply(r.status());
  ModelInferResponse response;
  ToInferResponse(*model, request_id, *std::move(r), &response);
  Reply reply;
  std::string binary;
  reply.body = InferResponseToJson(response, binary_output, &binary);
  if (binary_output) {
    reply.json_bytes = reply.body.size();
    reply.body.append(binary);
  }
  return reply;
}

// httplib listens with a backlog of 5; this one re-listens with the system's maximum, so that
// connections waiting for a worker wait in the kernel instead of being dropped (Linux allows
// listen() again on a listening socket to change its backlog).
template <typename Base>
class Backlogged final : public Base {
 public:
  using Base::Base;
  bool WidenBacklog() { return ::listen(this->svr_sock_, SOMAXCONN) == 0; }
};

// httplib's connection queue with a bound: `threads` workers, at most `threads` connections
// waiting; enqueue (httplib's accept loop) blocks while that is full, so further clients wait
// in the kernel's listen backlog instead of in memory.
class BoundedPool final : public httplib::TaskQueue {
 public:
  explicit BoundedPool(int threads) : capacity_(static_cast<size_t>(threads)) {
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { Work(); });
  }
  void enqueue(std::function<void()> fn) override {
    std::unique_lock<std::mutex> lock(mu_);
    space_.wait(lock, [&] { return jobs_.size() < capacity_ || stopping_; });
    if (stopping_) return;  // (the listener is closing: the connection is dropped)
    jobs_.push_back(std::move(fn));
    work_.notify_one();
  }
  void shutdown() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    work_.notify_all();
    space_.notify_all();
    for (std::thread& t : workers_) t.join();
  }

 private:
  void Work() {
    while (true) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lock(mu_);
        work_.wait(lock, [&] { return !jobs_.empty() || stopping_; });
        if (jobs_.empty()) return;  // stopping, and nothing left to serve
        fn = std::move(jobs_.front());
        jobs_.pop_front();
      }
      space_.notify_one();
      try {
        fn();  // one connection (httplib catches its handlers' exceptions; this is the rest)
      } catch (...) {
      }
    }
  }

  const size_t capacity_;
  std::mutex mu_;
  std::condition_variable work_, space_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace

V2HttpServer::V2HttpServer(const V2Env* v2, const HttpOptions& options)
    : v2_(v2), options_(options) {}

absl::StatusOr<std::unique_ptr<V2HttpServer>> V2HttpServer::Start(const V2Env* v2,
                                                                  const HttpOptions& options) {
  std::unique_ptr<V2HttpServer> server(new V2HttpServer(v2, options));
  const TlsFiles& f = options.tls;
  std::string tls_error;
  if (f.enabled()) {
    server->http_ = std::make_unique<Backlogged<httplib::SSLServer>>([&](SSL_CTX& ctx) {
      auto fail = [&](const char* flag, const std::string& file) {
        char reason[256];
        ERR_error_string_n(ERR_get_error(), reason, sizeof(reason));
        tls_error = absl::StrCat(flag, ": ", file, " is not usable for HTTPS: ", reason);
        return false;
      };
      SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION);
      if (SSL_CTX_use_certificate_chain_file(&ctx, f.cert_file.c_str()) != 1) {
        return fail("--tls_cert_file", f.cert_file);
      }
      if (SSL_CTX_use_PrivateKey_file(&ctx, f.key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
          SSL_CTX_check_private_key(&ctx) != 1) {
        return fail("--tls_key_file", f.key_file);
      }
      if (!f.client_ca_file.empty()) {
        if (SSL_CTX_load_verify_locations(&ctx, f.client_ca_file.c_str(), nullptr) != 1) {
          return fail("--tls_client_ca_file", f.client_ca_file);
        }
        SSL_CTX_set_verify(&ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
        // Tell clients which CAs are accepted (browsers pick their certificate by it).
        SSL_CTX_set_client_CA_list(&ctx, SSL_load_client_CA_file(f.client_ca_file.c_str()));
      }
      return true;
    });
    if (!server->http_->is_valid()) {
      return absl::InvalidArgumentError(tls_error.empty() ? "--http_port: cannot set up HTTPS"
                                                          : tls_error);
    }
  } else {
    server->http_ = std::make_unique<Backlogged<httplib::Server>>();
  }
  httplib::Server& http = *server->http_;
  const int threads = options.threads;
  http.new_task_queue = [threads] { return new BoundedPool(threads); };
  http.set_tcp_nodelay(true);  // a reply is headers, then body: no Nagle delay between them
  http.set_payload_max_length(static_cast<size_t>(options.max_body_bytes));
  // A connection holds its worker while it is kept alive: closing it after 100 requests (the
  // client reconnects) lets connections waiting for a worker have their turn.
  http.set_keep_alive_max_count(100);
  http.set_keep_alive_timeout(5);
  // Per read: a client that stalls mid-request (or mid-handshake) holds its worker this long.
  http.set_read_timeout(30);
  http.set_write_timeout(30);
  V2HttpServer* self = server.get();
  auto handle = [self](const httplib::Request& req, httplib::Response& res) {
    self->Serve(req, std::string(), res);
  };
  // POST bodies are read here, not by httplib: its own reading caps form-encoded bodies (curl
  // -d) at 8 KiB. Content-Length is checked against max_body_bytes first (413), and the
  // pre-routing gate below has refused every body whose size is not known up front.
  auto handle_body = [self](const httplib::Request& req, httplib::Response& res,
                            const httplib::ContentReader& read) {
    std::string body;
    const size_t limit = static_cast<size_t>(self->options_.max_body_bytes);
    const bool whole = read([&](const char* data, size_t n) {
      if (n > limit - body.size()) return false;
      body.append(data, n);
      return true;
    });
    if (!whole) {
      res.status = 400;
      res.set_header("Connection", "close");
      res.set_content(Dump(json{{"error", "request: the body could not be read whole"}}),
                      "application/json");
      return;
    }
    self->Serve(req, body, res);
  };
  // Before any body is read: what can be answered from the headers alone. httplib would read
  // chunked and compressed bodies without a size limit, and a body without a length until the
  // connection closes; an unauthenticated POST gets its 401 without its body being read.
  http.set_pre_routing_handler([self](const httplib::Request& req, httplib::Response& res) {
    auto refuse = [&](int status, const std::string& message) {
      CallRecord record(*self->v2_->env, "rest:Unknown",
                        absl::StrCat("ipv4:", req.remote_addr, ":", req.remote_port), "");
      record.Finish(grpc::StatusCode::INVALID_ARGUMENT);
      res.status = status;
      res.set_header("Connection", "close");  // the body (if any) was not read
      res.set_content(Dump(json{{"error", message}}), "application/json");
      return httplib::Server::HandlerResponse::Handled;
    };
    if (req.method != "GET" && req.method != "HEAD" && req.method != "POST") {
      return refuse(405, absl::StrCat(req.path, ": use GET or POST, not ", req.method));
    }
    if (req.has_header("Transfer-Encoding")) {
      return refuse(411, "Transfer-Encoding: not accepted; send the body with Content-Length");
    }
    if (req.has_header("Content-Encoding") &&
        req.get_header_value("Content-Encoding") != "identity") {
      return refuse(415, "Content-Encoding: not accepted; send the body uncompressed");
    }
    if (req.method == "POST") {
      const bool bodyless = !req.has_header("Content-Length");
      uint64_t length = 0;
      if (!bodyless && (!absl::SimpleAtoi(req.get_header_value("Content-Length"), &length) ||
                        length > static_cast<uint64_t>(self->options_.max_body_bytes))) {
        return refuse(413, absl::StrCat("Content-Length: '", req.get_header_value("Content-Length"),
                                        "' is not a byte count within the limit of ",
                                        self->options_.max_body_bytes, " (--max_message_bytes)"));
      }
      const Authenticator* auth = self->v2_->env->auth;
      const bool refused =
          auth != nullptr && !auth->AuthenticateHeader(req.get_header_value("Authorization")).ok();
      // A POST without Content-Length has no body (RFC 9112 6.3), as tritonclient.http sends
      // POST /v2/repository/index. Serve authenticates (and answers 401) itself.
      if (bodyless || refused) {
        if (refused && !bodyless) res.set_header("Connection", "close");
        self->Serve(req, std::string(), res);
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  // An exception out of a handler (none is expected): 500 with a JSON body, counted.
  http.set_exception_handler(
      [self](const httplib::Request& req, httplib::Response& res, std::exception_ptr) {
        CallRecord record(*self->v2_->env, "rest:Unknown",
                          absl::StrCat("ipv4:", req.remote_addr, ":", req.remote_port), "");
        record.Finish(grpc::StatusCode::INTERNAL);
        res.status = 500;
        res.set_content(Dump(json{{"error", "internal error"}}), "application/json");
      });
  for (const char* pattern : {"/v2", "/v2/.*"}) {
    http.Get(pattern, handle);
    http.Post(pattern, httplib::Server::HandlerWithContentReader(handle_body));
  }
  // What httplib answers itself (unknown paths and methods, bodies over the limit): a JSON error
  // too, counted like the others.
  http.set_error_handler(httplib::Server::HandlerWithResponse(
      [self](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;  // ours
        std::string message;
        absl::StatusCode code = absl::StatusCode::kInvalidArgument;
        if (res.status == 413) {
          message = absl::StrCat("request: the body exceeds the limit of ",
                                 self->options_.max_body_bytes, " bytes (--max_message_bytes)");
          code = absl::StatusCode::kResourceExhausted;
        } else if (res.status == 404) {
          message = absl::StrCat("no such endpoint: ", req.method, " ", req.path,
                                 " (see the README, \"KServe v2 / Triton\")");
          code = absl::StatusCode::kNotFound;
        } else {
          message = absl::StrCat("request: not a valid HTTP request here (HTTP status ", res.status,
                                 "); methods: GET, POST");
        }
        CallRecord record(*self->v2_->env, "rest:Unknown",
                          absl::StrCat("ipv4:", req.remote_addr, ":", req.remote_port), "");
        record.Finish(static_cast<grpc::StatusCode>(code));
        res.set_content(Dump(json{{"error", message}}), "application/json");
        return httplib::Server::HandlerResponse::Handled;
      }));
  const bool bound = options.port == 0 ? (server->port_ = http.bind_to_any_port(options.host)) > 0
                                       : http.bind_to_port(options.host, options.port);
  if (!bound) {
    return absl::UnavailableError(absl::StrCat("--http_port: cannot listen on ", options.host, ":",
                                               options.port, " for the v2 REST API"));
  }
  if (options.port != 0) server->port_ = options.port;
  if (f.enabled()) {
    static_cast<Backlogged<httplib::SSLServer>&>(http).WidenBacklog();
  } else {
    static_cast<Backlogged<httplib::Server>&>(http).WidenBacklog();
  }
  server->listener_ = std::thread([self] {
    if (!self->http_->listen_after_bind() && !self->stopping_.load()) {
      // httplib gives up on accept() errors other than EMFILE, EINTR and EAGAIN.
      Log(LogLevel::kError, "the REST API stopped accepting connections",
          {{"port", absl::StrCat(self->port_)}});
    }
    self->listening_done_.store(true);
  });
  // Until httplib says it runs: a stop() before that would be lost (and the join would hang).
  while (!http.is_running() && !server->listening_done_.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return server;
}

void V2HttpServer::StopAccepting() {
  if (stopping_.exchange(true)) return;
  if (http_ != nullptr && !listening_done_.load()) http_->stop();
}

V2HttpServer::~V2HttpServer() {
  StopAccepting();
  if (listener_.joinable()) listener_.join();
}

void V2HttpServer::Serve(const httplib::Request& req, const std::string& body,
                         httplib::Response& res) {
  const std::string& method = req.method;
  const std::string& uri = req.path;
  std::vector<std::string> seg = absl::StrSplit(uri, '/', absl::SkipEmpty());
  if (seg.empty() || seg[0] != "v2") seg.clear();  // (no endpoint)
  const Engine& engine = *v2_->env->engine;
  const ModelRegistry& models = engine.models();

  // Which endpoint, and its handler.
  Endpoint ep{"rest:Unknown", false, nullptr};
  std::function<Reply()> handler;
  std::optional<ModelPath> mp;
  const std::string* tenant = nullptr;  // set once the caller is authenticated
  if (seg.empty()) {
    // no endpoint: handler stays empty
  } else if (seg.size() == 1) {
    ep = {"rest:ServerMetadata", false, "GET"};
    handler = [&] {
      inference::ServerMetadataResponse r;
      v2::ServerMetadata(v2_->server_version, &r);
      return JsonReply(ProtoToJson(r));
    };
  } else if (seg.size() == 3 && seg[1] == "health" && (seg[2] == "live" || seg[2] == "ready")) {
    const bool live = seg[2] == "live";
    ep = {live ? "rest:ServerLive" : "rest:ServerReady", true, "GET"};
    handler = [this, live] { return live || v2_->IsReady() ? Reply{} : NotReady(); };
  } else if (seg.size() == 3 && seg[1] == "repository" && seg[2] == "index") {
    ep = {"rest:RepositoryIndex", false, "POST"};
    handler = [&] {
      inference::RepositoryIndexResponse r;
      v2::RepositoryIndex(models, &r);
      return JsonReply(ProtoToJson(r)["models"]);
    };
  } else if (seg.size() == 3 && seg[1] == "models" && seg[2] == "stats") {
    ep = {"rest:ModelStatistics", false, "GET"};
    handler = [&] {
      inference::ModelStatisticsResponse r;
      absl::Status st = v2_->stats->Fill(models, "", "", &r);
      return st.ok() ? JsonReply(ProtoToJson(r)) : ErrorReply(st);
    };
  } else if (seg.size() >= 3 && seg[1] == "models" && (mp = ParseModelPath(seg))) {
    const std::string& action = mp->action;
    auto with_model = [&, this](auto body) {
      return [&, this, body]() -> Reply {
        auto m = FindModel(models, mp->name, mp->version);
        if (!m.ok()) return ErrorReply(m.status());
        return body(**m);
      };
    };
    if (action.empty()) {
      ep = {"rest:ModelMetadata", false, "GET"};
      handler = with_model([](const ServedModel& m) {
        inference::ModelMetadataResponse r;
        v2::ModelMetadata(m, &r);
        return JsonReply(ProtoToJson(r));
      });
    } else if (action == "ready") {
      ep = {"rest:ModelReady", true, "GET"};
      // Open (a probe's endpoint): an unknown model is a bare 404 that names no served model.
      handler = [&, this]() -> Reply {
        if (!FindModel(models, mp->name, mp->version).ok()) {
          return ErrorReply(absl::NotFoundError("model: not served here"));
        }
        return v2_->IsReady() ? Reply{} : NotReady();
      };
    } else if (action == "config") {
      ep = {"rest:ModelConfig", false, "GET"};
      handler = with_model([this](const ServedModel& m) {
        inference::ModelConfig config;
        v2::ModelConfig(m, v2_->idle_ttl_s, &config);
        return JsonReply(ProtoToJson(config));  // the bare config, as Triton's REST API has it
      });
    } else if (action == "stats") {
      ep = {"rest:ModelStatistics", false, "GET"};
      handler = [&] {
        inference::ModelStatisticsResponse r;
        absl::Status st = v2_->stats->Fill(models, mp->name, mp->version, &r);
        return st.ok() ? JsonReply(ProtoToJson(r)) : ErrorReply(st);
      };
    } else if (action == "infer") {
      ep = {"rest:ModelInfer", false, "POST"};
      handler = [&] { return Infer(*v2_, *tenant, req, body, *mp); };
    }
  }

  const std::string peer = absl::StrCat("ipv4:", req.remote_addr, ":", req.remote_port);
  CallRecord record(*v2_->env, ep.rpc, peer, req.get_header_value("Authorization"));
  Reply reply;
  absl::Status st;
  if (!ep.open) st = record.Authenticate();
  tenant = &record.tenant();
  if (!st.ok()) {
    reply = ErrorReply(st);
  } else if (!handler) {
    reply = ErrorReply(absl::NotFoundError(absl::StrCat(
        "no such endpoint: ", method, " ", uri, " (see the README, \"KServe v2 / Triton\")")));
  } else if (method != ep.method) {
    st = absl::InvalidArgumentError(absl::StrCat(uri, ": use ", ep.method, ", not ", method));
    reply = ErrorReply(st, 405);
  } else {
    reply = handler();
  }
  record.Finish(static_cast<grpc::StatusCode>(reply.code));  // (the same numbering)

  res.status = reply.http_status;
  if (reply.json_bytes) {
    res.set_header("Inference-Header-Content-Length", absl::StrCat(*reply.json_bytes));
  }
  if (!reply.body.empty()) {
    const bool binary = reply.json_bytes.has_value() && *reply.json_bytes < reply.body.size();
    res.set_header("Content-Type", binary ? "application/octet-stream" : "application/json");
    res.body = std::move(reply.body);  // (set_content would copy it)
  }
}

}  // namespace aaren::v2
