// SPDX-License-Identifier: Apache-2.0
// AarenService: the aaren.v1.Aaren gRPC service (callback API) over an Engine. Handlers check
// what only the wire can get wrong (enum values, MCA), convert to engine types and hand the
// work to the engine; replies are sent from the engine's completion callbacks. No handler
// blocks on model work. Requests that do not enable MCA get the service's default MCA options
// (--mca_alpha, --mca_seed; off unless the operator set them).
#ifndef AAREN_SERVER_AAREN_SERVICE_H_
#define AAREN_SERVER_AAREN_SERVICE_H_

#include "aaren/v1/aaren.grpc.pb.h"
#include "engine/engine.h"
#include "server/metrics/server_metrics.h"

namespace aaren {

class AarenService final : public v1::Aaren::CallbackService {
 public:
  // `engine` and `metrics` (may be null) must outlive the service. `default_mca` applies to
  // requests whose mca.enabled is false (Score, CreateSession prefixes, Append, Stream appends).
  AarenService(Engine* engine, ServerMetrics* metrics, McaOptions default_mca = {})
      : engine_(engine), metrics_(metrics), default_mca_(default_mca) {}

  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* ctx,
                                       const v1::ListModelsRequest* request,
                                       v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* Score(grpc::CallbackServerContext* ctx, const v1::ScoreRequest* request,
                                  v1::ScoreResponse* response) override;
  grpc::ServerUnaryReactor* CreateSession(grpc::CallbackServerContext* ctx,
                                          const v1::CreateSessionRequest* request,
                                          v1::Session* response) override;
  grpc::ServerUnaryReactor* Append(grpc::CallbackServerContext* ctx,
                                   const v1::AppendRequest* request,
                                   v1::AppendResponse* response) override;
  grpc::ServerBidiReactor<v1::StreamRequest, v1::StreamResponse>* Stream(
      grpc::CallbackServerContext* ctx) override;
  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* ctx, const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* GetSession(grpc::CallbackServerContext* ctx,
                                       const v1::GetSessionRequest* request,
                                       v1::Session* response) override;
  grpc::ServerUnaryReactor* DeleteSession(grpc::CallbackServerContext* ctx,
                                          const v1::DeleteSessionRequest* request,
                                          v1::DeleteSessionResponse* response) override;
  grpc::ServerUnaryReactor* ForkSession(grpc::CallbackServerContext* ctx,
                                        const v1::ForkSessionRequest* request,
                                        v1::Session* response) override;
  grpc::ServerUnaryReactor* ExportSession(grpc::CallbackServerContext* ctx,
                                          const v1::ExportSessionRequest* request,
                                          v1::ExportSessionResponse* response) override;
  grpc::ServerUnaryReactor* ImportSession(grpc::CallbackServerContext* ctx,
                                          const v1::ImportSessionRequest* request,
                                          v1::Session* response) override;

 private:
  Engine* engine_;
  ServerMetrics* metrics_;
  McaOptions default_mca_;
};

// Builds the engine's append parameters from a request (also used by Stream); `default_mca`
// when the request does not enable MCA.
absl::StatusOr<Engine::AppendParams> AppendParamsFromProto(const v1::AppendRequest& request,
                                                           absl::string_view field_prefix,
                                                           const McaOptions& default_mca);
// Fills an AppendResponse from the engine's result.
void AppendResponseToProto(const std::string& session_id, AppendResult result,
                           v1::AppendResponse* out);

}  // namespace aaren

#endif  // AAREN_SERVER_AAREN_SERVICE_H_
