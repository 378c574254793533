// SPDX-License-Identifier: Apache-2.0
#include "core/model.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "core/safetensors.h"
#include "core/status_macros.h"

namespace aaren {
namespace {

// A broken file can have thousands of problems; the message lists this many and counts the rest.
constexpr size_t kMaxReportedProblems = 32;

std::string LayerName(int64_t l, absl::string_view suffix) {
  return absl::StrCat("layers.", l, ".", suffix);
}

// The directory's last component, ignoring trailing separators and "." components.
std::string ModelNameFromDir(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::path path = std::filesystem::absolute(dir, ec);
  if (ec) path = dir;
  path = path.lexically_normal();
  if (path.filename().empty() && path.has_parent_path()) path = path.parent_path();
  return path.filename().string();
}

}  // namespace

std::vector<std::pair<std::string, std::vector<int64_t>>> ExpectedTensors(
    const ModelConfig& config) {
  const int64_t d = config.d_model;
  const int64_t h = config.n_heads;
  const int64_t d_head = h > 0 ? d / h : 0;
  const int64_t ff = config.d_ff;
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  if (config.input_kind == InputKind::kTokens) {
    out.push_back({"embed.weight", {config.vocab_size, d}});
  } else {
    out.push_back({"input.weight", {d, config.n_features}});
    out.push_back({"input.bias", {d}});
  }
  for (int64_t l = 0; l < config.n_layers; ++l) {
    out.push_back({LayerName(l, "norm1.weight"), {d}});
    out.push_back({LayerName(l, "norm1.bias"), {d}});
    out.push_back({LayerName(l, "attn.query"), {h, d_head}});
    out.push_back({LayerName(l, "attn.key.weight"), {d, d}});
    out.push_back({LayerName(l, "attn.key.bias"), {d}});
    out.push_back({LayerName(l, "attn.value.weight"), {d, d}});
    out.push_back({LayerName(l, "attn.value.bias"), {d}});
    out.push_back({LayerName(l, "attn.out.weight"), {d, d}});
    out.push_back({LayerName(l, "attn.out.bias"), {d}});
    out.push_back({LayerName(l, "norm2.weight"), {d}});
    out.push_back({LayerName(l, "norm2.bias"), {d}});
    out.push_back({LayerName(l, "ffn.up.weight"), {ff, d}});
    out.push_back({LayerName(l, "ffn.up.bias"), {ff}});
    out.push_back({LayerName(l, "ffn.down.weight"), {d, ff}});
    out.push_back({LayerName(l, "ffn.down.bias"), {d}});
  }
  out.push_back({"norm_f.weight", {d}});
  out.push_back({"norm_f.bias", {d}});
  out.push_back({"head.weight", {config.output_dim, d}});
  out.push_back({"head.bias", {config.output_dim}});
  return out;
}

absl::StatusOr<std::shared_ptr<const Model>> Model::FromTensors(
    std::string name, ModelConfig config, std::map<std::string, Tensor> tensors) {
  if (absl::Status status = ValidateModelConfig(config); !status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("invalid model config: ", status.message()));
  }

  std::vector<std::string> problems;
  size_t num_problems = 0;
  auto report = [&](std::string problem) {
    if (num_problems++ < kMaxReportedProblems) problems.push_back(std::move(problem));
  };

  const auto expected = ExpectedTensors(config);
  std::set<std::string_view> expected_names;
  for (const auto& [tensor_name, shape] : expected) {
    expected_names.insert(tensor_name);
    auto it = tensors.find(tensor_name);
    if (it == tensors.end()) {
      report(absl::StrCat("missing tensor '", tensor_name, "' (expected shape ",
                          ShapeToString(shape), ")"));
      continue;
    }
    const Tensor& tensor = it->second;
    if (tensor.shape != shape) {
      report(absl::StrCat("tensor '", tensor_name, "' has shape ", ShapeToString(tensor.shape),
                          ", expected ", ShapeToString(shape)));
      continue;
    }
    if (tensor.num_elements() != NumElements(shape)) {
      report(absl::StrCat("tensor '", tensor_name, "' has ", tensor.num_elements(),
                          " values but its shape ", ShapeToString(shape), " needs ",
                          NumElements(shape)));
      continue;
    }
    for (int64_t i = 0; i < tensor.num_elements(); ++i) {
      if (!std::isfinite(tensor.data[static_cast<size_t>(i)])) {
        report(absl::StrCat("tensor '", tensor_name, "' has a non-finite value at index ", i));
        break;
      }
    }
  }
  for (const auto& [tensor_name, tensor] : tensors) {
    if (!expected_names.contains(tensor_name)) {
      report(absl::StrCat("unexpected tensor '", tensor_name, "'"));
    }
  }
  if (num_problems > 0) {
    std::string message = absl::StrJoin(problems, "; ");
    if (num_problems > problems.size()) {
      absl::StrAppend(&message, "; ... and ", num_problems - problems.size(), " more problems");
    }
    return absl::InvalidArgumentError(message);
  }
  return std::shared_ptr<const Model>(
      new Model(std::move(name), std::move(config), std::move(tensors)));
}

