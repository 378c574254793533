// SPDX-License-Identifier: Apache-2.0
#include "engine/served_model.h"

#include <fstream>
#include <iterator>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/status_macros.h"
#include "engine/input_validation.h"

namespace aaren {
namespace {

// FNV-1a over a file's bytes, read in blocks (a weights file may be large).
absl::StatusOr<uint64_t> HashFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path.string(), ": cannot open"));
  uint64_t h = 1469598103934665603ull;
  std::vector<char> block(1 << 20);
  while (in) {
    in.read(block.data(), static_cast<std::streamsize>(block.size()));
    const std::streamsize n = in.gcount();
    for (std::streamsize i = 0; i < n; ++i) {
      h = (h ^ static_cast<uint8_t>(block[static_cast<size_t>(i)])) * 1099511628211ull;
    }
  }
  return h;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelRegistry>> ModelRegistry::Load(
    const std::vector<std::filesystem::path>& dirs, const BackendFactory& make_backend) {
  auto registry = std::unique_ptr<ModelRegistry>(new ModelRegistry());
  for (const auto& dir : dirs) {
    ASSIGN_OR_RETURN(std::shared_ptr<const Model> model, Model::Load(dir));
    ASSIGN_OR_RETURN(uint64_t config_hash, HashFile(dir / "config.json"));
    ASSIGN_OR_RETURN(uint64_t weights_hash, HashFile(dir / "model.safetensors"));
    RETURN_IF_ERROR(registry->Add(
        std::move(model), absl::StrFormat("%016x-%016x", config_hash, weights_hash), make_backend));
  }
  return registry;
}

absl::StatusOr<std::unique_ptr<ModelRegistry>> ModelRegistry::FromModels(
    std::vector<std::shared_ptr<const Model>> models, const BackendFactory& make_backend) {
  auto registry = std::unique_ptr<ModelRegistry>(new ModelRegistry());
  for (auto& model : models) {
    // In-memory models have no files: fingerprint the canonical config and the weights.
    uint64_t h = 1469598103934665603ull;
    auto mix = [&h](const void* data, size_t n) {
      const auto* p = static_cast<const uint8_t*>(data);
      for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
    };
    const std::string config = ModelConfigToJson(model->config());
    mix(config.data(), config.size());
    for (const auto& [name, tensor] : model->tensors()) {
      mix(name.data(), name.size());
      mix(tensor.ptr(), static_cast<size_t>(tensor.num_elements()) * sizeof(float));
    }
    RETURN_IF_ERROR(registry->Add(std::move(model), absl::StrFormat("%016x", h), make_backend));
  }
  return registry;
}

absl::Status ModelRegistry::Add(std::shared_ptr<const Model> model, std::string config_hash,
                                const BackendFactory& make_backend) {
  const std::string name = model->name();
  if (models_.count(name) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model_dir: two model directories are named '", name, "'"));
  }
  auto served = std::make_unique<ServedModel>();
  served->name = name;
  served->layout = StateLayout::For(model->config());
  served->state_floats = served->layout.total_floats();
  served->bounds = ComputeStateBounds(*model);
  served->output_dim = model->config().output_dim;
  served->config_hash = std::move(config_hash);
  ASSIGN_OR_RETURN(served->backend, make_backend(model));
  served->model = std::move(model);
  models_.emplace(name, std::move(served));
  return absl::OkStatus();
}

const ServedModel* ModelRegistry::Find(absl::string_view name) const {
  auto it = models_.find(name);
  return it == models_.end() ? nullptr : it->second.get();
}

absl::StatusOr<const ServedModel*> ModelRegistry::Get(absl::string_view name,
                                                      absl::string_view field) const {
  if (const ServedModel* m = Find(name)) return m;
  std::vector<std::string> names;
  for (const auto& [n, m] : models_) names.push_back(n);
  return absl::NotFoundError(absl::StrCat(field, ": no model named '", Quoted(name),
                                          "' (served: ", absl::StrJoin(names, ", "), ")"));
}

std::vector<const ServedModel*> ModelRegistry::models() const {
  std::vector<const ServedModel*> out;
  for (const auto& [name, m] : models_) out.push_back(m.get());
  return out;
}

}  // namespace aaren
