// SPDX-License-Identifier: Apache-2.0
#include "tests/client/fake_aaren_service.h"

#include <chrono>
#include <thread>

#include <gtest/gtest.h>

namespace aaren::testing {
namespace {

v1::Session MakeSession(const std::string& id, int64_t position) {
  v1::Session session;
  session.set_session_id(id);
  session.set_model("demo-lm");
  session.set_position(position);
  session.set_state_bytes(8);
  return session;
}

}  // namespace

grpc::Status FakeAarenService::ListModels(grpc::ServerContext* context,
                                          const v1::ListModelsRequest*,
                                          v1::ListModelsResponse* response) {
  RecordRouting("ListModels", context);
  v1::ModelInfo* lm = response->add_models();
  lm->set_name("demo-lm");
  lm->set_input_kind("tokens");
  lm->set_vocab_size(43);
  lm->set_output_dim(43);
  v1::ModelInfo* ts = response->add_models();
  ts->set_name("demo-ts");
  ts->set_input_kind("features");
  ts->set_n_features(8);
  ts->set_output_dim(1);
  return grpc::Status::OK;
}

grpc::Status FakeAarenService::Score(grpc::ServerContext* context, const v1::ScoreRequest* request,
                                     v1::ScoreResponse* response) {
  RecordRouting("Score", context);
  ++score_calls_;
  const int64_t active = ++score_active_;
  int64_t peak = score_peak_;
  while (active > peak && !score_peak_.compare_exchange_weak(peak, active)) {
  }
  const int64_t i = request->sequences_size() > 0 && request->sequences(0).tokens_size() > 0
                        ? request->sequences(0).tokens(0)
                        : -1;
  std::this_thread::sleep_for(std::chrono::milliseconds((7 * i) % 5));
  --score_active_;
  if (i == fail_index_) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "score " + std::to_string(i) + " rejected");
  }
  response->add_results()->set_position(i);
  return grpc::Status::OK;
}

grpc::Status FakeAarenService::CreateSession(grpc::ServerContext* context,
                                             const v1::CreateSessionRequest* request,
                                             v1::Session* response) {
  RecordRouting("CreateSession", context);
  if (request->model() == "none") {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "model 'none' is not served");
  }
  const std::string id =
      request->session_id().empty() ? "made-" + std::to_string(created_++) : request->session_id();
  *response = MakeSession(id, request->prefix().tokens_size());
  return grpc::Status::OK;
}

grpc::Status FakeAarenService::Append(grpc::ServerContext* context,
                                      const v1::AppendRequest* request,
                                      v1::AppendResponse* response) {
  RecordRouting("Append", context);
  const std::string& id = request->session_id();
  if (id.rfind("status:", 0) == 0) {
    const int code = std::stoi(id.substr(7));
    return grpc::Status(static_cast<grpc::StatusCode>(code),
                        "append status " + std::to_string(code));
  }
  if (id == "slow") {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (!context->IsCancelled() && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  response->set_session_id(id);
  response->set_position(request->expected_position() + request->input().tokens_size());
  response->set_output_dim(1);
  return grpc::Status::OK;
}

grpc::Status FakeAarenService::GetSession(grpc::ServerContext* context,
                                          const v1::GetSessionRequest* request,
                                          v1::Session* response) {
  RecordRouting("GetSession", context);
  if (request->session_id() != "s1") {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        "session '" + request->session_id() + "' not found");
  }
  *response = MakeSession("s1", 5);
  return grpc::Status::OK;
}

grpc::Status FakeAarenService::DeleteSession(grpc::ServerContext* context,
                                             const v1::DeleteSessionRequest* request,
                                             v1::DeleteSessionResponse*) {
  RecordRouting("DeleteSession", context);
  if (request->session_id() == "missing") {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "session 'missing' not found");
  }
  std::lock_guard<std::mutex> lock(mu_);
  deleted_.push_back(request->session_id());
  return grpc::Status::OK;
}

grpc::Status FakeAarenService::ForkSession(grpc::ServerContext* context,
                                           const v1::ForkSessionRequest* request,
                                           v1::Session* response) {
  RecordRouting("ForkSession", context);
  *response = MakeSession(request->new_session_id().empty() ? request->session_id() + "-fork"
                                                            : request->new_session_id(),
                          5);
  return grpc::Status::OK;
}

