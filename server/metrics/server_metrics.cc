// SPDX-License-Identifier: Apache-2.0
#include "server/metrics/server_metrics.h"

#include <vector>

namespace aaren {
namespace {

// Durations from 50 us (a cached replay, a small unary call) to 60 s (a large Score).
const std::vector<double>& LatencyBuckets() {
  static const std::vector<double> b = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                        0.01,    0.025,  0.05,    0.1,    0.25,  0.5,    1,
                                        2.5,     5,      10,      30,     60};
  return b;
}

// Tokens per Forward: powers of two from a lone streaming step to 64k-token ticks.
std::vector<double> BatchBuckets() {
  std::vector<double> b;
  for (double v = 1; v <= 65536; v *= 2) b.push_back(v);
  return b;
}

}  // namespace

const char* StatusCodeName(grpc::StatusCode code) {
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  const int i = static_cast<int>(code);
  return i >= 0 && i < 17 ? kNames[i] : "UNKNOWN";
}

ServerMetrics::ServerMetrics(MetricsRegistry* registry, const BuildInfo& build,
                             const ModelRegistry& models)
    : registry_(registry) {
  MetricsRegistry& r = *registry_;
  r.AddCounter("aaren_requests_total", "Finished RPCs by method and gRPC status code.");
  r.AddHistogram("aaren_request_duration_seconds",
                 "RPC duration in seconds (Stream and Generate: the whole call).",
                 LatencyBuckets());
  r.AddCounter("aaren_tokens_appended_total",
               "Tokens applied to sessions (prefixes, appends, streams, generation).");
  r.AddCounter("aaren_tokens_scored_total", "Tokens run by Score.");
  r.AddGauge("aaren_sessions", "Live sessions by tier (device: the state pool; host).");
  r.AddGauge("aaren_session_state_bytes", "Recurrent-state bytes of live sessions by tier.");
  r.AddCounter("aaren_sessions_created_total", "Sessions created.");
  r.AddCounter("aaren_sessions_evicted_total",
               "Sessions moved from the state pool to the host tier.");
  r.AddCounter("aaren_sessions_expired_total", "Sessions removed after their idle TTL.");
  r.AddCounter("aaren_sessions_deleted_total", "Sessions deleted by DeleteSession.");
  r.AddGauge("aaren_open_streams", "Stream and Generate calls in progress.");
  r.AddHistogram("aaren_scheduler_batch_tokens", "Tokens per backend Forward (one tick).",
                 BatchBuckets());
  r.AddHistogram("aaren_scheduler_queue_wait_seconds",
                 "Seconds from an operation's arrival to its first Forward.", LatencyBuckets());
  r.AddHistogram("aaren_backend_forward_duration_seconds",
                 "Backend Forward duration by path (step: every span one token; scan).",
                 LatencyBuckets());
  r.AddGauge("aaren_state_pool_slots", "State-pool capacity in sessions (--max_sessions).");
  r.AddGauge("aaren_state_pool_used_slots", "State-pool slots in use.");
  r.AddGauge("aaren_host_tier_slots", "Host-tier capacity in sessions (--host_tier_sessions).");
  r.AddGauge("aaren_host_tier_used_slots", "Host-tier slots in use.");
  r.AddCounter("aaren_mca_value_projection_flops_total",
               "Value-projection FLOPs of completed operations: spent (less than exact with "
               "Monte-Carlo Attention), and exact (what exact projection costs).");
  r.AddGauge("aaren_build_info", "Build information; the value is always 1.");
  r.AddCounter("aaren_store_commits_total",
               "State store commits (one per tick with --durability=ack, per interval with "
               "checkpoint) by result (ok, error).");
  r.AddCounter("aaren_store_errors_total",
               "State store commits that failed (disk full, I/O error, store unreachable).");
  r.AddCounter("aaren_store_records_written_total",
               "Session records put and deleted by successful commits.");
  r.AddCounter("aaren_store_written_bytes_total",
               "Bytes of session records written by successful commits.");
  r.AddHistogram("aaren_store_commit_duration_seconds",
                 "State store commit duration (the write and its sync).", LatencyBuckets());
  r.AddGauge("aaren_store_recovered_sessions", "Sessions loaded from the state store at start-up.");
  r.AddGauge("aaren_store_skipped_records",
             "Records kept in the store but not loaded at start-up (another model or config, "
             "damaged, no room).");
  r.AddGauge("aaren_store_recovery_seconds", "Seconds the start-up recovery took.");
  r.AddHistogram("aaren_store_roundtrip_seconds",
                 "State store round trips by op: commit (a batch and its sync) and load (one "
                 "session record read by a replica that did not hold it or checked its copy).",
                 LatencyBuckets());
  r.AddCounter("aaren_store_loaded_sessions_total",
               "Sessions loaded from a shared store (Redis) on first use or to replace a copy "
               "another replica had advanced.");
  r.AddCounter("aaren_store_ownership_moves_total",
               "Loaded sessions that another replica wrote last (the session moved here).");
  r.AddCounter("aaren_store_cas_conflicts_total",
               "Writes to a shared store that lost their compare-and-set (another replica had "
               "changed the session); their calls failed with ABORTED and were not applied.");

  r.Set("aaren_build_info",
        {{"version", build.version},
         {"git_sha", build.git_sha},
         {"backend", build.backend},
         {"exporter", build.exporter}},
        1);
  // Every RPC x status code from the start: rate() needs a series' first sample, so an error
  // series that first appeared already above zero would never count in an error ratio.
  for (const char* rpc :
       {"ListModels", "Score", "CreateSession", "Append", "Stream", "Generate", "GetSession",
        "DeleteSession", "ForkSession", "ExportSession", "ImportSession"}) {
    for (int code = 0; code <= static_cast<int>(grpc::StatusCode::UNAUTHENTICATED); ++code) {
      r.Increment("aaren_requests_total",
                  {{"rpc", rpc}, {"code", StatusCodeName(static_cast<grpc::StatusCode>(code))}}, 0);
    }
  }
  for (const char* kind : {"spent", "exact"}) {
    r.Increment("aaren_mca_value_projection_flops_total", {{"kind", kind}}, 0);
  }
  for (const char* result : {"ok", "error"}) {
    r.Increment("aaren_store_commits_total", {{"result", result}}, 0);
  }
  for (const char* name :
       {"aaren_store_errors_total", "aaren_store_records_written_total",
        "aaren_store_written_bytes_total", "aaren_store_loaded_sessions_total",
        "aaren_store_ownership_moves_total", "aaren_store_cas_conflicts_total"}) {
    r.Increment(name, {}, 0);
  }
  for (const char* name : {"aaren_store_recovered_sessions", "aaren_store_skipped_records",
                           "aaren_store_recovery_seconds"}) {
    r.Set(name, {}, 0);
  }
  for (const ServedModel* m : models.models()) {
    r.Increment("aaren_tokens_appended_total", {{"model", m->name}}, 0);
    r.Increment("aaren_tokens_scored_total", {{"model", m->name}}, 0);
  }
  for (const char* name : {"aaren_sessions_created_total", "aaren_sessions_evicted_total",
                           "aaren_sessions_expired_total", "aaren_sessions_deleted_total"}) {
    r.Increment(name, {}, 0);
  }
}

