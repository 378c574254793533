// SPDX-License-Identifier: Apache-2.0
// Security end to end (README, "Security"; DESIGN.md section 7.1), against the real server with
// certificates the test makes with openssl (tests/support/make_test_certs.sh):
//   * TLS and mutual TLS: plaintext clients, clients without a certificate, with another CA's
//     certificate, or not trusting the server's CA cannot talk to it;
//   * bearer tokens: every RPC without a valid token is UNAUTHENTICATED (Stream and Generate
//     included), health stays open, reflection needs a token; SIGHUP reloads the tokens file and a
//     broken file leaves the old tokens in force;
//   * tenants: tenant B cannot see, read, append to, fork, export, stream to, generate on or
//     delete tenant A's sessions, and gets exactly the NOT_FOUND an unknown id gets;
//   * per-tenant limits and the memory budget, each refusal naming its flag;
//   * the access log names rpc, tenant and code, and never the token;
//   * the KServe v2 REST port is HTTPS with the same certificates, client certificates, tokens
//     and tenants (an https client, cpp-httplib's).
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/server/e2e_support.h"

namespace aaren::testing {
namespace {

using Code = grpc::StatusCode;
constexpr char kLm[] = "demo-lm";
constexpr char kTokenA[] = "token-of-tenant-a-0123456789";
constexpr char kTokenB[] = "token-of-tenant-b-0123456789";
constexpr char kTokenC[] = "token-of-tenant-c-0123456789";

std::string ReadText(const std::filesystem::path& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The test PKI, made once per process.
const std::filesystem::path& Pki() {
  static const std::filesystem::path dir = [] {
    const std::filesystem::path d =
        std::filesystem::temp_directory_path() / absl::StrCat("aaren-pki-", getpid());
    const std::string cmd = absl::StrCat(
        "bash ", (SourceDir() / "tests/support/make_test_certs.sh").string(), " ", d.string());
    if (std::system(cmd.c_str()) != 0) ADD_FAILURE() << "make_test_certs.sh failed";
    return d;
  }();
  return dir;
}

std::shared_ptr<grpc::ChannelCredentials> Tls(const std::string& ca, const std::string& cert = "",
                                              const std::string& key = "") {
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = ReadText(Pki() / ca);
  if (!cert.empty()) {
    o.pem_cert_chain = ReadText(Pki() / cert);
    o.pem_private_key = ReadText(Pki() / key);
  }
  return grpc::SslCredentials(o);
}

std::shared_ptr<grpc::ChannelCredentials> ClientTls() {
  return Tls("ca.pem", "client.pem", "client.key");
}

void WriteTokens(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path) << text;
}

std::filesystem::path TokensFile() {
  static const std::filesystem::path path = Pki() / "tokens";
  return path;
}

// A context for `token` ("" = none) with a deadline.
std::unique_ptr<grpc::ClientContext> As(const std::string& token,
                                        std::chrono::milliseconds timeout = kCallTimeout) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
  if (!token.empty()) ctx->AddMetadata("authorization", absl::StrCat("Bearer ", token));
  return ctx;
}

template <typename Request, typename Response>
CallResult<Response> CallAs(const std::string& token, AarenStub& stub,
                            grpc::Status (AarenStub::*method)(grpc::ClientContext*, const Request&,
                                                              Response*),
                            const Request& request) {
  auto ctx = As(token);
  CallResult<Response> r;
  r.status = (stub.*method)(ctx.get(), request, &r.response);
  return r;
}

// The Stream's final status when opening `open` as `token`, and its session if it opened.
struct StreamOutcome {
  grpc::Status status;
  std::optional<v1::Session> session;
};
StreamOutcome OpenStreamAs(const std::string& token, AarenStub& stub, const v1::OpenSession& open,
                           const v1::Sequence* append = nullptr) {
  auto ctx = As(token, std::chrono::seconds(30));
  auto stream = stub.Stream(ctx.get());
  v1::StreamRequest req;
  *req.mutable_open() = open;
  StreamOutcome out;
  stream->Write(req);
  v1::StreamResponse resp;
  if (stream->Read(&resp) && resp.has_session()) {
    out.session = resp.session();
    if (append != nullptr) {
      v1::StreamRequest a;
      *a.mutable_append()->mutable_input() = *append;
      stream->Write(a);
      stream->Read(&resp);
    }
  }
  stream->WritesDone();
  while (stream->Read(&resp)) {
  }
  out.status = stream->Finish();
  return out;
}

grpc::Status GenerateAs(const std::string& token, AarenStub& stub, const std::string& id) {
  auto ctx = As(token, std::chrono::seconds(30));
  v1::GenerateRequest req;
  req.set_session_id(id);
  req.set_max_tokens(2);
  auto reader = stub.Generate(ctx.get(), req);
  v1::GenerateResponse resp;
  while (reader->Read(&resp)) {
  }
  return reader->Finish();
}

// ServerReflectionInfo with a list_services request (field 7, an empty string), through a
// generic stub: the raw response, and the status.
std::pair<grpc::Status, std::string> ListServicesAs(const std::string& token,
                                                    std::shared_ptr<grpc::Channel> channel) {
  grpc::GenericStub stub(channel);
  auto ctx = As(token, std::chrono::seconds(30));
  grpc::CompletionQueue cq;
  auto call = stub.PrepareCall(
      ctx.get(), "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag;
  bool ok;
  call->StartCall(reinterpret_cast<void*>(1));
  cq.Next(&tag, &ok);
  const std::string request("\x3a\x00", 2);
  grpc::Slice slice(request);
  grpc::ByteBuffer out(&slice, 1);
  call->Write(out, reinterpret_cast<void*>(2));
  cq.Next(&tag, &ok);
  grpc::ByteBuffer in;
  call->Read(&in, reinterpret_cast<void*>(3));
  cq.Next(&tag, &ok);
  std::string response;
  if (ok) {
    std::vector<grpc::Slice> slices;
    (void)in.Dump(&slices);
    for (const grpc::Slice& s : slices) response.append(s.begin(), s.end());
  }
  call->WritesDone(reinterpret_cast<void*>(4));
  cq.Next(&tag, &ok);
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  while (cq.Next(&tag, &ok) && tag != reinterpret_cast<void*>(5)) {
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return {status, response};
}

// A ServerReflectionInfo stream as `token` that writes `frames`, never half-closes, reads until
// the call ends (the inner server finishing it, or `deadline`) and returns its status.
grpc::Status ReflectionWithoutHalfClose(const std::string& token,
                                        std::shared_ptr<grpc::Channel> channel,
                                        const std::vector<std::string>& frames,
                                        std::chrono::milliseconds deadline) {
  grpc::GenericStub stub(channel);
  auto ctx = As(token, deadline);
  grpc::CompletionQueue cq;
  auto call = stub.PrepareCall(
      ctx.get(), "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag;
  bool ok = false;
  call->StartCall(reinterpret_cast<void*>(1));
  cq.Next(&tag, &ok);
  for (const std::string& frame : frames) {
    if (!ok) break;
    grpc::Slice slice(frame);
    grpc::ByteBuffer out(&slice, 1);
    call->Write(out, reinterpret_cast<void*>(2));
    cq.Next(&tag, &ok);
  }
  while (ok) {
    grpc::ByteBuffer in;
    call->Read(&in, reinterpret_cast<void*>(3));
    cq.Next(&tag, &ok);
  }
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  while (cq.Next(&tag, &ok) && tag != reinterpret_cast<void*>(5)) {
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return status;
}

// ---- TLS, mutual TLS, tokens ----

class SecureServerTest : public SharedServerTest<SecureServerTest> {
 public:
  static ServerFlags Flags() {
    WriteTokens(TokensFile(), absl::StrCat("# tenants of the test\n", "tenant-a ", kTokenA,
                                           "\n\ntenant-b ", kTokenB, "  # B\n"));
    ServerFlags flags;
    flags.model_dirs = {DemoModelDir(kLm).string()};
    flags.extra = {"--threads",
                   "2",
                   "--tls_cert_file",
                   (Pki() / "server.pem").string(),
                   "--tls_key_file",
                   (Pki() / "server.key").string(),
                   "--tls_client_ca_file",
                   (Pki() / "ca.pem").string(),
                   "--auth_tokens_file",
                   TokensFile().string(),
                   "--access_log",
                   "--http_port",
                   std::to_string(HttpPort())};
    flags.credentials = ClientTls();
    return flags;
  }
  static int HttpPort() {
    static const int port = FreePort();
    return port;
  }
  // An HTTPS client of the REST port trusting `ca`, presenting `cert` (none when empty).
  static std::unique_ptr<httplib::SSLClient> Https(const std::string& ca, const std::string& cert,
                                                   const std::string& key) {
    auto c = cert.empty()
                 ? std::make_unique<httplib::SSLClient>("127.0.0.1", HttpPort())
                 : std::make_unique<httplib::SSLClient>(
                       "127.0.0.1", HttpPort(), (Pki() / cert).string(), (Pki() / key).string());
    c->set_ca_cert_path((Pki() / ca).string().c_str());
    c->enable_server_certificate_verification(true);
    c->set_connection_timeout(5);
    c->set_read_timeout(30);
    return c;
  }
};

TEST_F(SecureServerTest, PlaintextAndUntrustedClientsCannotConnect) {
  v1::ListModelsRequest req;
  for (auto creds : {grpc::InsecureChannelCredentials(),  // plaintext to a TLS port
                     Tls("ca.pem"),                       // no client certificate
                     Tls("ca.pem", "rogue-client.pem", "rogue-client.key"),  // another CA's
                     Tls("rogue-ca.pem", "client.pem", "client.key")}) {     // untrusted server
    auto stub = v1::Aaren::NewStub(server_->NewChannel(creds));
    auto ctx = As(kTokenA, std::chrono::seconds(5));
    v1::ListModelsResponse resp;
    const grpc::Status st = stub->ListModels(ctx.get(), req, &resp);
    EXPECT_EQ(st.error_code(), Code::UNAVAILABLE) << StatusString(st);
  }
  // The right CA and certificate with the token: served.
  auto r = CallAs(kTokenA, stub(), &AarenStub::ListModels, v1::ListModelsRequest());
  EXPECT_TRUE(r.ok()) << StatusString(r.status);
  EXPECT_EQ(r.response.models_size(), 1);
}

TEST_F(SecureServerTest, EveryRpcWithoutAValidTokenIsUnauthenticated) {
  const std::string id = "a-private-session";
  ASSERT_TRUE(CallAs(kTokenA, stub(), &AarenStub::CreateSession,
                     [&] {
                       v1::CreateSessionRequest c;
                       c.set_model(kLm);
                       c.set_session_id(id);
                       return c;
                     }())
                  .ok());
  for (const std::string& token :
       {std::string(), std::string("not-a-token-we-know-of"), std::string(kTokenA) + "x"}) {
    SCOPED_TRACE(token.empty() ? "no token" : token);
    std::vector<grpc::Status> statuses;
    statuses.push_back(
        CallAs(token, stub(), &AarenStub::ListModels, v1::ListModelsRequest()).status);
    v1::ScoreRequest score;
    score.set_model(kLm);
    score.add_sequences()->add_tokens(1);
    statuses.push_back(CallAs(token, stub(), &AarenStub::Score, score).status);
    v1::CreateSessionRequest create;
    create.set_model(kLm);
    statuses.push_back(CallAs(token, stub(), &AarenStub::CreateSession, create).status);
    v1::AppendRequest append;
    append.set_session_id(id);
    append.mutable_input()->add_tokens(1);
    statuses.push_back(CallAs(token, stub(), &AarenStub::Append, append).status);
    v1::GetSessionRequest get;
    get.set_session_id(id);
    statuses.push_back(CallAs(token, stub(), &AarenStub::GetSession, get).status);
    v1::ForkSessionRequest fork;
    fork.set_session_id(id);
    statuses.push_back(CallAs(token, stub(), &AarenStub::ForkSession, fork).status);
    v1::ExportSessionRequest exp;
    exp.set_session_id(id);
    statuses.push_back(CallAs(token, stub(), &AarenStub::ExportSession, exp).status);
    v1::ImportSessionRequest imp;
    statuses.push_back(CallAs(token, stub(), &AarenStub::ImportSession, imp).status);
    v1::DeleteSessionRequest del;
    del.set_session_id(id);
    statuses.push_back(CallAs(token, stub(), &AarenStub::DeleteSession, del).status);
    v1::OpenSession open;
    open.set_session_id(id);
    statuses.push_back(OpenStreamAs(token, stub(), open).status);
    statuses.push_back(GenerateAs(token, stub(), id));
    statuses.push_back(ListServicesAs(token, server_->NewChannel()).first);
    ASSERT_EQ(statuses.size(), 12u);
    for (size_t i = 0; i < statuses.size(); ++i) {
      EXPECT_TRUE(HasStatus(statuses[i], Code::UNAUTHENTICATED, {"authorization"})) << "rpc " << i;
      EXPECT_EQ(statuses[i].error_message().find("token-of"), std::string::npos)
          << "a token is echoed: " << statuses[i].error_message();
    }
  }
  // Nothing happened to A's session.
  v1::GetSessionRequest get;
  get.set_session_id(id);
  auto info = CallAs(kTokenA, stub(), &AarenStub::GetSession, get);
  ASSERT_TRUE(info.ok()) << StatusString(info.status);
  EXPECT_EQ(info.response.position(), 0);
}

TEST_F(SecureServerTest, HealthStaysOpen) {
  auto health = grpc::health::v1::Health::NewStub(server_->NewChannel());
  grpc::ClientContext ctx;  // no token
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  ASSERT_TRUE(health->Check(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST_F(SecureServerTest, ReflectionWithATokenListsTheServices) {
  auto [status, response] = ListServicesAs(kTokenA, server_->NewChannel());
  ASSERT_TRUE(status.ok()) << StatusString(status);
  EXPECT_NE(response.find("aaren.v1.Aaren"), std::string::npos);
  EXPECT_NE(response.find("grpc.health.v1.Health"), std::string::npos);
}

// The relay to the inner reflection server outlives neither call: the inner server ending the
// call while the caller's stream is still open (after a frame it cannot parse), or the caller's
// deadline passing with the stream open, from several clients at once, leaves the server
// serving (it used to start an operation on the destroyed inner call and abort).
TEST_F(SecureServerTest, ReflectionStreamsLeftOpenOrEndedByTheInnerServerDoNotCrashIt) {
  const std::string list_services("\x3a\x00", 2);
  const std::string malformed("\x0a\xff\xff\xff\xff\x0f", 6);
  std::vector<std::thread> clients;
  std::atomic<int> ended_by_inner{0}, ended_by_deadline{0};
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&] {
      auto channel = server_->NewChannel();
      for (int i = 0; i < 60; ++i) {
        grpc::Status st = ReflectionWithoutHalfClose(kTokenA, channel, {list_services, malformed},
                                                     std::chrono::seconds(20));
        if (st.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) ++ended_by_inner;
        if (i % 6 == 0) {
          st = ReflectionWithoutHalfClose(kTokenA, channel, {list_services},
                                          std::chrono::milliseconds(100));
          if (st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) ++ended_by_deadline;
        }
      }
    });
  }
  for (std::thread& t : clients) t.join();
  EXPECT_EQ(ended_by_inner.load(), 4 * 60);
  EXPECT_EQ(ended_by_deadline.load(), 4 * 10);
  // Still serving, reflection included.
  auto [status, response] = ListServicesAs(kTokenA, server_->NewChannel());
  ASSERT_TRUE(status.ok()) << StatusString(status);
  EXPECT_NE(response.find("aaren.v1.Aaren"), std::string::npos);
}

TEST_F(SecureServerTest, AnotherTenantSeesExactlyTheUnknownIdNotFound) {
  const std::string id = "shared-name";
  v1::CreateSessionRequest create;
  create.set_model(kLm);
  create.set_session_id(id);
  create.mutable_prefix()->add_tokens(3);
  ASSERT_TRUE(CallAs(kTokenA, stub(), &AarenStub::CreateSession, create).ok());
  auto snapshot = [&](const std::string& token) {
    v1::ExportSessionRequest e;
    e.set_session_id(id);
    auto r = CallAs(token, stub(), &AarenStub::ExportSession, e);
    EXPECT_TRUE(r.ok()) << StatusString(r.status);
    r.response.mutable_snapshot()->clear_exported_unix_ms();
    return r.response.SerializeAsString();
  };
  const std::string a_before = snapshot(kTokenA);

  // What B gets for `id`, and what it gets for an id nobody has, with the id swapped back.
  auto b_statuses = [&](const std::string& target) {
    std::vector<grpc::Status> out;
    v1::GetSessionRequest get;
    get.set_session_id(target);
    out.push_back(CallAs(kTokenB, stub(), &AarenStub::GetSession, get).status);
    v1::AppendRequest append;
    append.set_session_id(target);
    append.mutable_input()->add_tokens(1);
    out.push_back(CallAs(kTokenB, stub(), &AarenStub::Append, append).status);
    v1::ForkSessionRequest fork;
    fork.set_session_id(target);
    out.push_back(CallAs(kTokenB, stub(), &AarenStub::ForkSession, fork).status);
    v1::ExportSessionRequest exp;
    exp.set_session_id(target);
    out.push_back(CallAs(kTokenB, stub(), &AarenStub::ExportSession, exp).status);
    v1::OpenSession open;
    open.set_session_id(target);
    out.push_back(OpenStreamAs(kTokenB, stub(), open).status);
    out.push_back(GenerateAs(kTokenB, stub(), target));
    v1::DeleteSessionRequest del;
    del.set_session_id(target);
    out.push_back(CallAs(kTokenB, stub(), &AarenStub::DeleteSession, del).status);
    return out;
  };
  const std::vector<grpc::Status> taken = b_statuses(id);
  const std::vector<grpc::Status> unknown = b_statuses("never-made-by-anyone");
  ASSERT_EQ(taken.size(), unknown.size());
  for (size_t i = 0; i < taken.size(); ++i) {
    EXPECT_EQ(taken[i].error_code(), Code::NOT_FOUND) << i << ": " << StatusString(taken[i]);
    EXPECT_EQ(taken[i].error_message(),
              absl::StrReplaceAll(unknown[i].error_message(), {{"never-made-by-anyone", id}}))
        << i;
  }
  EXPECT_EQ(snapshot(kTokenA), a_before) << "B's calls changed A's session";

  // B's own session of the same name is another session; A's stays as it was.
  create.clear_prefix();
  auto b_made = CallAs(kTokenB, stub(), &AarenStub::CreateSession, create);
  ASSERT_TRUE(b_made.ok()) << StatusString(b_made.status);
  EXPECT_EQ(b_made.response.position(), 0);
  v1::DeleteSessionRequest del;
  del.set_session_id(id);
  EXPECT_TRUE(CallAs(kTokenB, stub(), &AarenStub::DeleteSession, del).ok());
  EXPECT_EQ(snapshot(kTokenA), a_before);
  // A Score's prefilled sessions belong to its caller too.
  v1::ScoreRequest score;
  score.set_model(kLm);
  score.set_prefill(true);
  score.add_sequences()->add_tokens(4);
  auto scored = CallAs(kTokenA, stub(), &AarenStub::Score, score);
  ASSERT_TRUE(scored.ok());
  v1::GetSessionRequest get;
  get.set_session_id(scored.response.results(0).session_id());
  EXPECT_TRUE(CallAs(kTokenA, stub(), &AarenStub::GetSession, get).ok());
  EXPECT_EQ(CallAs(kTokenB, stub(), &AarenStub::GetSession, get).status.error_code(),
            Code::NOT_FOUND);
}

TEST_F(SecureServerTest, AccessLogNamesTheCallNeverTheToken) {
  ASSERT_TRUE(CallAs(kTokenB, stub(), &AarenStub::ListModels, v1::ListModelsRequest()).ok());
  (void)CallAs("", stub(), &AarenStub::ListModels, v1::ListModelsRequest());
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const std::string log = server_->Log();
  EXPECT_TRUE(std::regex_search(
      log, std::regex("msg=call rpc=ListModels tenant=tenant-b code=OK duration_ms=[0-9.]+ peer=")))
      << log;
  EXPECT_TRUE(std::regex_search(log, std::regex("msg=call rpc=ListModels tenant=- "
                                                "code=UNAUTHENTICATED")))
      << log;
  EXPECT_EQ(log.find("token-of-tenant"), std::string::npos) << "a token reached the log";
}

TEST_F(SecureServerTest, RestIsHttpsWithTheSameCertificatesTokensAndTenants) {
  // A refused handshake closes the socket under the client's next write: EPIPE, not SIGPIPE.
  signal(SIGPIPE, SIG_IGN);
  // Plaintext, no client certificate, another CA's, not trusting the server: no answer.
  httplib::Client plain("127.0.0.1", HttpPort());
  plain.set_connection_timeout(5);
  plain.set_read_timeout(5);
  EXPECT_FALSE(plain.Get("/v2/health/live"));
  EXPECT_FALSE(Https("ca.pem", "", "")->Get("/v2/health/live"));
  EXPECT_FALSE(Https("ca.pem", "rogue-client.pem", "rogue-client.key")->Get("/v2/health/live"));
  EXPECT_FALSE(Https("rogue-ca.pem", "client.pem", "client.key")->Get("/v2/health/live"));

  auto https = Https("ca.pem", "client.pem", "client.key");
  auto live = https->Get("/v2/health/live");  // open, like gRPC health
  ASSERT_TRUE(live) << httplib::to_string(live.error());
  EXPECT_EQ(live->status, 200);
  for (const char* path :
       {"/v2", "/v2/models/demo-lm", "/v2/models/demo-lm/config", "/v2/models/demo-lm/stats"}) {
    auto r = https->Get(path);
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->status, 401) << path;
    EXPECT_NE(r->body.find("authorization"), std::string::npos) << r->body;
  }
  auto wrong = https->Get("/v2", {{"Authorization", "Bearer not-a-token-of-anyone-here"}});
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 401);
  EXPECT_EQ(wrong->body.find("not-a-token"), std::string::npos) << "the token was echoed";
  // A POST without a token is refused before its body is read, and starts nothing.
  auto anonymous = https->Post("/v2/models/demo-lm/infer",
                               R"({"inputs": [{"name": "TOKENS", "shape": [1], "datatype": "INT32",
      "data": [1]}], "parameters": {"sequence_id": "anon-seq", "sequence_start": true}})",
                               "application/json");
  ASSERT_TRUE(anonymous);
  EXPECT_EQ(anonymous->status, 401);
  EXPECT_NE(anonymous->body.find("authorization"), std::string::npos) << anonymous->body;

  // Tenant A starts a sequence over REST: an ordinary session of A, invisible to B.
  const std::string start = R"({"inputs": [{"name": "TOKENS", "shape": [3], "datatype": "INT32",
      "data": [1, 2, 3]}], "parameters": {"sequence_id": "rest-seq", "sequence_start": true}})";
  const httplib::Headers as_a = {{"Authorization", absl::StrCat("Bearer ", kTokenA)}};
  const httplib::Headers as_b = {{"Authorization", absl::StrCat("Bearer ", kTokenB)}};
  auto made = https->Post("/v2/models/demo-lm/infer", as_a, start, "application/json");
  ASSERT_TRUE(made);
  EXPECT_EQ(made->status, 200) << made->body;
  v1::GetSessionRequest get;
  get.set_session_id("rest-seq");
  auto seen = CallAs(kTokenA, stub(), &AarenStub::GetSession, get);
  ASSERT_TRUE(seen.ok()) << StatusString(seen.status);
  EXPECT_EQ(seen.response.position(), 3);
  EXPECT_EQ(CallAs(kTokenB, stub(), &AarenStub::GetSession, get).status.error_code(),
            Code::NOT_FOUND);
  const std::string next = R"({"inputs": [{"name": "TOKENS", "shape": [1], "datatype": "INT32",
      "data": [4]}], "parameters": {"sequence_id": "rest-seq"}})";
  auto by_b = https->Post("/v2/models/demo-lm/infer", as_b, next, "application/json");
  ASSERT_TRUE(by_b);
  EXPECT_EQ(by_b->status, 400);  // B has no such sequence: Triton's missing-START error
  EXPECT_NE(by_b->body.find("START"), std::string::npos) << by_b->body;
  auto by_a = https->Post("/v2/models/demo-lm/infer", as_a, next, "application/json");
  ASSERT_TRUE(by_a);
  EXPECT_EQ(by_a->status, 200) << by_a->body;
  EXPECT_EQ(CallAs(kTokenA, stub(), &AarenStub::GetSession, get).response.position(), 4);
  v1::GetSessionRequest get_anonymous;
  get_anonymous.set_session_id("anon-seq");
  for (const char* token : {kTokenA, kTokenB}) {
    EXPECT_EQ(CallAs(token, stub(), &AarenStub::GetSession, get_anonymous).status.error_code(),
              Code::NOT_FOUND)
        << "the refused POST started a sequence";
  }

  // A client that gives up before its (34 MB) reply is written: the server serves on. (The
  // server ignores SIGPIPE; this client's close did not raise one here even without that, so
  // this checks only that the abandoned reply harms nothing.)
  {
    std::string tokens = "0";
    for (int i = 1; i < 200000; ++i) tokens += ",1";
    auto impatient = Https("ca.pem", "client.pem", "client.key");
    impatient->set_read_timeout(0, 20000);
    (void)impatient->Post("/v2/models/demo-lm/infer", as_a,
                          absl::StrCat(R"({"inputs": [{"name": "TOKENS", "shape": [200000], )",
                                       R"("datatype": "INT32", "data": [)", tokens, "]}]}"),
                          "application/json");
  }
  std::this_thread::sleep_for(std::chrono::seconds(2));
  auto still = https->Get("/v2/health/live");
  ASSERT_TRUE(still) << "the server died with its client";
  EXPECT_EQ(still->status, 200);

  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const std::string log = server_->Log();
  EXPECT_TRUE(std::regex_search(log, std::regex("msg=call rpc=rest:ModelInfer tenant=tenant-a "
                                                "code=OK duration_ms=[0-9.]+ peer=ipv4:127")))
      << log;
  EXPECT_TRUE(std::regex_search(log, std::regex("msg=call rpc=rest:ServerMetadata tenant=- "
                                                "code=UNAUTHENTICATED")))
      << log;
  EXPECT_EQ(log.find("token-of-tenant"), std::string::npos) << "a token reached the log";
}

