// SPDX-License-Identifier: Apache-2.0
// EchoService: aaren.v1.BenchEcho, served with --enable_echo. Each request is answered with an
// AppendResponse of the requested size and no model work: the gRPC ceiling that
// `aaren-cli bench` compares streaming appends against.
#ifndef AAREN_SERVER_ECHO_SERVICE_H_
#define AAREN_SERVER_ECHO_SERVICE_H_

#include "aaren/v1/bench.grpc.pb.h"

namespace aaren {

class EchoService final : public v1::BenchEcho::CallbackService {
 public:
  grpc::ServerBidiReactor<v1::EchoRequest, v1::StreamResponse>* Echo(
      grpc::CallbackServerContext* ctx) override;
};

}  // namespace aaren

#endif  // AAREN_SERVER_ECHO_SERVICE_H_
