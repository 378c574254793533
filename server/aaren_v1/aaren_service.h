// SPDX-License-Identifier: Apache-2.0
// AarenService: the aaren.v1.Aaren gRPC service (callback API) over an Engine. Every method is
// registered raw (ByteBuffer in and out) so that the server parses requests itself: a broken
// message gets INVALID_ARGUMENT naming its type, counted like any other call, and a Stream frame
// that does not parse ends the stream with that error instead of passing for a half-close.
// Handlers authenticate the caller (CallEnv's Authenticator: every session call acts for the
// token's tenant, whose sessions are its own namespace), check what only the wire can get wrong
// (enum values, MCA), convert to engine types and hand the work to the engine; replies are sent
// from the engine's completion callbacks. No handler blocks on model work. Requests that do not
// enable MCA get the service's default MCA options (--mca_alpha, --mca_seed; off unless the
// operator set them).
#ifndef AAREN_SERVER_AAREN_V1_AAREN_SERVICE_H_
#define AAREN_SERVER_AAREN_V1_AAREN_SERVICE_H_

#include <grpcpp/support/byte_buffer.h>

#include "aaren/v1/aaren.grpc.pb.h"
#include "engine/engine.h"
#include "server/call_env.h"
#include "server/unary_call.h"

namespace aaren {

// Every method of aaren.v1.Aaren as a raw callback method.
using RawAarenService = v1::Aaren::WithRawCallbackMethod_ListModels<
    v1::Aaren::WithRawCallbackMethod_Score<v1::Aaren::WithRawCallbackMethod_CreateSession<
        v1::Aaren::WithRawCallbackMethod_Append<v1::Aaren::WithRawCallbackMethod_Stream<
            v1::Aaren::WithRawCallbackMethod_Generate<v1::Aaren::WithRawCallbackMethod_GetSession<
                v1::Aaren::WithRawCallbackMethod_DeleteSession<
                    v1::Aaren::WithRawCallbackMethod_ForkSession<
                        v1::Aaren::WithRawCallbackMethod_ExportSession<
                            v1::Aaren::WithRawCallbackMethod_ImportSession<
                                v1::Aaren::Service>>>>>>>>>>>;

class AarenService final : public RawAarenService {
 public:
  // `env` (and what it points to) must outlive the service.
  explicit AarenService(const CallEnv* env) : env_(env) {}

  using Raw = grpc::ByteBuffer;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* ctx, const Raw* request,
                                       Raw* response) override;
  grpc::ServerUnaryReactor* Score(grpc::CallbackServerContext* ctx, const Raw* request,
                                  Raw* response) override;
  grpc::ServerUnaryReactor* CreateSession(grpc::CallbackServerContext* ctx, const Raw* request,
                                          Raw* response) override;
  grpc::ServerUnaryReactor* Append(grpc::CallbackServerContext* ctx, const Raw* request,
                                   Raw* response) override;
  grpc::ServerBidiReactor<Raw, Raw>* Stream(grpc::CallbackServerContext* ctx) override;
  grpc::ServerWriteReactor<Raw>* Generate(grpc::CallbackServerContext* ctx,
                                          const Raw* request) override;
  grpc::ServerUnaryReactor* GetSession(grpc::CallbackServerContext* ctx, const Raw* request,
                                       Raw* response) override;
  grpc::ServerUnaryReactor* DeleteSession(grpc::CallbackServerContext* ctx, const Raw* request,
                                          Raw* response) override;
  grpc::ServerUnaryReactor* ForkSession(grpc::CallbackServerContext* ctx, const Raw* request,
                                        Raw* response) override;
  grpc::ServerUnaryReactor* ExportSession(grpc::CallbackServerContext* ctx, const Raw* request,
                                          Raw* response) override;
  grpc::ServerUnaryReactor* ImportSession(grpc::CallbackServerContext* ctx, const Raw* request,
                                          Raw* response) override;

 private:
  template <typename Request, typename Response>
  using Call = UnaryCall<Request, Response>;

  // Starts a unary call: authenticate, parse, then `handler` (which must Done the call).
  template <typename Request, typename Response>
  grpc::ServerUnaryReactor* Unary(const char* rpc, grpc::CallbackServerContext* ctx,
                                  const Raw* request, Raw* response,
                                  void (AarenService::*handler)(Call<Request, Response>*));

  void DoListModels(Call<v1::ListModelsRequest, v1::ListModelsResponse>* call);
  void DoScore(Call<v1::ScoreRequest, v1::ScoreResponse>* call);
  void DoCreateSession(Call<v1::CreateSessionRequest, v1::Session>* call);
  void DoAppend(Call<v1::AppendRequest, v1::AppendResponse>* call);
  void DoGetSession(Call<v1::GetSessionRequest, v1::Session>* call);
  void DoDeleteSession(Call<v1::DeleteSessionRequest, v1::DeleteSessionResponse>* call);
  void DoForkSession(Call<v1::ForkSessionRequest, v1::Session>* call);
  void DoExportSession(Call<v1::ExportSessionRequest, v1::ExportSessionResponse>* call);
  void DoImportSession(Call<v1::ImportSessionRequest, v1::Session>* call);

  const CallEnv* env_;
};

// Builds the engine's append parameters from a request (also used by Stream); the default MCA
// options when the request does not enable MCA.
absl::StatusOr<Engine::AppendParams> AppendParamsFromProto(const v1::AppendRequest& request,
                                                           absl::string_view field_prefix,
                                                           const McaOptions& default_mca);
// Fills an AppendResponse from the engine's result.
void AppendResponseToProto(const std::string& session_id, AppendResult result,
                           v1::AppendResponse* out);

}  // namespace aaren

#endif  // AAREN_SERVER_AAREN_V1_AAREN_SERVICE_H_
