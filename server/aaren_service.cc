// SPDX-License-Identifier: Apache-2.0
#include "server/aaren_service.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/generate_reactor.h"
#include "server/proto_convert.h"
#include "server/stream_reactor.h"
#include "server/unary_call.h"

namespace aaren {

absl::StatusOr<Engine::AppendParams> AppendParamsFromProto(const v1::AppendRequest& request,
                                                           absl::string_view field_prefix,
                                                           const McaOptions& default_mca) {
  Engine::AppendParams params;
  auto mode = FromProto(request.output_mode(), absl::StrCat(field_prefix, "output_mode"));
  if (!mode.ok()) return mode.status();
  auto mca = FromProto(request.mca(), absl::StrCat(field_prefix, "mca"), default_mca);
  if (!mca.ok()) return mca.status();
  params.mode = *mode;
  params.mca = *mca;
  params.session_id = request.session_id();
  params.input = FromProto(request.input());
  if (request.has_expected_position()) params.expected_position = request.expected_position();
  return params;
}

void AppendResponseToProto(const std::string& session_id, AppendResult result,
                           v1::AppendResponse* out) {
  SetFloats(result.outputs, out->mutable_outputs());
  out->set_output_dim(static_cast<uint32_t>(result.output_dim));
  out->set_position(result.position);
  out->set_session_id(session_id);
  out->set_replayed(result.replayed);
  ToProto(result.mca, out->mutable_mca_stats());
}

grpc::ServerUnaryReactor* AarenService::ListModels(grpc::CallbackServerContext* ctx,
                                                   const v1::ListModelsRequest* request,
                                                   v1::ListModelsResponse* response) {
  auto* call = new UnaryCall(metrics_, "ListModels");
  for (const ServedModel* m : engine_->models().models()) ToProto(*m, response->add_models());
  call->Done(absl::OkStatus());
  return call;
}

grpc::ServerUnaryReactor* AarenService::Score(grpc::CallbackServerContext* ctx,
                                              const v1::ScoreRequest* request,
                                              v1::ScoreResponse* response) {
  auto* call = new UnaryCall(metrics_, "Score");
  auto mode = FromProto(request->output_mode(), "output_mode");
  absl::StatusOr<McaOptions> mca =
      mode.ok() ? FromProto(request->mca(), "mca", default_mca_) : mode.status();
  if (!mca.ok()) {
    call->Done(mca.status());
    return call;
  }
  Engine::ScoreParams params;
  params.model = request->model();
  params.mode = *mode;
  params.mca = *mca;
  params.prefill = request->prefill();
  params.idle_ttl_s = request->idle_ttl_seconds();
  params.cancel = call->cancel();
  params.sequences.reserve(static_cast<size_t>(request->sequences_size()));
  for (const v1::Sequence& s : request->sequences()) params.sequences.push_back(FromProto(s));
  engine_->Score(std::move(params),
                 [call, response](absl::StatusOr<std::vector<SequenceOutput>> results) {
                   if (results.ok()) {
                     for (const SequenceOutput& r : *results) {
                       v1::SequenceResult* out = response->add_results();
                       SetFloats(r.outputs, out->mutable_outputs());
                       out->set_output_dim(static_cast<uint32_t>(r.output_dim));
                       out->set_session_id(r.session_id);
                       out->set_position(r.position);
                       ToProto(r.mca, out->mutable_mca_stats());
                     }
                   }
                   call->Done(results.status());
                 });
  return call;
}

grpc::ServerUnaryReactor* AarenService::CreateSession(grpc::CallbackServerContext* ctx,
                                                      const v1::CreateSessionRequest* request,
                                                      v1::Session* response) {
  auto* call = new UnaryCall(metrics_, "CreateSession");
  auto mca = FromProto(request->mca(), "mca", default_mca_);
  if (!mca.ok()) {
    call->Done(mca.status());
    return call;
  }
  Engine::CreateParams params;
  params.mca = *mca;
  params.model = request->model();
  params.session_id = request->session_id();
  params.prefix = FromProto(request->prefix());
  params.idle_ttl_s = request->idle_ttl_seconds();
  params.cancel = call->cancel();
  engine_->CreateSession(std::move(params), [call, response](absl::StatusOr<SessionInfo> info) {
    if (info.ok()) ToProto(*info, response);
    call->Done(info.status());
  });
  return call;
}

grpc::ServerUnaryReactor* AarenService::Append(grpc::CallbackServerContext* ctx,
                                               const v1::AppendRequest* request,
                                               v1::AppendResponse* response) {
  auto* call = new UnaryCall(metrics_, "Append");
  auto params = AppendParamsFromProto(*request, "", default_mca_);
  if (!params.ok()) {
    call->Done(params.status());
    return call;
  }
  params->cancel = call->cancel();
  engine_->Append(std::move(*params),
                  [call, response, id = request->session_id()](absl::StatusOr<AppendResult> r) {
                    if (r.ok()) AppendResponseToProto(id, std::move(*r), response);
                    call->Done(r.status());
                  });
  return call;
}

grpc::ServerBidiReactor<v1::StreamRequest, v1::StreamResponse>* AarenService::Stream(
    grpc::CallbackServerContext* ctx) {
  return new StreamReactor(engine_, metrics_, default_mca_);
}

grpc::ServerWriteReactor<v1::GenerateResponse>* AarenService::Generate(
    grpc::CallbackServerContext* ctx, const v1::GenerateRequest* request) {
  return new GenerateReactor(engine_, metrics_, *request);
}

grpc::ServerUnaryReactor* AarenService::GetSession(grpc::CallbackServerContext* ctx,
                                                   const v1::GetSessionRequest* request,
                                                   v1::Session* response) {
  auto* call = new UnaryCall(metrics_, "GetSession");
  auto info = engine_->GetSession(request->session_id());
  if (info.ok()) ToProto(*info, response);
  call->Done(info.status());
  return call;
}

grpc::ServerUnaryReactor* AarenService::DeleteSession(grpc::CallbackServerContext* ctx,
                                                      const v1::DeleteSessionRequest* request,
                                                      v1::DeleteSessionResponse* response) {
  auto* call = new UnaryCall(metrics_, "DeleteSession");
  engine_->DeleteSession(request->session_id(), [call](absl::Status st) { call->Done(st); });
  return call;
}

grpc::ServerUnaryReactor* AarenService::ForkSession(grpc::CallbackServerContext* ctx,
                                                    const v1::ForkSessionRequest* request,
                                                    v1::Session* response) {
  auto* call = new UnaryCall(metrics_, "ForkSession");
  engine_->ForkSession(request->session_id(), request->new_session_id(),
                       request->idle_ttl_seconds(),
                       [call, response](absl::StatusOr<SessionInfo> info) {
                         if (info.ok()) ToProto(*info, response);
                         call->Done(info.status());
                       });
  return call;
}

grpc::ServerUnaryReactor* AarenService::ExportSession(grpc::CallbackServerContext* ctx,
                                                      const v1::ExportSessionRequest* request,
                                                      v1::ExportSessionResponse* response) {
  auto* call = new UnaryCall(metrics_, "ExportSession");
  engine_->ExportSession(request->session_id(),
                         [call, response](absl::StatusOr<SessionSnapshot> snap) {
                           if (snap.ok()) ToProto(*snap, response->mutable_snapshot());
                           call->Done(snap.status());
                         });
  return call;
}

grpc::ServerUnaryReactor* AarenService::ImportSession(grpc::CallbackServerContext* ctx,
                                                      const v1::ImportSessionRequest* request,
                                                      v1::Session* response) {
  auto* call = new UnaryCall(metrics_, "ImportSession");
  absl::StatusOr<SessionInfo> info = [&]() -> absl::StatusOr<SessionInfo> {
    if (!request->has_snapshot()) {
      return absl::InvalidArgumentError("snapshot: missing");
    }
    auto snap = FromProto(request->snapshot());
    if (!snap.ok()) return snap.status();
    return engine_->ImportSession(*snap, request->session_id(), request->idle_ttl_seconds());
  }();
  if (info.ok()) ToProto(*info, response);
  call->Done(info.status());
  return call;
}

}  // namespace aaren
