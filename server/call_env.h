// SPDX-License-Identifier: Apache-2.0
// CallEnv: what every RPC of the server's own services shares, whatever its protocol: the
// engine, metrics, the authenticator (which tenant a call acts for), the access log and the
// per-tenant stream limit. Begin/Finish bracket every call the same way: authenticate, then (at
// the end) count the call in aaren_requests_total and write its access-log line.
//
// Thread-safety: every member may be used from any thread; CallEnv itself is immutable once
// the server runs and outlives every call.
#ifndef AAREN_SERVER_CALL_ENV_H_
#define AAREN_SERVER_CALL_ENV_H_

#include <grpcpp/server_context.h>
#include <grpcpp/support/status.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/mca.h"
#include "engine/engine.h"
#include "server/auth/authenticator.h"
#include "server/metrics/server_metrics.h"

namespace aaren {

// --max_streams_per_tenant: open Stream and Generate calls per tenant.
class TenantStreams {
 public:
  explicit TenantStreams(int64_t limit) : limit_(limit) {}
  // RESOURCE_EXHAUSTED naming the limit when the tenant has `limit` open already; otherwise
  // counts one more (give it back with Release).
  absl::Status Acquire(const std::string& tenant);
  void Release(const std::string& tenant);

 private:
  const int64_t limit_;  // 0: no limit
  std::mutex mu_;
  absl::flat_hash_map<std::string, int64_t> open_;
};

// A long-lived call (a Stream) that can be asked to end early when the server drains.
class Drainable {
 public:
  virtual ~Drainable() = default;
  // Ends the call soon with UNAVAILABLE (never blocks; may run on any thread; never called after
  // the call left the registry).
  virtual void Drain() = 0;
};

// The open Drainable calls. On SIGTERM the server drains them first, so that a client of a
// replica being replaced reconnects (to another replica) at once instead of at --drain_timeout.
class DrainRegistry {
 public:
  // False once DrainAll ran: the call should end at once.
  bool Add(Drainable* call);
  // Before the call is deleted. Waits while DrainAll is calling it.
  void Remove(Drainable* call);
  void DrainAll();

 private:
  std::mutex mu_;
  absl::flat_hash_set<Drainable*> calls_;
  bool draining_ = false;
};

struct CallEnv {
  Engine* engine = nullptr;
  ServerMetrics* metrics = nullptr;     // may be null
  const Authenticator* auth = nullptr;  // null: no authentication, every caller anonymous
  TenantStreams* streams = nullptr;     // may be null: no per-tenant stream limit
  DrainRegistry* drain = nullptr;       // may be null: long calls run until --drain_timeout
  bool access_log = false;              // --access_log: one line per call
  McaOptions default_mca;               // for requests that do not enable MCA
  // Calls of the server's own services from their start until gRPC is done with them (their
  // reply sent); the drain on SIGTERM waits for it to reach 0. May be null.
  std::atomic<int64_t>* active_calls = nullptr;
};

// One call's bookkeeping from its first byte to its status.
class CallRecord {
 public:
  CallRecord(const CallEnv& env, const char* rpc, const grpc::CallbackServerContext* context);
  // A call of the REST transport: the client's address and its Authorization header ("" when
  // it sent none).
  CallRecord(const CallEnv& env, const char* rpc, std::string peer, std::string authorization);
  // Owned by the call's reactor, so this runs when gRPC is done with the call (OnDone).
  ~CallRecord();
  CallRecord(const CallRecord&) = delete;
  CallRecord& operator=(const CallRecord&) = delete;

  // Authenticates the caller: its tenant (kAnonymousTenant without authentication), or
  // UNAUTHENTICATED.
  absl::Status Authenticate();
  const std::string& tenant() const { return tenant_; }
  const char* rpc() const { return rpc_; }

  // Counts the call (metrics, access log) with its final status; call once, before the client
  // can see the status.
  void Finish(grpc::StatusCode code);

 private:
  const CallEnv& env_;
  const char* rpc_;
  const grpc::CallbackServerContext* context_;  // null for REST calls
  std::string peer_;                            // REST calls
  std::string authorization_;                   // REST calls
  std::chrono::steady_clock::time_point start_;
  std::string tenant_;
  bool authenticated_ = false;
};

}  // namespace aaren

#endif  // AAREN_SERVER_CALL_ENV_H_