grpc::Status FakeAarenService::ExportSession(grpc::ServerContext* context,
                                             const v1::ExportSessionRequest* request,
                                             v1::ExportSessionResponse* response) {
  RecordRouting("ExportSession", context);
  v1::SessionSnapshot* snapshot = response->mutable_snapshot();
  snapshot->set_format_version(1);
  snapshot->set_model("demo-lm");
  snapshot->set_position(5);
  snapshot->set_state(std::string(8, '\x01'));
  snapshot->set_config_hash(request->session_id());
  return grpc::Status::OK;
}

grpc::Status FakeAarenService::ImportSession(grpc::ServerContext* context,
                                             const v1::ImportSessionRequest* request,
                                             v1::Session* response) {
  RecordRouting("ImportSession", context);
  *response = MakeSession(request->session_id().empty() ? "imported" : request->session_id(),
                          request->snapshot().position());
  return grpc::Status::OK;
}

grpc::Status FakeAarenService::Generate(grpc::ServerContext* context,
                                        const v1::GenerateRequest* request,
                                        grpc::ServerWriter<v1::GenerateResponse>* writer) {
  RecordRouting("Generate", context);
  for (uint32_t i = 0; i < request->max_tokens(); ++i) {
    if (request->session_id() == "fail-after-3" && i == 3) {
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "generation stopped");
    }
    v1::GenerateResponse token;
    token.set_token(static_cast<int32_t>(i % 43));
    token.set_position(i + 1);
    token.set_logprob(-static_cast<float>(i));
    if (!writer->Write(token)) return grpc::Status::OK;
  }
  return grpc::Status::OK;
}

grpc::Status FakeAarenService::Stream(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::StreamResponse, v1::StreamRequest>* stream) {
  RecordRouting("Stream", context);
  v1::StreamRequest request;
  if (!stream->Read(&request)) return grpc::Status::OK;
  if (!request.has_open()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the first message must be an open");
  }
  const v1::OpenSession& open = request.open();
  if (open.session_id() == "missing" && !open.create_if_missing()) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "session 'missing' not found");
  }
  const std::string id = open.session_id().empty() ? "stream-1" : open.session_id();
  int64_t position = 0;
  v1::StreamResponse reply;
  *reply.mutable_session() = MakeSession(id, position);
  reply.mutable_session()->set_model(open.model());
  if (!stream->Write(reply)) return grpc::Status::OK;
  while (stream->Read(&request)) {
    if (!request.has_append()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "a second open");
    }
    ++stream_appends_;
    const v1::AppendRequest& append = request.append();
    reply.Clear();
    for (int32_t token : append.input().tokens()) {
      if (token < 0) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            "negative token at position " + std::to_string(position));
      }
      if (token == kEndStreamToken) return grpc::Status::OK;
      if (token == kWrongReplyToken) *reply.mutable_session() = MakeSession(id, position);
      ++position;
      if (!reply.has_session()) reply.mutable_append()->add_outputs(static_cast<float>(token));
    }
    if (!reply.has_session()) {
      reply.mutable_append()->set_session_id(id);
      reply.mutable_append()->set_position(position);
      reply.mutable_append()->set_output_dim(1);
    }
    if (!stream->Write(reply)) return grpc::Status::OK;
  }
  return grpc::Status::OK;
}

void FakeAarenService::RecordRouting(const std::string& method,
                                     const grpc::ServerContext* context) {
  std::string header;
  const auto [first, last] = context->client_metadata().equal_range("aaren-session-id");
  for (auto it = first; it != last; ++it) {
    if (!header.empty()) header += ",";
    header.append(it->second.data(), it->second.size());
  }
  if (first == last) header = kNoHeader;
  std::lock_guard<std::mutex> lock(mu_);
  routing_.emplace_back(method, std::move(header));
}

std::vector<std::pair<std::string, std::string>> FakeAarenService::routing_headers() const {
  std::lock_guard<std::mutex> lock(mu_);
  return routing_;
}

std::vector<std::string> FakeAarenService::RoutingHeaders(const std::string& method) const {
  std::vector<std::string> headers;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [m, header] : routing_) {
    if (m == method) headers.push_back(header);
  }
  return headers;
}

void FakeAarenService::ClearRoutingHeaders() {
  std::lock_guard<std::mutex> lock(mu_);
  routing_.clear();
}

std::vector<std::string> FakeAarenService::deleted() const {
  std::lock_guard<std::mutex> lock(mu_);
  return deleted_;
}

FakeServer::FakeServer() {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
  builder.RegisterService(&service_);
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port_ == 0) ADD_FAILURE() << "FakeServer: could not start";
}

FakeServer::~FakeServer() {
  if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
}

std::shared_ptr<grpc::Channel> FakeServer::InProcessChannel() {
  return server_->InProcessChannel(grpc::ChannelArguments());
}

}  // namespace aaren::testing
