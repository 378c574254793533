// SPDX-License-Identifier: Apache-2.0
#include "server/echo_service.h"

namespace aaren {
namespace {

// Read one, write one, repeat: the same one-read/one-write shape as a closed-loop Stream client.
class EchoReactor : public grpc::ServerBidiReactor<v1::EchoRequest, v1::StreamResponse> {
 public:
  EchoReactor() { StartRead(&request_); }

  void OnReadDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status::OK);
      return;
    }
    v1::AppendResponse* out = reply_.mutable_append();
    out->mutable_outputs()->Resize(static_cast<int>(request_.output_floats()), 0.0f);
    out->set_output_dim(request_.output_floats());
    out->set_session_id(request_.request().append().session_id());
    out->set_position(++position_);
    StartWrite(&reply_);
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status::CANCELLED);
      return;
    }
    StartRead(&request_);
  }
  void OnDone() override { delete this; }

 private:
  v1::EchoRequest request_;
  v1::StreamResponse reply_;
  int64_t position_ = 0;
};

}  // namespace

grpc::ServerBidiReactor<v1::EchoRequest, v1::StreamResponse>* EchoService::Echo(
    grpc::CallbackServerContext* ctx) {
  return new EchoReactor();
}

}  // namespace aaren
