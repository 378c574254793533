// SPDX-License-Identifier: Apache-2.0
#include "client/aaren_client.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/grpc_status.h"
#include "client/session_routing.h"
#include "client/unary_batch.h"

namespace aaren::client {
namespace {

void SetDeadline(grpc::ClientContext& context, absl::Duration timeout) {
  if (timeout > absl::ZeroDuration()) {
    context.set_deadline(std::chrono::system_clock::now() + absl::ToChronoNanoseconds(timeout));
  }
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> TlsCredentialsFromFiles(
    const std::string& ca_file, const std::string& cert_file, const std::string& key_file) {
  if (cert_file.empty() != key_file.empty()) {
    return absl::InvalidArgumentError(
        "a client certificate needs its key (and a key its certificate)");
  }
  grpc::SslCredentialsOptions ssl;
  if (!ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadFile(ca_file);
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *ca;
  }
  if (!cert_file.empty()) {
    absl::StatusOr<std::string> cert = ReadFile(cert_file);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadFile(key_file);
    if (!key.ok()) return key.status();
    ssl.pem_cert_chain = *cert;
    ssl.pem_private_key = *key;
  }
  return grpc::SslCredentials(ssl);
}

grpc::ChannelArguments MakeChannelArguments(const ClientOptions& options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  return args;
}

AarenClient::AarenClient(const std::string& target, ClientOptions options)
    : AarenClient(grpc::CreateCustomChannel(target,
                                            options.credentials != nullptr
                                                ? options.credentials
                                                : grpc::InsecureChannelCredentials(),
                                            MakeChannelArguments(options)),
                  options) {}

AarenClient::AarenClient(std::shared_ptr<grpc::Channel> channel, ClientOptions options)
    : options_(options),
      channel_(std::move(channel)),
      stub_(v1::Aaren::NewStub(channel_)),
      echo_stub_(v1::BenchEcho::NewStub(channel_)),
      health_stub_(grpc::health::v1::Health::NewStub(channel_)) {}

void AarenClient::PrepareUnaryContext(grpc::ClientContext& context,
                                      absl::string_view session_id) const {
  SetDeadline(context, options_.timeout);
  if (!options_.token.empty()) context.AddMetadata("authorization", "Bearer " + options_.token);
  AddSessionIdMetadata(context, session_id);
}

void AarenClient::PrepareStreamContext(grpc::ClientContext& context,
                                       absl::string_view session_id) const {
  SetDeadline(context, options_.stream_timeout);
  if (!options_.token.empty()) context.AddMetadata("authorization", "Bearer " + options_.token);
  AddSessionIdMetadata(context, session_id);
}

template <typename Stub, typename Request, typename Response>
absl::StatusOr<Response> AarenClient::Unary(Stub& stub,
                                            grpc::Status (Stub::*method)(grpc::ClientContext*,
                                                                         const Request&, Response*),
                                            const Request& request) {
  grpc::ClientContext context;
  PrepareUnaryContext(context, SessionIdOf(request));
  Response response;
  grpc::Status status = (stub.*method)(&context, request, &response);
  if (!status.ok()) return ToAbslStatus(status);
  return response;
}

absl::StatusOr<v1::ListModelsResponse> AarenClient::ListModels() {
  return Unary(*stub_, &v1::Aaren::Stub::ListModels, v1::ListModelsRequest());
}

absl::StatusOr<v1::ModelInfo> AarenClient::GetModel(absl::string_view name) {
  absl::StatusOr<v1::ListModelsResponse> models = ListModels();
  if (!models.ok()) return models.status();
  std::vector<std::string> names;
  for (const v1::ModelInfo& model : models->models()) {
    if (model.name() == name) return model;
    names.push_back(model.name());
  }
  return absl::NotFoundError(absl::StrCat(
      "model '", name,
      "' is not served (served: ", names.empty() ? "none" : absl::StrJoin(names, ", "), ")"));
}

absl::StatusOr<v1::ScoreResponse> AarenClient::Score(const v1::ScoreRequest& request) {
  return Unary(*stub_, &v1::Aaren::Stub::Score, request);
}

absl::StatusOr<v1::Session> AarenClient::CreateSession(const v1::CreateSessionRequest& request) {
  return Unary(*stub_, &v1::Aaren::Stub::CreateSession, request);
}

absl::StatusOr<v1::AppendResponse> AarenClient::Append(const v1::AppendRequest& request) {
  return Unary(*stub_, &v1::Aaren::Stub::Append, request);
}

absl::StatusOr<v1::Session> AarenClient::GetSession(absl::string_view session_id) {
  v1::GetSessionRequest request;
  request.set_session_id(std::string(session_id));
  return Unary(*stub_, &v1::Aaren::Stub::GetSession, request);
}

absl::Status AarenClient::DeleteSession(absl::string_view session_id) {
  v1::DeleteSessionRequest request;
  request.set_session_id(std::string(session_id));
  return Unary(*stub_, &v1::Aaren::Stub::DeleteSession, request).status();
}

absl::StatusOr<v1::Session> AarenClient::ForkSession(const v1::ForkSessionRequest& request) {
  return Unary(*stub_, &v1::Aaren::Stub::ForkSession, request);
}

absl::StatusOr<v1::SessionSnapshot> AarenClient::ExportSession(absl::string_view session_id) {
  v1::ExportSessionRequest request;
  request.set_session_id(std::string(session_id));
  absl::StatusOr<v1::ExportSessionResponse> response =
      Unary(*stub_, &v1::Aaren::Stub::ExportSession, request);
  if (!response.ok()) return response.status();
  return std::move(*response->mutable_snapshot());
}

absl::StatusOr<v1::Session> AarenClient::ImportSession(const v1::ImportSessionRequest& request) {
  return Unary(*stub_, &v1::Aaren::Stub::ImportSession, request);
}

absl::StatusOr<grpc::health::v1::HealthCheckResponse> AarenClient::Health(
    absl::string_view service) {
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(std::string(service));
  return Unary(*health_stub_, &grpc::health::v1::Health::Stub::Check, request);
}

absl::Status AarenClient::Generate(const v1::GenerateRequest& request,
                                   absl::FunctionRef<void(const v1::GenerateResponse&)> on_token) {
  grpc::ClientContext context;
  PrepareUnaryContext(context, SessionIdOf(request));
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
      stub_->Generate(&context, request);
  v1::GenerateResponse token;
  while (reader->Read(&token)) on_token(token);
  return ToAbslStatus(reader->Finish());
}

absl::StatusOr<std::vector<v1::GenerateResponse>> AarenClient::Generate(
    const v1::GenerateRequest& request) {
  std::vector<v1::GenerateResponse> tokens;
  absl::Status status =
      Generate(request, [&tokens](const v1::GenerateResponse& token) { tokens.push_back(token); });
  if (!status.ok()) return status;
  return tokens;
}

absl::Status AarenClient::ScoreMany(
    size_t count, int max_in_flight, absl::FunctionRef<v1::ScoreRequest(size_t)> make_request,
    absl::FunctionRef<absl::Status(size_t, v1::ScoreResponse&)> on_response,
    std::vector<int64_t>* latencies_ns) {
  return RunUnaryBatch<v1::ScoreRequest, v1::ScoreResponse>(
      *this, &v1::Aaren::StubInterface::async_interface::Score, count, max_in_flight, make_request,
      on_response, latencies_ns);
}

absl::Status AarenClient::CreateSessionMany(
    size_t count, int max_in_flight,
    absl::FunctionRef<v1::CreateSessionRequest(size_t)> make_request,
    absl::FunctionRef<absl::Status(size_t, v1::Session&)> on_response,
    std::vector<int64_t>* latencies_ns) {
  return RunUnaryBatch<v1::CreateSessionRequest, v1::Session>(
      *this, &v1::Aaren::StubInterface::async_interface::CreateSession, count, max_in_flight,
      make_request, on_response, latencies_ns);
}

absl::Status AarenClient::DeleteSessionMany(const std::vector<std::string>& session_ids,
                                            int max_in_flight, std::vector<int64_t>* latencies_ns) {
  return RunUnaryBatch<v1::DeleteSessionRequest, v1::DeleteSessionResponse>(
      *this, &v1::Aaren::StubInterface::async_interface::DeleteSession, session_ids.size(),
      max_in_flight,
      [&session_ids](size_t i) {
        v1::DeleteSessionRequest request;
        request.set_session_id(session_ids[i]);
        return request;
      },
      [](size_t, v1::DeleteSessionResponse&) { return absl::OkStatus(); }, latencies_ns);
}

}  // namespace aaren::client
