// SPDX-License-Identifier: Apache-2.0
#include "server/kserve_v2/v2_model_info.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "server/kserve_v2/v2_infer.h"

namespace aaren::v2 {
namespace {

uint64_t NowMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

void SetDuration(const std::atomic<uint64_t>& count, uint64_t ns,
                 inference::StatisticDuration* out) {
  out->set_count(count.load(std::memory_order_relaxed));
  out->set_ns(ns);
}

}  // namespace

std::vector<std::string> Extensions() {
  // What this server implements of Triton's extension list: sequences (integer and string ids),
  // model configuration, statistics, the binary tensor data of the REST API, and the
  // repository index (read-only: models are loaded at start-up).
  return {"sequence",   "sequence(string_id)", "model_configuration",
          "statistics", "binary_tensor_data",  "model_repository(index)"};
}

void ServerMetadata(const std::string& version, inference::ServerMetadataResponse* out) {
  out->set_name("aaren-serve");
  out->set_version(version);
  for (const std::string& e : Extensions()) out->add_extensions(e);
}

void ModelMetadata(const ServedModel& model, inference::ModelMetadataResponse* out) {
  const aaren::ModelConfig& config = model.config();
  out->set_name(model.name);
  out->add_versions(kModelVersion);
  out->set_platform(kPlatform);
  auto* in = out->add_inputs();
  in->set_name(InputName(model));
  in->add_shape(-1);
  if (config.input_kind == InputKind::kTokens) {
    in->set_datatype("INT32");
  } else {
    in->set_datatype("FP32");
    in->add_shape(config.n_features);
  }
  auto* o = out->add_outputs();
  o->set_name(kOutputsTensor);
  o->set_datatype("FP32");
  o->add_shape(-1);
  o->add_shape(model.output_dim);
}

void ModelConfig(const ServedModel& model, uint32_t idle_ttl_s, inference::ModelConfig* out) {
  const aaren::ModelConfig& config = model.config();
  out->set_name(model.name);
  out->set_platform(kPlatform);
  out->set_backend(kPlatform);
  out->set_max_batch_size(0);  // no batch dimension: one sequence per request
  out->mutable_version_policy()->mutable_latest()->set_num_versions(1);
  auto* in = out->add_input();
  in->set_name(InputName(model));
  in->add_dims(-1);
  if (config.input_kind == InputKind::kTokens) {
    in->set_data_type(inference::TYPE_INT32);
  } else {
    in->set_data_type(inference::TYPE_FP32);
    in->add_dims(config.n_features);
  }
  auto* o = out->add_output();
  o->set_name(kOutputsTensor);
  o->set_data_type(inference::TYPE_FP32);
  o->add_dims(-1);
  o->add_dims(model.output_dim);
  auto* seq = out->mutable_sequence_batching();
  seq->set_max_sequence_idle_microseconds(static_cast<uint64_t>(idle_ttl_s) * 1000000);
  // Continuous batching across sequences (the engine batches whatever is ready each tick).
  seq->mutable_oldest()->set_max_candidate_sequences(0);
  auto* group = out->add_instance_group();
  group->set_name(model.name);
  group->set_count(1);
  group->set_kind(model.backend != nullptr && model.backend->name() == "cuda"
                      ? inference::ModelInstanceGroup::KIND_GPU
                      : inference::ModelInstanceGroup::KIND_CPU);
  (*out->mutable_parameters())["state_bytes"].set_string_value(absl::StrCat(config.state_bytes()));
  out->mutable_model_transaction_policy()->set_decoupled(false);
}

void RepositoryIndex(const ModelRegistry& models, inference::RepositoryIndexResponse* out) {
  for (const ServedModel* m : models.models()) {
    auto* e = out->add_models();
    e->set_name(m->name);
    e->set_version(kModelVersion);
    e->set_state("READY");
  }
}

V2Statistics::V2Statistics(const ModelRegistry& models) {
  for (const ServedModel* m : models.models()) models_[m->name] = std::make_unique<Model>();
}

V2Statistics::Model* V2Statistics::Find(const std::string& name) const {
  auto it = models_.find(name);
  return it == models_.end() ? nullptr : it->second.get();
}

void V2Statistics::Touch(Model* m) { m->last_ms.store(NowMs(), std::memory_order_relaxed); }

void V2Statistics::RecordRequest(const std::string& model, bool ok, int64_t ns) {
  Model* m = Find(model);
  if (m == nullptr) return;
  (ok ? m->success : m->fail).Add(static_cast<uint64_t>(ns < 0 ? 0 : ns));
  Touch(m);
}

void V2Statistics::OnForward(const ServedModel& model, bool, int64_t, double seconds) {
  if (Model* m = Find(model.name); m != nullptr) {
    m->compute.Add(static_cast<uint64_t>(seconds * 1e9));
  }
}

void V2Statistics::OnQueueWait(const ServedModel& model, double seconds) {
  if (Model* m = Find(model.name); m != nullptr) m->queue.Add(static_cast<uint64_t>(seconds * 1e9));
}

void V2Statistics::OnTokens(const ServedModel& model, bool, int64_t) {
  if (Model* m = Find(model.name); m != nullptr) {
    m->inferences.fetch_add(1, std::memory_order_relaxed);
    Touch(m);
  }
}

absl::Status V2Statistics::Fill(const ModelRegistry& models, const std::string& name,
                                const std::string& version,
                                inference::ModelStatisticsResponse* out) const {
  std::vector<const ServedModel*> selected;
  if (name.empty()) {
    if (!version.empty() && version != kModelVersion) {
      return absl::NotFoundError(absl::StrCat("version: no model has version '", version, "'"));
    }
    selected = models.models();
  } else {
    auto m = FindModel(models, name, version);
    if (!m.ok()) return m.status();
    selected.push_back(*m);
  }
  for (const ServedModel* sm : selected) {
    const Model* m = Find(sm->name);
    if (m == nullptr) continue;
    auto* s = out->add_model_stats();
    s->set_name(sm->name);
    s->set_version(kModelVersion);
    s->set_last_inference(m->last_ms.load(std::memory_order_relaxed));
    s->set_inference_count(m->inferences.load(std::memory_order_relaxed));
    const uint64_t executions = m->compute.count.load(std::memory_order_relaxed);
    s->set_execution_count(executions);
    auto* st = s->mutable_inference_stats();
    SetDuration(m->success.count, m->success.ns.load(std::memory_order_relaxed),
                st->mutable_success());
    SetDuration(m->fail.count, m->fail.ns.load(std::memory_order_relaxed), st->mutable_fail());
    SetDuration(m->queue.count, m->queue.ns.load(std::memory_order_relaxed), st->mutable_queue());
    // The three compute stages share one count (clients check that they agree).
    st->mutable_compute_input()->set_count(executions);
    st->mutable_compute_infer()->set_count(executions);
    st->mutable_compute_infer()->set_ns(m->compute.ns.load(std::memory_order_relaxed));
    st->mutable_compute_output()->set_count(executions);
    st->mutable_cache_hit();
    st->mutable_cache_miss();
  }
  return absl::OkStatus();
}

}  // namespace aaren::v2
