// SPDX-License-Identifier: Apache-2.0
// ServedModel: one loaded model with its backend, as the engine serves it; ModelRegistry: the
// set of models of one server, by name (the model directory's name). Both are immutable after
// loading and safe to read from any thread.
#ifndef AAREN_ENGINE_SERVED_MODEL_H_
#define AAREN_ENGINE_SERVED_MODEL_H_

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/aaren_state.h"
#include "core/backend.h"
#include "core/model.h"
#include "core/state_bounds.h"

namespace aaren {

struct ServedModel {
  std::string name;
  std::shared_ptr<const Model> model;
  std::unique_ptr<Backend> backend;
  // Fingerprint of config.json and model.safetensors (FNV-1a 64 of each, hex, joined): two
  // servers accept each other's session snapshots only when it matches.
  std::string config_hash;
  StateLayout layout;
  int64_t state_floats = 0;  // layout.total_floats()
  int64_t output_dim = 0;
  // What every reachable state satisfies (ImportSession checks snapshots against it).
  StateBounds bounds;

  const ModelConfig& config() const { return model->config(); }
};

// Makes the backend for a loaded model (the server picks CPU or CUDA).
using BackendFactory =
    std::function<absl::StatusOr<std::unique_ptr<Backend>>(std::shared_ptr<const Model>)>;

class ModelRegistry {
 public:
  // Loads every directory; a model's name is its directory's name. Errors name the directory;
  // two directories with one name are INVALID_ARGUMENT.
  static absl::StatusOr<std::unique_ptr<ModelRegistry>> Load(
      const std::vector<std::filesystem::path>& dirs, const BackendFactory& make_backend);
  // For tests and embedding: serves already-loaded models under their Model::name().
  static absl::StatusOr<std::unique_ptr<ModelRegistry>> FromModels(
      std::vector<std::shared_ptr<const Model>> models, const BackendFactory& make_backend);

  // nullptr when no model has that name.
  const ServedModel* Find(absl::string_view name) const;
  // NOT_FOUND naming `field` and listing the served models.
  absl::StatusOr<const ServedModel*> Get(absl::string_view name, absl::string_view field) const;
  // Sorted by name.
  std::vector<const ServedModel*> models() const;

 private:
  absl::Status Add(std::shared_ptr<const Model> model, std::string config_hash,
                   const BackendFactory& make_backend);
  std::map<std::string, std::unique_ptr<ServedModel>, std::less<>> models_;
};

}  // namespace aaren

#endif  // AAREN_ENGINE_SERVED_MODEL_H_
