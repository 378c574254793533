// SPDX-License-Identifier: Apache-2.0
// Server reflection under the server's own access rules (README, "Security"):
//
//   --reflection=false        no reflection service at all;
//   no authentication         gRPC's reflection service on the server itself, as before;
//   --auth_tokens_file set    reflection needs a bearer token like every other call: the public
//                             server has no reflection service, and a generic service on it
//                             authenticates each ServerReflectionInfo call and relays its frames
//                             to gRPC's own reflection service on an in-process server that
//                             lists the same services (so the answers are gRPC's, unchanged).
//
// The generic service also answers every method no service implements with UNIMPLEMENTED naming
// the method (gRPC's own default has an empty message).
#ifndef AAREN_SERVER_AUTH_REFLECTION_GATE_H_
#define AAREN_SERVER_AUTH_REFLECTION_GATE_H_

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/impl/server_builder_option.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include <memory>
#include <vector>

#include "server/auth/authenticator.h"

namespace aaren {

// A ServerBuilder option that takes gRPC's reflection plugin off the builder it is set on (the
// plugin, once initialised, is added to every builder).
class WithoutReflection final : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override;
};

class ReflectionGate final : public grpc::CallbackGenericService {
 public:
  // `auth` null: reflection is off (every reflection call UNIMPLEMENTED). Otherwise the
  // in-process reflection server is started with `stand_ins` registered: one instance of each
  // of the public server's services (a service instance can join only one server; they are
  // there for their names and are never called).
  static std::unique_ptr<ReflectionGate> Create(
      const Authenticator* auth, std::vector<std::unique_ptr<grpc::Service>> stand_ins);
  ~ReflectionGate() override;

  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* ctx) override;

 private:
  ReflectionGate() = default;
  const Authenticator* auth_ = nullptr;
  std::vector<std::unique_ptr<grpc::Service>> stand_ins_;
  std::unique_ptr<grpc::Server> inner_;
  std::shared_ptr<grpc::Channel> channel_;
};

}  // namespace aaren

#endif  // AAREN_SERVER_AUTH_REFLECTION_GATE_H_
