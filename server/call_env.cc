// SPDX-License-Identifier: Apache-2.0
#include "server/call_env.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/logging.h"
#include "server/metrics/server_metrics.h"

namespace aaren {

absl::Status TenantStreams::Acquire(const std::string& tenant) {
  std::lock_guard<std::mutex> lock(mu_);
  int64_t& open = open_[tenant];
  if (limit_ > 0 && open >= limit_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("streams: this tenant has ", open,
                     " Stream and Generate calls open, the limit of "
                     "--max_streams_per_tenant; close one first"));
  }
  ++open;
  return absl::OkStatus();
}

void TenantStreams::Release(const std::string& tenant) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = open_.find(tenant);
  if (it != open_.end() && --it->second <= 0) open_.erase(it);
}

bool DrainRegistry::Add(Drainable* call) {
  std::lock_guard<std::mutex> lock(mu_);
  if (draining_) return false;
  calls_.insert(call);
  return true;
}

void DrainRegistry::Remove(Drainable* call) {
  std::lock_guard<std::mutex> lock(mu_);
  calls_.erase(call);
}

void DrainRegistry::DrainAll() {
  std::lock_guard<std::mutex> lock(mu_);
  draining_ = true;
  // Under mu_: a call cannot be removed (and deleted) while it is asked to end.
  for (Drainable* call : calls_) call->Drain();
}

CallRecord::CallRecord(const CallEnv& env, const char* rpc,
                       const grpc::CallbackServerContext* context)
    : env_(env), rpc_(rpc), context_(context), start_(std::chrono::steady_clock::now()) {
  if (env_.active_calls != nullptr) env_.active_calls->fetch_add(1, std::memory_order_relaxed);
}

CallRecord::CallRecord(const CallEnv& env, const char* rpc, std::string peer,
                       std::string authorization)
    : env_(env),
      rpc_(rpc),
      context_(nullptr),
      peer_(std::move(peer)),
      authorization_(std::move(authorization)),
      start_(std::chrono::steady_clock::now()) {
  if (env_.active_calls != nullptr) env_.active_calls->fetch_add(1, std::memory_order_relaxed);
}

CallRecord::~CallRecord() {
  if (env_.active_calls != nullptr) env_.active_calls->fetch_sub(1, std::memory_order_release);
}

absl::Status CallRecord::Authenticate() {
  if (env_.auth == nullptr) {
    tenant_ = std::string(kAnonymousTenant);
    authenticated_ = true;
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> tenant = context_ != nullptr
                                           ? env_.auth->Authenticate(*context_)
                                           : env_.auth->AuthenticateHeader(authorization_);
  if (!tenant.ok()) return tenant.status();
  tenant_ = *std::move(tenant);
  authenticated_ = true;
  return absl::OkStatus();
}

void CallRecord::Finish(grpc::StatusCode code) {
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (env_.metrics != nullptr) env_.metrics->RecordRequest(rpc_, code, seconds);
  if (env_.access_log) {
    // Never the payload, the token or session ids: who, what, how it ended, how long.
    Log(LogLevel::kInfo, "call",
        {{"rpc", rpc_},
         {"tenant", !authenticated_   ? std::string("-")
                    : tenant_.empty() ? std::string("anonymous")
                                      : tenant_},
         {"code", StatusCodeName(code)},
         {"duration_ms", absl::StrFormat("%.3f", seconds * 1e3)},
         {"peer", context_ != nullptr ? context_->peer()
                  : peer_.empty()     ? std::string("-")
                                      : peer_}});
  }
}

}  // namespace aaren