absl::StatusOr<std::shared_ptr<const Model>> Model::Load(const std::filesystem::path& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    if (!std::filesystem::exists(dir, ec)) {
      return absl::NotFoundError(absl::StrCat(dir.string(), ": model directory does not exist"));
    }
    return absl::InvalidArgumentError(absl::StrCat(dir.string(), ": not a directory"));
  }
  ASSIGN_OR_RETURN(ModelConfig config, ReadModelConfig(dir / "config.json"));

  const std::filesystem::path weights_path = dir / "model.safetensors";
  ASSIGN_OR_RETURN(SafetensorsFile file, SafetensorsFile::Open(weights_path));
  absl::StatusOr<std::shared_ptr<const Model>> model =
      FromSafetensors(ModelNameFromDir(dir), std::move(config), file);
  if (!model.ok()) {
    return absl::Status(model.status().code(),
                        absl::StrCat(weights_path.string(), ": ", model.status().message()));
  }
  return model;
}

absl::StatusOr<std::shared_ptr<const Model>> Model::FromSafetensors(std::string name,
                                                                    ModelConfig config,
                                                                    const SafetensorsFile& file) {
  // Only tensors with an expected name and shape are read; the others enter as shape-only
  // placeholders, enough for FromTensors to report them, so an unexpected multi-GB tensor costs
  // nothing.
  std::map<std::string, std::vector<int64_t>> expected;
  for (auto& [tensor_name, shape] : ExpectedTensors(config)) expected.emplace(tensor_name, shape);
  std::map<std::string, Tensor> tensors;
  for (const TensorInfo& info : file.tensors()) {
    auto it = expected.find(info.name);
    const bool wanted = it != expected.end() && it->second == info.shape;
    tensors.emplace(info.name, wanted ? file.ReadFloat32(info) : Tensor{info.shape, {}});
  }
  return FromTensors(std::move(name), std::move(config), std::move(tensors));
}

absl::StatusOr<std::shared_ptr<const Model>> Model::FromBytes(std::string name,
                                                              absl::string_view config_json,
                                                              absl::Span<const uint8_t> weights) {
  absl::StatusOr<ModelConfig> config = ParseModelConfig(config_json);
  if (!config.ok()) return config.status();
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::FromBytes(weights);
  if (!file.ok()) {
    return absl::Status(file.status().code(),
                        absl::StrCat("model.safetensors: ", file.status().message()));
  }
  absl::StatusOr<std::shared_ptr<const Model>> model =
      FromSafetensors(std::move(name), *std::move(config), *file);
  if (!model.ok()) {
    return absl::Status(model.status().code(),
                        absl::StrCat("model.safetensors: ", model.status().message()));
  }
  return model;
}

Model::Model(std::string name, ModelConfig config, std::map<std::string, Tensor> tensors)
    : name_(std::move(name)), config_(std::move(config)), tensors_(std::move(tensors)) {
  // FromTensors has checked that every name below exists with the right shape.
  auto get = [this](const std::string& tensor_name) { return &tensor(tensor_name); };
  if (config_.input_kind == InputKind::kTokens) {
    embed_weight_ = get("embed.weight");
  } else {
    input_weight_ = get("input.weight");
    input_bias_ = get("input.bias");
  }
  layers_.reserve(static_cast<size_t>(config_.n_layers));
  for (int64_t l = 0; l < config_.n_layers; ++l) {
    LayerWeights w;
    w.norm1_weight = get(LayerName(l, "norm1.weight"));
    w.norm1_bias = get(LayerName(l, "norm1.bias"));
    w.query = get(LayerName(l, "attn.query"));
    w.key_weight = get(LayerName(l, "attn.key.weight"));
    w.key_bias = get(LayerName(l, "attn.key.bias"));
    w.value_weight = get(LayerName(l, "attn.value.weight"));
    w.value_bias = get(LayerName(l, "attn.value.bias"));
    w.out_weight = get(LayerName(l, "attn.out.weight"));
    w.out_bias = get(LayerName(l, "attn.out.bias"));
    w.norm2_weight = get(LayerName(l, "norm2.weight"));
    w.norm2_bias = get(LayerName(l, "norm2.bias"));
    w.ffn_up_weight = get(LayerName(l, "ffn.up.weight"));
    w.ffn_up_bias = get(LayerName(l, "ffn.up.bias"));
    w.ffn_down_weight = get(LayerName(l, "ffn.down.weight"));
    w.ffn_down_bias = get(LayerName(l, "ffn.down.bias"));
    layers_.push_back(w);
  }
  norm_f_weight_ = get("norm_f.weight");
  norm_f_bias_ = get("norm_f.bias");
  head_weight_ = get("head.weight");
  head_bias_ = get("head.bias");
}

const Tensor& Model::tensor(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    // A name outside ExpectedTensors(config()) is a programming error, not bad input.
    std::fprintf(stderr, "aaren::Model::tensor: model '%s' has no tensor '%s'\n", name_.c_str(),
                 name.c_str());
    std::abort();
  }
  return it->second;
}

int64_t Model::num_parameters() const {
  int64_t total = 0;
  for (const auto& [name, tensor] : tensors_) total += tensor.num_elements();
  return total;
}

}  // namespace aaren