// Runs last in the suite (it changes the tokens).
TEST_F(SecureServerTest, ZZSighupReloadsTheTokensAndABrokenFileKeepsTheOldOnes) {
  v1::CreateSessionRequest create;
  create.set_model(kLm);
  create.set_session_id("kept-across-reload");
  ASSERT_TRUE(CallAs(kTokenA, stub(), &AarenStub::CreateSession, create).ok());
  auto served = [&](const char* token) {
    return CallAs(token, stub(), &AarenStub::ListModels, v1::ListModelsRequest()).status;
  };
  auto wait_for_log = [&](const std::string& needle, size_t count) {
    for (int i = 0; i < 200; ++i) {
      size_t seen = 0;
      for (size_t p = server_->Log().find(needle); p != std::string::npos;
           p = server_->Log().find(needle, p + 1)) {
        ++seen;
      }
      if (seen >= count) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    return false;
  };
  ASSERT_EQ(served(kTokenC).error_code(), Code::UNAUTHENTICATED);
  // B removed, C added.
  WriteTokens(TokensFile(), absl::StrCat("tenant-a ", kTokenA, "\ntenant-c ", kTokenC, "\n"));
  server_->Signal(SIGHUP);
  ASSERT_TRUE(wait_for_log("msg=\"tokens reloaded\"", 1)) << server_->Log();
  EXPECT_TRUE(served(kTokenC).ok());
  EXPECT_EQ(served(kTokenB).error_code(), Code::UNAUTHENTICATED);
  v1::GetSessionRequest get;
  get.set_session_id("kept-across-reload");
  EXPECT_TRUE(CallAs(kTokenA, stub(), &AarenStub::GetSession, get).ok());
  // A broken file: refused, logged, the tokens in force stay.
  WriteTokens(TokensFile(), "tenant-a\n");
  server_->Signal(SIGHUP);
  ASSERT_TRUE(wait_for_log("tokens reload failed", 1)) << server_->Log();
  EXPECT_TRUE(served(kTokenA).ok());
  EXPECT_TRUE(served(kTokenC).ok());
  // A file with no tokens (it would refuse every caller): refused the same way.
  WriteTokens(TokensFile(), "# all gone\n");
  server_->Signal(SIGHUP);
  ASSERT_TRUE(wait_for_log("tokens reload failed", 2)) << server_->Log();
  EXPECT_TRUE(served(kTokenA).ok());
  EXPECT_TRUE(served(kTokenC).ok());
}

// A caller that sends many reflection requests without reading the replies (so the relay's
// writes to it block), then cancels: the relay still ends both calls, so reflection keeps
// working and SIGTERM stops the server (a relay left waiting for a read hold used to hold the
// drain forever).
TEST(ReflectionRelayTest, ACallerCancellingWhileItsRepliesAreBlockedLetsTheServerStop) {
  const std::filesystem::path tokens = Pki() / "relay-tokens";
  WriteTokens(tokens, absl::StrCat("tenant-a ", kTokenA, "\n"));
  ServerFlags flags;
  flags.model_dirs = {DemoModelDir(kLm).string()};
  flags.extra = {"--threads", "2", "--auth_tokens_file", tokens.string()};
  auto started = ServerProcess::Start(flags);
  ASSERT_TRUE(started.ok()) << started.status();
  std::unique_ptr<ServerProcess> server = std::move(*started);
  // file_containing_symbol (field 4): a reply of several KB each.
  const std::string symbol = "aaren.v1.Aaren";
  const std::string request =
      absl::StrCat("\x22", std::string(1, static_cast<char>(symbol.size())), symbol);
  int blocked = 0;
  for (int round = 0; round < 3; ++round) {
    grpc::GenericStub stub(server->NewChannel());
    auto ctx = As(kTokenA, std::chrono::seconds(60));
    grpc::CompletionQueue cq;
    auto call = stub.PrepareCall(
        ctx.get(), "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
    void* tag;
    bool ok = false;
    call->StartCall(reinterpret_cast<void*>(1));
    cq.Next(&tag, &ok);
    for (int i = 0; ok && i < 3000; ++i) {
      grpc::Slice slice(request);
      grpc::ByteBuffer out(&slice, 1);
      call->Write(out, reinterpret_cast<void*>(2));
      if (cq.AsyncNext(&tag, &ok, std::chrono::system_clock::now() + std::chrono::seconds(2)) !=
          grpc::CompletionQueue::GOT_EVENT) {
        ++blocked;  // flow control: the relay stopped reading this caller
        break;
      }
    }
    ctx->TryCancel();
    grpc::Status status;
    call->Finish(&status, reinterpret_cast<void*>(5));
    while (cq.Next(&tag, &ok) && tag != reinterpret_cast<void*>(5)) {
    }
    cq.Shutdown();
    while (cq.Next(&tag, &ok)) {
    }
  }
  // (Whether the client's own writes blocked too depends on its buffers: either way the relay
  // had replies to write that the caller never read when it cancelled.)
  std::cout << "writes blocked in " << blocked << " of 3 rounds\n";
  auto [status, response] = ListServicesAs(kTokenA, server->NewChannel());
  ASSERT_TRUE(status.ok()) << StatusString(status);
  server->Signal(SIGTERM);
  const std::optional<int> exit_status = server->WaitForExit(std::chrono::seconds(20));
  ASSERT_TRUE(exit_status.has_value()) << "still draining 20 s after SIGTERM";
  EXPECT_TRUE(WIFEXITED(*exit_status) && WEXITSTATUS(*exit_status) == 0);
}

// ---- Without TLS: reflection off, and the limits ----

class LimitsTest : public SharedServerTest<LimitsTest> {
 public:
  static ServerFlags Flags() {
    const std::filesystem::path tokens = Pki() / "limits-tokens";
    WriteTokens(tokens, absl::StrCat("tenant-a ", kTokenA, "\ntenant-b ", kTokenB, "\n"));
    ServerFlags flags;
    flags.model_dirs = {DemoModelDir(kLm).string()};
    flags.extra = {"--threads",
                   "2",
                   "--auth_tokens_file",
                   tokens.string(),
                   "--max_sessions_per_tenant",
                   "3",
                   "--max_streams_per_tenant",
                   "2",
                   "--reflection=false",
                   "--metrics_port",
                   std::to_string(FreePort())};
    return flags;
  }
};

TEST_F(LimitsTest, SessionsPerTenant) {
  v1::CreateSessionRequest create;
  create.set_model(kLm);
  std::vector<std::string> made;
  for (int i = 0; i < 3; ++i) {
    auto r = CallAs(kTokenA, stub(), &AarenStub::CreateSession, create);
    ASSERT_TRUE(r.ok()) << i;
    made.push_back(r.response.session_id());
  }
  auto refused = CallAs(kTokenA, stub(), &AarenStub::CreateSession, create);
  EXPECT_TRUE(HasStatus(refused.status, Code::RESOURCE_EXHAUSTED, {"--max_sessions_per_tenant"}));
  v1::ScoreRequest prefill;
  prefill.set_model(kLm);
  prefill.set_prefill(true);
  prefill.add_sequences()->add_tokens(1);
  EXPECT_TRUE(HasStatus(CallAs(kTokenA, stub(), &AarenStub::Score, prefill).status,
                        Code::RESOURCE_EXHAUSTED, {"--max_sessions_per_tenant"}));
  // Another tenant is not held back by A.
  auto b = CallAs(kTokenB, stub(), &AarenStub::CreateSession, create);
  ASSERT_TRUE(b.ok()) << StatusString(b.status);
  v1::DeleteSessionRequest del;
  del.set_session_id(b.response.session_id());
  EXPECT_TRUE(CallAs(kTokenB, stub(), &AarenStub::DeleteSession, del).ok());
  // Deleting frees the tenant's room.
  del.set_session_id(made.back());
  EXPECT_TRUE(CallAs(kTokenA, stub(), &AarenStub::DeleteSession, del).ok());
  EXPECT_TRUE(CallAs(kTokenA, stub(), &AarenStub::CreateSession, create).ok());
  for (const std::string& id : made) {
    del.set_session_id(id);
    (void)CallAs(kTokenA, stub(), &AarenStub::DeleteSession, del);
  }
}

TEST_F(LimitsTest, StreamsPerTenant) {
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReaderWriter<v1::StreamRequest, v1::StreamResponse>>>
      open;
  v1::StreamRequest req;
  req.mutable_open()->set_model(kLm);
  auto open_one = [&]() -> grpc::Status {
    contexts.push_back(As(kTokenB, std::chrono::seconds(30)));
    auto stream = stub().Stream(contexts.back().get());
    stream->Write(req);
    v1::StreamResponse resp;
    if (stream->Read(&resp)) {
      open.push_back(std::move(stream));
      return grpc::Status::OK;
    }
    return stream->Finish();
  };
  ASSERT_TRUE(open_one().ok());
  ASSERT_TRUE(open_one().ok());
  EXPECT_TRUE(HasStatus(open_one(), Code::RESOURCE_EXHAUSTED, {"--max_streams_per_tenant"}));
  // Generate counts as a stream too.
  EXPECT_TRUE(HasStatus(GenerateAs(kTokenB, stub(), "whatever"), Code::RESOURCE_EXHAUSTED,
                        {"--max_streams_per_tenant"}));
  // Another tenant's stream is not counted against B.
  v1::OpenSession a_open;
  a_open.set_model(kLm);
  EXPECT_TRUE(OpenStreamAs(kTokenA, stub(), a_open).status.ok());
  // Closing one frees its slot.
  open.back()->WritesDone();
  EXPECT_TRUE(open.back()->Finish().ok());
  open.pop_back();
  EXPECT_TRUE(open_one().ok());
  for (auto& s : open) {
    s->WritesDone();
    s->Finish();
  }
}

TEST_F(LimitsTest, ReflectionOffIsUnimplemented) {
  auto [status, response] = ListServicesAs(kTokenA, server_->NewChannel());
  EXPECT_TRUE(HasStatus(status, Code::UNIMPLEMENTED, {"ServerReflectionInfo"}));
}

TEST_F(LimitsTest, MetricsStayOnLoopbackWhenAuthIsOn) {
  EXPECT_NE(server_->Log().find("address=127.0.0.1:"), std::string::npos) << server_->Log();
}

TEST(MemoryBudgetTest, RefusalsNameTheBudget) {
  ServerFlags flags;
  flags.model_dirs = {DemoModelDir(kLm).string()};
  // demo-lm sessions cost ~1.8 KB each here: room for a few dozen.
  flags.extra = {"--threads", "1", "--memory_budget_bytes", "65536"};
  auto server = ServerProcess::Start(flags);
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = NewAarenStub(**server);
  v1::CreateSessionRequest create;
  create.set_model(kLm);
  int made = 0;
  grpc::Status last;
  for (; made < 1000; ++made) {
    auto r = Call(*stub, &AarenStub::CreateSession, create);
    if (!r.ok()) {
      last = r.status;
      break;
    }
  }
  EXPECT_GT(made, 5);
  EXPECT_LT(made, 1000);
  EXPECT_TRUE(HasStatus(last, Code::RESOURCE_EXHAUSTED, {"--memory_budget_bytes"}));
  // A Score whose outputs do not fit the budget either is refused before it runs.
  v1::ScoreRequest score;
  score.set_model(kLm);
  for (int i = 0; i < 2000; ++i) score.add_sequences()->add_tokens(i % 43);
  EXPECT_TRUE(HasStatus(Call(*stub, &AarenStub::Score, score).status, Code::RESOURCE_EXHAUSTED,
                        {"--memory_budget_bytes"}));
}

}  // namespace
}  // namespace aaren::testing
