// SPDX-License-Identifier: Apache-2.0
// ServerMetrics: the aaren_* metric set (README, "Metrics"), recorded through a MetricsRegistry.
// RPC handlers call RecordRequest and the stream counters; the engine reports through the
// EngineObserver interface; Collect() refreshes the gauges and lifecycle counters from the
// engine's state right before each scrape. No series carries a session id.
//
// Thread-safety: every method may be called from any thread.
#ifndef AAREN_SERVER_METRICS_SERVER_METRICS_H_
#define AAREN_SERVER_METRICS_SERVER_METRICS_H_

#include <grpcpp/support/status.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>

#include "engine/engine.h"
#include "engine/engine_observer.h"
#include "server/metrics/metrics_registry.h"

namespace aaren {

struct BuildInfo {
  std::string version;
  std::string git_sha;
  std::string backend;
  std::string exporter;  // MetricsRegistry::implementation()
};

class ServerMetrics final : public EngineObserver {
 public:
  // Declares every family on `registry` (which must outlive this) and zero-initialises the
  // per-model and MCA series so that they exist from the first scrape.
  ServerMetrics(MetricsRegistry* registry, const BuildInfo& build, const ModelRegistry& models);

  // A finished RPC: `rpc` is the method name ("Append"), duration in seconds.
  void RecordRequest(const char* rpc, grpc::StatusCode code, double seconds);
  void StreamOpened() { open_streams_.fetch_add(1, std::memory_order_relaxed); }
  void StreamClosed() { open_streams_.fetch_sub(1, std::memory_order_relaxed); }

  // Gauges and session lifecycle counters from the engine (call before rendering).
  void Collect(Engine& engine);

  // EngineObserver.
  void OnForward(const ServedModel& model, bool step, int64_t tokens, double seconds) override;
  void OnQueueWait(const ServedModel& model, double seconds) override;
  void OnTokens(const ServedModel& model, bool scored, int64_t tokens) override;
  // aaren_mca_value_projection_flops_total{kind="spent"|"exact"}: every completed operation's
  // counts, MCA or not (so spent / exact is the share of the exact cost paid).
  void OnMcaFlops(const ServedModel& model, const McaCounts& counts) override;
  // aaren_store_*: commits by result, records and bytes written, commit durations, errors.
  void OnStoreCommit(int64_t records, int64_t bytes, double seconds,
                     const absl::Status& status) override;
  // aaren_store_recovered_sessions, aaren_store_skipped_records, aaren_store_recovery_seconds.
  void OnRecovery(int64_t recovered, int64_t skipped, double seconds) override;
  // Shared stores: aaren_store_roundtrip_seconds{op="load"} (commits: op="commit"),
  // aaren_store_loaded_sessions_total, aaren_store_ownership_moves_total,
  // aaren_store_cas_conflicts_total.
  void OnStoreLoad(double seconds, const absl::Status& status) override;
  void OnSessionLoaded(bool moved) override;
  void OnStoreConflicts(int64_t conflicts) override;

 private:
  MetricsRegistry* registry_;
  std::atomic<int64_t> open_streams_{0};
  std::mutex collect_mu_;
  StoreCounts last_;  // lifecycle counters already exported
};

// "OK", "INVALID_ARGUMENT", ... (the google.rpc.Code names).
const char* StatusCodeName(grpc::StatusCode code);

}  // namespace aaren

#endif  // AAREN_SERVER_METRICS_SERVER_METRICS_H_
