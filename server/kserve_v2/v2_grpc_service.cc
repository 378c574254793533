// SPDX-License-Identifier: Apache-2.0
#include "server/kserve_v2/v2_grpc_service.h"

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/kserve_v2/v2_stream_reactor.h"

namespace aaren::v2 {
namespace {

using namespace inference;  // NOLINT: the protocol's messages

int64_t SteadyNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

template <typename Request, typename Response, typename Handler>
grpc::ServerUnaryReactor* V2GrpcService::Unary(const char* rpc, Ctx* ctx, const Raw* request,
                                               Raw* response, bool open, Handler handler) {
  auto* call = new Call<Request, Response>(*v2_->env, rpc, ctx, response);
  if (absl::Status st = call->Begin(*request, /*authenticate=*/!open); !st.ok()) {
    call->Done(st);
    return call;
  }
  handler(call);
  return call;
}

template <typename Request, typename Response>
grpc::ServerUnaryReactor* V2GrpcService::Unimplemented(const char* rpc, Ctx* ctx,
                                                       const Raw* request, Raw* response) {
  return Unary<Request, Response>(rpc, ctx, request, response, false, [rpc](auto* call) {
    call->Done(absl::UnimplementedError(absl::StrCat(
        rpc,
        ": not offered by Aaren Serve (models are loaded at start-up; tensors travel in the "
        "request; see the README, \"KServe v2 / Triton\")")));
  });
}

grpc::ServerUnaryReactor* V2GrpcService::ServerLive(Ctx* ctx, const Raw* req, Raw* resp) {
  return Unary<ServerLiveRequest, ServerLiveResponse>("ServerLive", ctx, req, resp, true,
                                                      [](auto* call) {
                                                        call->response.set_live(true);
                                                        call->Done(absl::OkStatus());
                                                      });
}

grpc::ServerUnaryReactor* V2GrpcService::ServerReady(Ctx* ctx, const Raw* req, Raw* resp) {
  return Unary<ServerReadyRequest, ServerReadyResponse>("ServerReady", ctx, req, resp, true,
                                                        [this](auto* call) {
                                                          call->response.set_ready(v2_->IsReady());
                                                          call->Done(absl::OkStatus());
                                                        });
}

grpc::ServerUnaryReactor* V2GrpcService::ModelReady(Ctx* ctx, const Raw* req, Raw* resp) {
  return Unary<ModelReadyRequest, ModelReadyResponse>(
      "ModelReady", ctx, req, resp, true, [this](auto* call) {
        // A model this server does not have is not ready (OK, ready=false), as Triton answers.
        auto m =
            FindModel(v2_->env->engine->models(), call->request.name(), call->request.version());
        call->response.set_ready(m.ok() && v2_->IsReady());
        call->Done(absl::OkStatus());
      });
}

grpc::ServerUnaryReactor* V2GrpcService::ServerMetadata(Ctx* ctx, const Raw* req, Raw* resp) {
  return Unary<ServerMetadataRequest, ServerMetadataResponse>(
      "ServerMetadata", ctx, req, resp, false, [this](auto* call) {
        v2::ServerMetadata(v2_->server_version, &call->response);
        call->Done(absl::OkStatus());
      });
}

grpc::ServerUnaryReactor* V2GrpcService::ModelMetadata(Ctx* ctx, const Raw* req, Raw* resp) {
  return Unary<ModelMetadataRequest, ModelMetadataResponse>(
      "ModelMetadata", ctx, req, resp, false, [this](auto* call) {
        auto m =
            FindModel(v2_->env->engine->models(), call->request.name(), call->request.version());
        if (!m.ok()) return call->Done(m.status());
        v2::ModelMetadata(**m, &call->response);
        call->Done(absl::OkStatus());
      });
}

grpc::ServerUnaryReactor* V2GrpcService::ModelConfig(Ctx* ctx, const Raw* req, Raw* resp) {
  return Unary<ModelConfigRequest, ModelConfigResponse>(
      "ModelConfig", ctx, req, resp, false, [this](auto* call) {
        auto m =
            FindModel(v2_->env->engine->models(), call->request.name(), call->request.version());
        if (!m.ok()) return call->Done(m.status());
        v2::ModelConfig(**m, v2_->idle_ttl_s, call->response.mutable_config());
        call->Done(absl::OkStatus());
      });
}

grpc::ServerUnaryReactor* V2GrpcService::ModelStatistics(Ctx* ctx, const Raw* req, Raw* resp) {
  return Unary<ModelStatisticsRequest, ModelStatisticsResponse>(
      "ModelStatistics", ctx, req, resp, false, [this](auto* call) {
        call->Done(v2_->stats->Fill(v2_->env->engine->models(), call->request.name(),
                                    call->request.version(), &call->response));
      });
}

grpc::ServerUnaryReactor* V2GrpcService::RepositoryIndex(Ctx* ctx, const Raw* req, Raw* resp) {
  return Unary<RepositoryIndexRequest, RepositoryIndexResponse>(
      "RepositoryIndex", ctx, req, resp, false, [this](auto* call) {
        v2::RepositoryIndex(v2_->env->engine->models(), &call->response);
        call->Done(absl::OkStatus());
      });
}

grpc::ServerUnaryReactor* V2GrpcService::ModelInfer(Ctx* ctx, const Raw* req, Raw* resp) {
  return Unary<ModelInferRequest, ModelInferResponse>("ModelInfer", ctx, req, resp, false,
                                                      [this](auto* call) { DoModelInfer(call); });
}

void V2GrpcService::DoModelInfer(Call<ModelInferRequest, ModelInferResponse>* call) {
  const int64_t start_ns = SteadyNs();
  V2Statistics* stats = v2_->stats;
  std::string model_name = call->request.model_name();
  auto parsed = ParseInfer(call->request, v2_->env->engine->models(), v2_->limits);
  if (!parsed.ok()) {
    stats->RecordRequest(model_name, false, SteadyNs() - start_ns);
    return call->Done(parsed.status());
  }
  Engine* engine = v2_->env->engine;
  if (!parsed->sequence_id.empty()) {
    const SessionRef ref(call->tenant(), parsed->sequence_id);
    call->OnCancelled([engine, ref] { engine->SweepCancelled(ref); });
  }
  const ServedModel* model = parsed->model;
  std::string request_id = parsed->request_id;
  RunInfer(engine, call->tenant(), *std::move(parsed), call->cancel(),
           [call, stats, model, request_id = std::move(request_id),
            start_ns](absl::StatusOr<InferResult> r) mutable {
             stats->RecordRequest(model->name, r.ok(), SteadyNs() - start_ns);
             if (r.ok()) ToInferResponse(*model, request_id, *std::move(r), &call->response);
             call->Done(r.status());
           });
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* V2GrpcService::ModelStreamInfer(
    Ctx* ctx) {
  return new V2StreamReactor(*v2_, ctx);
}

#define AAREN_V2_UNIMPLEMENTED(Method)                                                   \
  grpc::ServerUnaryReactor* V2GrpcService::Method(Ctx* ctx, const Raw* req, Raw* resp) { \
    return Unimplemented<Method##Request, Method##Response>(#Method, ctx, req, resp);    \
  }
AAREN_V2_UNIMPLEMENTED(RepositoryModelLoad)
AAREN_V2_UNIMPLEMENTED(RepositoryModelUnload)
AAREN_V2_UNIMPLEMENTED(SystemSharedMemoryStatus)
AAREN_V2_UNIMPLEMENTED(SystemSharedMemoryRegister)
AAREN_V2_UNIMPLEMENTED(SystemSharedMemoryUnregister)
AAREN_V2_UNIMPLEMENTED(CudaSharedMemoryStatus)
AAREN_V2_UNIMPLEMENTED(CudaSharedMemoryRegister)
AAREN_V2_UNIMPLEMENTED(CudaSharedMemoryUnregister)
AAREN_V2_UNIMPLEMENTED(TraceSetting)
AAREN_V2_UNIMPLEMENTED(LogSettings)
#undef AAREN_V2_UNIMPLEMENTED

}  // namespace aaren::v2
