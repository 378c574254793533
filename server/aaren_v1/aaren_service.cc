// SPDX-License-Identifier: Apache-2.0
#include "server/aaren_v1/aaren_service.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/aaren_v1/generate_reactor.h"
#include "server/aaren_v1/proto_convert.h"
#include "server/aaren_v1/stream_reactor.h"

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

template <typename Request, typename Response>
grpc::ServerUnaryReactor* AarenService::Unary(
    const char* rpc, grpc::CallbackServerContext* ctx, const Raw* request, Raw* response,
    void (AarenService::*handler)(Call<Request, Response>*)) {
  auto* call = new Call<Request, Response>(*env_, rpc, ctx, response);
  if (absl::Status st = call->Begin(*request); !st.ok()) {
    call->Done(st);
    return call;
  }
  (this->*handler)(call);
  return call;
}

// ---- raw entry points ----

grpc::ServerUnaryReactor* AarenService::ListModels(grpc::CallbackServerContext* ctx,
                                                   const Raw* request, Raw* response) {
  return Unary("ListModels", ctx, request, response, &AarenService::DoListModels);
}
grpc::ServerUnaryReactor* AarenService::Score(grpc::CallbackServerContext* ctx, const Raw* request,
                                              Raw* response) {
  return Unary("Score", ctx, request, response, &AarenService::DoScore);
}
grpc::ServerUnaryReactor* AarenService::CreateSession(grpc::CallbackServerContext* ctx,
                                                      const Raw* request, Raw* response) {
  return Unary("CreateSession", ctx, request, response, &AarenService::DoCreateSession);
}
grpc::ServerUnaryReactor* AarenService::Append(grpc::CallbackServerContext* ctx, const Raw* request,
                                               Raw* response) {
  return Unary("Append", ctx, request, response, &AarenService::DoAppend);
}
grpc::ServerUnaryReactor* AarenService::GetSession(grpc::CallbackServerContext* ctx,
                                                   const Raw* request, Raw* response) {
  return Unary("GetSession", ctx, request, response, &AarenService::DoGetSession);
}
grpc::ServerUnaryReactor* AarenService::DeleteSession(grpc::CallbackServerContext* ctx,
                                                      const Raw* request, Raw* response) {
  return Unary("DeleteSession", ctx, request, response, &AarenService::DoDeleteSession);
}
grpc::ServerUnaryReactor* AarenService::ForkSession(grpc::CallbackServerContext* ctx,
                                                    const Raw* request, Raw* response) {
  return Unary("ForkSession", ctx, request, response, &AarenService::DoForkSession);
}
grpc::ServerUnaryReactor* AarenService::ExportSession(grpc::CallbackServerContext* ctx,
                                                      const Raw* request, Raw* response) {
  return Unary("ExportSession", ctx, request, response, &AarenService::DoExportSession);
}
grpc::ServerUnaryReactor* AarenService::ImportSession(grpc::CallbackServerContext* ctx,
                                                      const Raw* request, Raw* response) {
  return Unary("ImportSession", ctx, request, response, &AarenService::DoImportSession);
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* AarenService::Stream(
    grpc::CallbackServerContext* ctx) {
  return new StreamReactor(*env_, ctx);
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* AarenService::Generate(grpc::CallbackServerContext* ctx,
                                                                   const Raw* request) {
  return new GenerateReactor(*env_, ctx, *request);
}

// ---- handlers ----

void AarenService::DoListModels(Call<v1::ListModelsRequest, v1::ListModelsResponse>* call) {
  for (const ServedModel* m : env_->engine->models().models()) {
    ToProto(*m, call->response.add_models());
  }
  call->Done(absl::OkStatus());
}

void AarenService::DoScore(Call<v1::ScoreRequest, v1::ScoreResponse>* call) {
  const v1::ScoreRequest& request = call->request;
  auto mode = FromProto(request.output_mode(), "output_mode");
  absl::StatusOr<McaOptions> mca =
      mode.ok() ? FromProto(request.mca(), "mca", env_->default_mca) : mode.status();
  if (!mca.ok()) return call->Done(mca.status());
  Engine::ScoreParams params;
  params.tenant = call->tenant();
  params.model = request.model();
  params.mode = *mode;
  params.mca = *mca;
  params.prefill = request.prefill();
  params.idle_ttl_s = request.idle_ttl_seconds();
  params.cancel = call->cancel();
  params.sequences.reserve(static_cast<size_t>(request.sequences_size()));
  for (const v1::Sequence& s : request.sequences()) params.sequences.push_back(FromProto(s));
  env_->engine->Score(std::move(params),
                      [call](absl::StatusOr<std::vector<SequenceOutput>> results) {
                        if (results.ok()) {
                          for (const SequenceOutput& r : *results) {
                            v1::SequenceResult* out = call->response.add_results();
                            SetFloats(r.outputs, out->mutable_outputs());
                            out->set_output_dim(static_cast<uint32_t>(r.output_dim));
                            out->set_session_id(r.session_id);
                            out->set_position(r.position);
                            ToProto(r.mca, out->mutable_mca_stats());
                          }
                        }
                        call->Done(results.status());
                      });
}

void AarenService::DoCreateSession(Call<v1::CreateSessionRequest, v1::Session>* call) {
  const v1::CreateSessionRequest& request = call->request;
  auto mca = FromProto(request.mca(), "mca", env_->default_mca);
  if (!mca.ok()) return call->Done(mca.status());
  Engine::CreateParams params;
  params.tenant = call->tenant();
  params.mca = *mca;
  params.model = request.model();
  params.session_id = request.session_id();
  params.prefix = FromProto(request.prefix());
  params.idle_ttl_s = request.idle_ttl_seconds();
  params.cancel = call->cancel();
  env_->engine->CreateSession(std::move(params), [call](absl::StatusOr<SessionInfo> info) {
    if (info.ok()) ToProto(*info, &call->response);
    call->Done(info.status());
  });
}

void AarenService::DoAppend(Call<v1::AppendRequest, v1::AppendResponse>* call) {
  auto params = AppendParamsFromProto(call->request, "", env_->default_mca);
  if (!params.ok()) return call->Done(params.status());
  params->tenant = call->tenant();
  params->cancel = call->cancel();
  const SessionRef ref(call->tenant(), call->request.session_id());
  Engine* engine = env_->engine;
  call->OnCancelled([engine, ref] { engine->SweepCancelled(ref); });
  engine->Append(std::move(*params), [call](absl::StatusOr<AppendResult> r) {
    if (r.ok()) AppendResponseToProto(call->request.session_id(), std::move(*r), &call->response);
    call->Done(r.status());
  });
}

void AarenService::DoGetSession(Call<v1::GetSessionRequest, v1::Session>* call) {
  auto info = env_->engine->GetSession(SessionRef(call->tenant(), call->request.session_id()));
  if (info.ok()) ToProto(*info, &call->response);
  call->Done(info.status());
}

void AarenService::DoDeleteSession(
    Call<v1::DeleteSessionRequest, v1::DeleteSessionResponse>* call) {
  const SessionRef ref(call->tenant(), call->request.session_id());
  Engine* engine = env_->engine;
  call->OnCancelled([engine, ref] { engine->SweepCancelled(ref); });
  engine->DeleteSession(
      ref, [call](absl::Status st) { call->Done(st); }, call->cancel());
}

void AarenService::DoForkSession(Call<v1::ForkSessionRequest, v1::Session>* call) {
  const SessionRef ref(call->tenant(), call->request.session_id());
  Engine* engine = env_->engine;
  call->OnCancelled([engine, ref] { engine->SweepCancelled(ref); });
  engine->ForkSession(
      ref, call->request.new_session_id(), call->request.idle_ttl_seconds(),
      [call](absl::StatusOr<SessionInfo> info) {
        if (info.ok()) ToProto(*info, &call->response);
        call->Done(info.status());
      },
      call->cancel());
}

void AarenService::DoExportSession(
    Call<v1::ExportSessionRequest, v1::ExportSessionResponse>* call) {
  const SessionRef ref(call->tenant(), call->request.session_id());
  Engine* engine = env_->engine;
  call->OnCancelled([engine, ref] { engine->SweepCancelled(ref); });
  engine->ExportSession(
      ref,
      [call](absl::StatusOr<SessionSnapshot> snap) {
        if (snap.ok()) ToProto(*snap, call->response.mutable_snapshot());
        call->Done(snap.status());
      },
      call->cancel());
}

void AarenService::DoImportSession(Call<v1::ImportSessionRequest, v1::Session>* call) {
  const v1::ImportSessionRequest& request = call->request;
  absl::StatusOr<SessionInfo> info = [&]() -> absl::StatusOr<SessionInfo> {
    if (!request.has_snapshot()) return absl::InvalidArgumentError("snapshot: missing");
    auto snap = FromProto(request.snapshot());
    if (!snap.ok()) return snap.status();
    return env_->engine->ImportSession(*snap, SessionRef(call->tenant(), request.session_id()),
                                       request.idle_ttl_seconds());
  }();
  if (info.ok()) ToProto(*info, &call->response);
  call->Done(info.status());
}

}  // namespace aaren
