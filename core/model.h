// SPDX-License-Identifier: Apache-2.0
// Model: an immutable Aaren model (config + float32 weights), shared by every backend and session
// that serves it. Construct with Model::Load (a model directory: config.json + model.safetensors)
// or Model::FromTensors (in memory, e.g. tests). Both check the exact tensor set of DESIGN.md
// section 2: missing, unexpected and mis-shaped tensors are each reported by name.
//
// Thread-safety: a Model is never mutated after construction; share it as
// std::shared_ptr<const Model> and read it from any thread. Per-session state lives outside the
// model (see core/backend.h).
#ifndef AAREN_CORE_MODEL_H_
#define AAREN_CORE_MODEL_H_

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/model_config.h"
#include "core/safetensors.h"
#include "core/tensor.h"

namespace aaren {

// Weights of one block; shapes follow PyTorch nn.Linear ([out, in]).
struct LayerWeights {
  const Tensor* norm1_weight;     // [D]
  const Tensor* norm1_bias;       // [D]
  const Tensor* query;            // [H, d_head]
  const Tensor* key_weight;       // [D, D]
  const Tensor* key_bias;         // [D]
  const Tensor* value_weight;     // [D, D]
  const Tensor* value_bias;       // [D]
  const Tensor* out_weight;       // [D, D]
  const Tensor* out_bias;         // [D]
  const Tensor* norm2_weight;     // [D]
  const Tensor* norm2_bias;       // [D]
  const Tensor* ffn_up_weight;    // [d_ff, D]
  const Tensor* ffn_up_bias;      // [d_ff]
  const Tensor* ffn_down_weight;  // [D, d_ff]
  const Tensor* ffn_down_bias;    // [D]
};

// Name and shape of every tensor a model with `config` must have, in a canonical order.
// `config` should satisfy ValidateModelConfig (the shapes are meaningless otherwise).
std::vector<std::pair<std::string, std::vector<int64_t>>> ExpectedTensors(
    const ModelConfig& config);

class Model {
 public:
  // Loads `dir`/config.json and `dir`/model.safetensors. The model's name is the directory's
  // last path component. NOT_FOUND for a missing file, INVALID_ARGUMENT for anything malformed
  // (the message names the file and the field or tensor).
  static absl::StatusOr<std::shared_ptr<const Model>> Load(const std::filesystem::path& dir);

  // The same as Load from the two files' contents (tests and fuzzing); errors as Load's.
  static absl::StatusOr<std::shared_ptr<const Model>> FromBytes(std::string name,
                                                                absl::string_view config_json,
                                                                absl::Span<const uint8_t> weights);
  // A model from a validated config and an opened weights file (the tensors it names).
  static absl::StatusOr<std::shared_ptr<const Model>> FromSafetensors(std::string name,
                                                                      ModelConfig config,
                                                                      const SafetensorsFile& file);

  // Builds a model from tensors already in memory. `config` is validated; the tensor set must be
  // exactly ExpectedTensors(config), and every value must be finite.
  static absl::StatusOr<std::shared_ptr<const Model>> FromTensors(
      std::string name, ModelConfig config, std::map<std::string, Tensor> tensors);

  const std::string& name() const { return name_; }
  const ModelConfig& config() const { return config_; }

  // Tensor by DESIGN.md name; the name must be one of ExpectedTensors(config()). An unknown name
  // is a programming error: it prints the name to stderr and aborts the process.
  const Tensor& tensor(const std::string& name) const;
  const std::map<std::string, Tensor>& tensors() const { return tensors_; }

  const Tensor* embed_weight() const { return embed_weight_; }  // [V, D]; tokens input only
  const Tensor* input_weight() const { return input_weight_; }  // [D, F]; features input only
  const Tensor* input_bias() const { return input_bias_; }      // [D]; features input only
  const LayerWeights& layer(int64_t l) const { return layers_[static_cast<size_t>(l)]; }
  const Tensor& norm_f_weight() const { return *norm_f_weight_; }
  const Tensor& norm_f_bias() const { return *norm_f_bias_; }
  const Tensor& head_weight() const { return *head_weight_; }  // [output_dim, D]
  const Tensor& head_bias() const { return *head_bias_; }      // [output_dim]

  // Total number of weights (floats).
  int64_t num_parameters() const;

  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

 private:
  Model(std::string name, ModelConfig config, std::map<std::string, Tensor> tensors);

  std::string name_;
  ModelConfig config_;
  std::map<std::string, Tensor> tensors_;  // node-based: the pointers below stay valid
  const Tensor* embed_weight_ = nullptr;
  const Tensor* input_weight_ = nullptr;
  const Tensor* input_bias_ = nullptr;
  std::vector<LayerWeights> layers_;
  const Tensor* norm_f_weight_ = nullptr;
  const Tensor* norm_f_bias_ = nullptr;
  const Tensor* head_weight_ = nullptr;
  const Tensor* head_bias_ = nullptr;
};

}  // namespace aaren

#endif  // AAREN_CORE_MODEL_H_
