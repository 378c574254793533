// SPDX-License-Identifier: Apache-2.0
#include "server/auth/reflection_gate.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/support/client_callback.h>

#include <algorithm>
#include <mutex>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/input_validation.h"
#include "server/status_convert.h"

namespace aaren {
namespace {

constexpr char kReflectionPlugin[] = "proto_server_reflection";
constexpr char kReflectionMethod[] =
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";

// Finishes a call at once with `status`.
class Refuse final : public grpc::ServerGenericBidiReactor {
 public:
  explicit Refuse(grpc::Status status) { Finish(std::move(status)); }
  void OnDone() override { delete this; }
};

// Relays one ServerReflectionInfo stream between the caller (Caller, the server side) and the
// inner server (Inner, the client side): each frame read from one side is written to the other,
// one in flight each way. The inner call's status ends the caller's. Both halves live in one
// Relay, deleted when both calls are done.
//
// Lifetimes: gRPC destroys the inner client call before Inner::OnDone, so the caller side must
// never start an inner operation once OnDone can run. Two holds on the inner reactor keep it
// from running while the caller side may still touch it:
//   - the read hold, from the start until the inner call's reads end (Inner::OnReadDone(false):
//     the inner server finished or the call was cancelled). From then on a frame the caller
//     sends is dropped, not written (`inner_reads_done_`, under `mu_`);
//   - a write hold for each inner frame being written to the caller, released by
//     Caller::OnWriteDone after it has started the next inner read.
// `mu_` is recursive: gRPC may run a reaction on the thread that starts an operation.
class Relay {
 public:
  Relay(const std::shared_ptr<grpc::Channel>& channel, grpc::GenericCallbackServerContext* ctx)
      : caller_(this), inner_(this), stub_(channel) {
    if (ctx->deadline() != std::chrono::system_clock::time_point::max()) {
      client_ctx_.set_deadline(ctx->deadline());
    }
    stub_.PrepareBidiStreamingCall(&client_ctx_, kReflectionMethod, grpc::StubOptions(), &inner_);
    inner_.AddHold();  // the read hold
    inner_.StartRead(&from_inner_);
    inner_.StartCall();
    caller_.StartRead(&from_caller_);
  }
  grpc::ServerGenericBidiReactor* caller() { return &caller_; }

 private:
  class Caller final : public grpc::ServerGenericBidiReactor {
   public:
    explicit Caller(Relay* r) : r_(r) {}
    void OnReadDone(bool ok) override {
      std::lock_guard<std::recursive_mutex> lock(r_->mu_);
      if (r_->inner_reads_done_) return;  // the inner call is ending: nothing to write to
      if (ok) {
        r_->inner_.StartWrite(&r_->from_caller_);
      } else if (!r_->writes_done_) {
        r_->writes_done_ = true;
        r_->inner_.StartWritesDone();
      }
    }
    void OnWriteDone(bool ok) override {
      // (An inner frame's write hold is held: the inner call is alive.) The next inner read
      // is started either way: after a failed write it fails at once (the call is cancelled),
      // and Inner::OnReadDone(false) then releases the read hold, so the inner call can end.
      if (!ok) r_->client_ctx_.TryCancel();
      r_->inner_.StartRead(&r_->from_inner_);
      r_->inner_.RemoveHold();
    }
    void OnCancel() override { r_->client_ctx_.TryCancel(); }
    void OnDone() override { r_->Release(); }

   private:
    Relay* r_;
  };
  class Inner final : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
   public:
    explicit Inner(Relay* r) : r_(r) {}
    void OnReadDone(bool ok) override {
      if (ok) {
        AddHold();  // the write hold, released by Caller::OnWriteDone
        r_->caller_.StartWrite(&r_->from_inner_);
        return;
      }
      {
        std::lock_guard<std::recursive_mutex> lock(r_->mu_);
        r_->inner_reads_done_ = true;
      }
      RemoveHold();  // the read hold: OnDone may run once the operations in flight end
    }
    void OnWriteDone(bool ok) override {
      if (ok) r_->caller_.StartRead(&r_->from_caller_);
    }
    void OnDone(const grpc::Status& status) override {
      r_->caller_.Finish(status);
      r_->Release();
    }

   private:
    Relay* r_;
  };

  void Release() {
    bool last = false;
    {
      std::lock_guard<std::recursive_mutex> lock(mu_);
      last = ++done_ == 2;
    }
    if (last) delete this;
  }

  Caller caller_;
  Inner inner_;
  grpc::GenericStub stub_;
  grpc::ClientContext client_ctx_;
  grpc::ByteBuffer from_caller_, from_inner_;
  std::recursive_mutex mu_;
  bool inner_reads_done_ = false;  // guarded by mu_
  bool writes_done_ = false;       // guarded by mu_
  int done_ = 0;                   // guarded by mu_
};

}  // namespace

void WithoutReflection::UpdatePlugins(
    std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) {
  plugins->erase(std::remove_if(plugins->begin(), plugins->end(),
                                [](const std::unique_ptr<grpc::ServerBuilderPlugin>& p) {
                                  return p->name() == kReflectionPlugin;
                                }),
                 plugins->end());
}

std::unique_ptr<ReflectionGate> ReflectionGate::Create(
    const Authenticator* auth, std::vector<std::unique_ptr<grpc::Service>> stand_ins) {
  auto gate = std::unique_ptr<ReflectionGate>(new ReflectionGate());
  gate->auth_ = auth;
  if (auth == nullptr) return gate;
  gate->stand_ins_ = std::move(stand_ins);
  grpc::ServerBuilder builder;  // keeps the reflection plugin; no port: in-process only
  for (auto& s : gate->stand_ins_) builder.RegisterService(s.get());
  gate->inner_ = builder.BuildAndStart();
  if (gate->inner_ != nullptr) gate->channel_ = gate->inner_->InProcessChannel({});
  return gate;
}

ReflectionGate::~ReflectionGate() {
  if (inner_ != nullptr) inner_->Shutdown();
}

grpc::ServerGenericBidiReactor* ReflectionGate::CreateReactor(
    grpc::GenericCallbackServerContext* ctx) {
  if (ctx->method() != kReflectionMethod || channel_ == nullptr) {
    return new Refuse(
        grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                     absl::StrCat("method ", Quoted(ctx->method()), " is not served here")));
  }
  if (absl::StatusOr<std::string> tenant = auth_->Authenticate(*ctx); !tenant.ok()) {
    return new Refuse(ToGrpcStatus(tenant.status()));
  }
  return (new Relay(channel_, ctx))->caller();
}

}  // namespace aaren
