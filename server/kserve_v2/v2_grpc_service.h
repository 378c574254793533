// SPDX-License-Identifier: Apache-2.0
// V2GrpcService: inference.GRPCInferenceService (the KServe v2 / Triton gRPC protocol) over the
// engine, on the same port as aaren.v1. Like AarenService every method is registered raw, so
// that a message that does not parse gets INVALID_ARGUMENT naming its type and every call is
// counted (rpc label = the method name) and access-logged. ServerLive, ServerReady and
// ModelReady are open, like the gRPC health service (probes); every other method needs a token
// when authentication is on, and inference acts for the token's tenant exactly as aaren.v1
// calls do. Repository load/unload, shared memory, tracing and log settings answer
// UNIMPLEMENTED saying what this server offers instead.
#ifndef AAREN_SERVER_KSERVE_V2_V2_GRPC_SERVICE_H_
#define AAREN_SERVER_KSERVE_V2_V2_GRPC_SERVICE_H_

#include <grpcpp/support/byte_buffer.h>

#include <atomic>
#include <string>

#include "inference/grpc_service.grpc.pb.h"
#include "server/call_env.h"
#include "server/kserve_v2/v2_infer.h"
#include "server/kserve_v2/v2_model_info.h"
#include "server/unary_call.h"

namespace aaren::v2 {

// What both v2 transports share besides the CallEnv. Everything must outlive the transports.
struct V2Env {
  const CallEnv* env = nullptr;
  V2Statistics* stats = nullptr;
  std::string server_version;
  uint32_t idle_ttl_s = 0;  // the sessions' default (--idle_ttl_seconds)
  ParseLimits limits;
  // REST: the most elements a JSON request may have (JsonElementLimit, v2_json.h).
  int64_t json_elements = int64_t{1} << 22;
  const std::atomic<bool>* ready = nullptr;  // false once the server drains
  bool IsReady() const { return ready == nullptr || ready->load(std::memory_order_relaxed); }
};

using G = inference::GRPCInferenceService;
using RawV2Service = G::WithRawCallbackMethod_ServerLive<G::WithRawCallbackMethod_ServerReady<
    G::WithRawCallbackMethod_ModelReady<G::WithRawCallbackMethod_ServerMetadata<
        G::WithRawCallbackMethod_ModelMetadata<G::WithRawCallbackMethod_ModelInfer<
            G::WithRawCallbackMethod_ModelStreamInfer<G::WithRawCallbackMethod_ModelConfig<
                G::WithRawCallbackMethod_ModelStatistics<G::WithRawCallbackMethod_RepositoryIndex<
                    G::WithRawCallbackMethod_RepositoryModelLoad<
                        G::WithRawCallbackMethod_RepositoryModelUnload<
                            G::WithRawCallbackMethod_SystemSharedMemoryStatus<
                                G::WithRawCallbackMethod_SystemSharedMemoryRegister<
                                    G::WithRawCallbackMethod_SystemSharedMemoryUnregister<
                                        G::WithRawCallbackMethod_CudaSharedMemoryStatus<
                                            G::WithRawCallbackMethod_CudaSharedMemoryRegister<
                                                G::WithRawCallbackMethod_CudaSharedMemoryUnregister<
                                                    G::WithRawCallbackMethod_TraceSetting<
                                                        G::WithRawCallbackMethod_LogSettings<
                                                            G::Service>>>>>>>>>>>>>>>>>>>>;

class V2GrpcService final : public RawV2Service {
 public:
  explicit V2GrpcService(const V2Env* v2) : v2_(v2) {}

  using Raw = grpc::ByteBuffer;
  using Ctx = grpc::CallbackServerContext;
  grpc::ServerUnaryReactor* ServerLive(Ctx* ctx, const Raw* req, Raw* resp) override;
  grpc::ServerUnaryReactor* ServerReady(Ctx* ctx, const Raw* req, Raw* resp) override;
  grpc::ServerUnaryReactor* ModelReady(Ctx* ctx, const Raw* req, Raw* resp) override;
  grpc::ServerUnaryReactor* ServerMetadata(Ctx* ctx, const Raw* req, Raw* resp) override;
  grpc::ServerUnaryReactor* ModelMetadata(Ctx* ctx, const Raw* req, Raw* resp) override;
  grpc::ServerUnaryReactor* ModelInfer(Ctx* ctx, const Raw* req, Raw* resp) override;
  grpc::ServerBidiReactor<Raw, Raw>* ModelStreamInfer(Ctx* ctx) override;
  grpc::ServerUnaryReactor* ModelConfig(Ctx* ctx, const Raw* req, Raw* resp) override;
  grpc::ServerUnaryReactor* ModelStatistics(Ctx* ctx, const Raw* req, Raw* resp) override;
  grpc::ServerUnaryReactor* RepositoryIndex(Ctx* ctx, const Raw* req, Raw* resp) override;
  grpc::ServerUnaryReactor* RepositoryModelLoad(Ctx* ctx, const Raw* req, Raw* resp) override;
  grpc::ServerUnaryReactor* RepositoryModelUnload(Ctx* ctx, const Raw* req, Raw* resp) override;
  grpc::ServerUnaryReactor* SystemSharedMemoryStatus(Ctx* ctx, const Raw* req, Raw* resp) override;
  grpc::ServerUnaryReactor* SystemSharedMemoryRegister(Ctx* ctx, const Raw* req,
                                                       Raw* resp) override;
  grpc::ServerUnaryReactor* SystemSharedMemoryUnregister(Ctx* ctx, const Raw* req,
                                                         Raw* resp) override;
  grpc::ServerUnaryReactor* CudaSharedMemoryStatus(Ctx* ctx, const Raw* req, Raw* resp) override;
  grpc::ServerUnaryReactor* CudaSharedMemoryRegister(Ctx* ctx, const Raw* req, Raw* resp) override;
  grpc::ServerUnaryReactor* CudaSharedMemoryUnregister(Ctx* ctx, const Raw* req,
                                                       Raw* resp) override;
  grpc::ServerUnaryReactor* TraceSetting(Ctx* ctx, const Raw* req, Raw* resp) override;
  grpc::ServerUnaryReactor* LogSettings(Ctx* ctx, const Raw* req, Raw* resp) override;

 private:
  template <typename Request, typename Response>
  using Call = UnaryCall<Request, Response>;

  // Starts a unary call: authenticate (unless `open`), parse, then `handler` (which must Done
  // the call).
  template <typename Request, typename Response, typename Handler>
  grpc::ServerUnaryReactor* Unary(const char* rpc, Ctx* ctx, const Raw* request, Raw* response,
                                  bool open, Handler handler);
  // UNIMPLEMENTED naming the method, after authentication.
  template <typename Request, typename Response>
  grpc::ServerUnaryReactor* Unimplemented(const char* rpc, Ctx* ctx, const Raw* request,
                                          Raw* response);

  void DoModelInfer(Call<inference::ModelInferRequest, inference::ModelInferResponse>* call);

  const V2Env* v2_;
};

}  // namespace aaren::v2

#endif  // AAREN_SERVER_KSERVE_V2_V2_GRPC_SERVICE_H_
