// SPDX-License-Identifier: Apache-2.0
// What the v2 protocol says about the server and its models, for both transports: server
// metadata (name, version, extensions), model metadata and configuration (DESIGN.md 7.4:
// platform "aaren", max_batch_size 0, TOKENS or FEATURES in, OUTPUTS out, sequence_batching with
// the idle TTL), the repository index, and per-model statistics.
//
// Statistics (ModelStatistics, GET /v2/models/{m}/stats), per model since start-up:
//   inference_count  operations the engine completed on the model (appends, prefixes, Score
//                    sequences; from either protocol);
//   execution_count  backend Forward calls (continuous batching: one Forward serves many);
//   success / fail   v2 inference requests answered OK / with an error, and their summed wall
//                    time in the server;
//   queue            engine operations and their summed wait from arrival to first Forward;
//   compute_infer    Forward calls and their summed duration; compute_input / compute_output
//                    have the same count and 0 ns (inputs and outputs are not staged apart).
// Thread-safety: V2Statistics may be used from any thread (relaxed atomic counters).
#ifndef AAREN_SERVER_KSERVE_V2_V2_MODEL_INFO_H_
#define AAREN_SERVER_KSERVE_V2_V2_MODEL_INFO_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "engine/engine.h"
#include "engine/engine_observer.h"
#include "inference/grpc_service.pb.h"
#include "inference/model_config.pb.h"

namespace aaren::v2 {

// The extensions ServerMetadata lists.
std::vector<std::string> Extensions();
void ServerMetadata(const std::string& version, inference::ServerMetadataResponse* out);
void ModelMetadata(const ServedModel& model, inference::ModelMetadataResponse* out);
// `idle_ttl_s`: the sessions' default idle TTL (max_sequence_idle_microseconds).
void ModelConfig(const ServedModel& model, uint32_t idle_ttl_s, inference::ModelConfig* out);
void RepositoryIndex(const ModelRegistry& models, inference::RepositoryIndexResponse* out);

class V2Statistics final : public EngineObserver {
 public:
  explicit V2Statistics(const ModelRegistry& models);

  // A v2 inference request for `model` (by name; unknown names are not counted) ended.
  void RecordRequest(const std::string& model, bool ok, int64_t ns);

  // Statistics of `name` (every model when empty) at `version` ("" or "1"); NOT_FOUND
  // naming the model otherwise.
  absl::Status Fill(const ModelRegistry& models, const std::string& name,
                    const std::string& version, inference::ModelStatisticsResponse* out) const;

  // EngineObserver (called by the engine through an ObserverTee).
  void OnForward(const ServedModel& model, bool step, int64_t tokens, double seconds) override;
  void OnQueueWait(const ServedModel& model, double seconds) override;
  void OnTokens(const ServedModel& model, bool scored, int64_t tokens) override;

 private:
  struct Counter {
    std::atomic<uint64_t> count{0};
    std::atomic<uint64_t> ns{0};
    void Add(uint64_t ns_add) {
      count.fetch_add(1, std::memory_order_relaxed);
      ns.fetch_add(ns_add, std::memory_order_relaxed);
    }
  };
  struct Model {
    std::atomic<uint64_t> inferences{0};
    std::atomic<uint64_t> last_ms{0};
    Counter success, fail, queue, compute;
  };
  Model* Find(const std::string& name) const;
  void Touch(Model* m);

  // Fixed at construction (one entry per served model), so lookups need no lock.
  std::map<std::string, std::unique_ptr<Model>, std::less<>> models_;
};

}  // namespace aaren::v2

#endif  // AAREN_SERVER_KSERVE_V2_V2_MODEL_INFO_H_