void ServerMetrics::RecordRequest(const char* rpc, grpc::StatusCode code, double seconds) {
  registry_->Increment("aaren_requests_total", {{"rpc", rpc}, {"code", StatusCodeName(code)}}, 1);
  registry_->Observe("aaren_request_duration_seconds", {{"rpc", rpc}}, seconds);
}

void ServerMetrics::Collect(Engine& engine) {
  // One collection at a time, snapshot taken inside the lock: two overlapping scrapes must not
  // export an older snapshot after a newer one (the counter deltas would wrap around).
  std::lock_guard<std::mutex> lock(collect_mu_);
  const StoreCounts c = engine.stats().store;
  MetricsRegistry& r = *registry_;
  r.Set("aaren_sessions", {{"tier", "device"}}, static_cast<double>(c.pool));
  r.Set("aaren_sessions", {{"tier", "host"}}, static_cast<double>(c.host));
  r.Set("aaren_session_state_bytes", {{"tier", "device"}}, static_cast<double>(c.pool_state_bytes));
  r.Set("aaren_session_state_bytes", {{"tier", "host"}}, static_cast<double>(c.host_state_bytes));
  r.Set("aaren_state_pool_slots", {}, static_cast<double>(c.pool_capacity));
  r.Set("aaren_state_pool_used_slots", {}, static_cast<double>(c.pool));
  r.Set("aaren_host_tier_slots", {}, static_cast<double>(c.host_capacity));
  r.Set("aaren_host_tier_used_slots", {}, static_cast<double>(c.host));
  r.Set("aaren_open_streams", {}, static_cast<double>(open_streams_.load()));
  // The store counts monotonically; export what is new since the last scrape.
  r.Increment("aaren_sessions_created_total", {}, static_cast<double>(c.created - last_.created));
  r.Increment("aaren_sessions_evicted_total", {}, static_cast<double>(c.evicted - last_.evicted));
  r.Increment("aaren_sessions_expired_total", {}, static_cast<double>(c.expired - last_.expired));
  r.Increment("aaren_sessions_deleted_total", {}, static_cast<double>(c.deleted - last_.deleted));
  last_ = c;
}

void ServerMetrics::OnForward(const ServedModel& model, bool step, int64_t tokens, double seconds) {
  registry_->Observe("aaren_scheduler_batch_tokens", {}, static_cast<double>(tokens));
  registry_->Observe("aaren_backend_forward_duration_seconds", {{"path", step ? "step" : "scan"}},
                     seconds);
}

void ServerMetrics::OnQueueWait(const ServedModel&, double seconds) {
  registry_->Observe("aaren_scheduler_queue_wait_seconds", {}, seconds);
}

void ServerMetrics::OnMcaFlops(const ServedModel& model, const McaCounts& counts) {
  if (counts.value_flops_exact == 0 && counts.value_flops == 0) return;
  registry_->Increment("aaren_mca_value_projection_flops_total", {{"kind", "spent"}},
                       static_cast<double>(counts.value_flops));
  registry_->Increment("aaren_mca_value_projection_flops_total", {{"kind", "exact"}},
                       static_cast<double>(counts.value_flops_exact));
}

void ServerMetrics::OnStoreCommit(int64_t records, int64_t bytes, double seconds,
                                  const absl::Status& status) {
  registry_->Increment("aaren_store_commits_total", {{"result", status.ok() ? "ok" : "error"}}, 1);
  registry_->Observe("aaren_store_commit_duration_seconds", {}, seconds);
  registry_->Observe("aaren_store_roundtrip_seconds", {{"op", "commit"}}, seconds);
  if (!status.ok()) {
    registry_->Increment("aaren_store_errors_total", {}, 1);
    return;
  }
  registry_->Increment("aaren_store_records_written_total", {}, static_cast<double>(records));
  registry_->Increment("aaren_store_written_bytes_total", {}, static_cast<double>(bytes));
}

void ServerMetrics::OnStoreLoad(double seconds, const absl::Status& status) {
  registry_->Observe("aaren_store_roundtrip_seconds", {{"op", "load"}}, seconds);
  if (!status.ok()) registry_->Increment("aaren_store_errors_total", {}, 1);
}

void ServerMetrics::OnSessionLoaded(bool moved) {
  registry_->Increment("aaren_store_loaded_sessions_total", {}, 1);
  if (moved) registry_->Increment("aaren_store_ownership_moves_total", {}, 1);
}

void ServerMetrics::OnStoreConflicts(int64_t conflicts) {
  registry_->Increment("aaren_store_cas_conflicts_total", {}, static_cast<double>(conflicts));
}

void ServerMetrics::OnRecovery(int64_t recovered, int64_t skipped, double seconds) {
  registry_->Set("aaren_store_recovered_sessions", {}, static_cast<double>(recovered));
  registry_->Set("aaren_store_skipped_records", {}, static_cast<double>(skipped));
  registry_->Set("aaren_store_recovery_seconds", {}, seconds);
}

void ServerMetrics::OnTokens(const ServedModel& model, bool scored, int64_t tokens) {
  registry_->Increment(scored ? "aaren_tokens_scored_total" : "aaren_tokens_appended_total",
                       {{"model", model.name}}, static_cast<double>(tokens));
}

}  // namespace aaren
