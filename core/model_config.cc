// SPDX-License-Identifier: Apache-2.0
#include "core/model_config.h"

#include "core/json_diagnostics.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "core/status_macros.h"
#include "nlohmann/json.hpp"

namespace aaren {
namespace {

using Json = nlohmann::json;

constexpr absl::string_view kPrefix = "config.json: ";
constexpr uintmax_t kMaxConfigBytes = 1 << 20;

absl::Status ConfigError(absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(kPrefix, message));
}

// A short rendering of a JSON value for diagnostics: its type, and a scalar's value (never
// throws, bounded length, no recursion into containers).
std::string Describe(const Json& value) {
  if (value.is_null()) return "null";
  if (value.is_array() || value.is_object()) return DescribeJsonValue(value);
  return absl::StrCat(value.type_name(), " ", DescribeJsonValue(value));
}

// Reads a required integer field; `field` is its dotted name for messages.
absl::StatusOr<int64_t> GetInt(const Json& object, const char* key, absl::string_view field) {
  auto it = object.find(key);
  if (it == object.end()) {
    return ConfigError(absl::StrCat("missing required key \"", field, "\""));
  }
  const Json& value = *it;
  if (!value.is_number_integer()) {
    return ConfigError(absl::StrCat(field, " must be an integer, got ", Describe(value)));
  }
  if (value.is_number_unsigned()) {
    const uint64_t u = value.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return ConfigError(absl::StrCat(field, " is out of range, got ", u));
    }
    return static_cast<int64_t>(u);
  }
  return value.get<int64_t>();
}

absl::StatusOr<std::string> GetString(const Json& object, const char* key,
                                      absl::string_view field) {
  auto it = object.find(key);
  if (it == object.end()) {
    return ConfigError(absl::StrCat("missing required key \"", field, "\""));
  }
  if (!it->is_string()) {
    return ConfigError(absl::StrCat(field, " must be a string, got ", Describe(*it)));
  }
  return it->get<std::string>();
}

// Checks lo <= value <= hi, naming the field.
absl::Status CheckRange(absl::string_view field, int64_t value, int64_t lo, int64_t hi) {
  if (value < lo) {
    return absl::InvalidArgumentError(absl::StrCat(field, " must be >= ", lo, ", got ", value));
  }
  if (value > hi) {
    return absl::InvalidArgumentError(absl::StrCat(field, " must be <= ", hi, ", got ", value));
  }
  return absl::OkStatus();
}

}  // namespace

absl::string_view InputKindName(InputKind kind) {
  return kind == InputKind::kTokens ? "tokens" : "features";
}

absl::string_view PositionKindName(PositionKind kind) {
  return kind == PositionKind::kNone ? "none" : "sinusoidal";
}

absl::Status ValidateModelConfig(const ModelConfig& config) {
  if (config.model_type != "aaren") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown model_type \"", config.model_type, "\" (expected \"aaren\")"));
  }
  RETURN_IF_ERROR(CheckRange("d_model", config.d_model, 1, kMaxDim));
  RETURN_IF_ERROR(CheckRange("n_heads", config.n_heads, 1, kMaxDim));
  if (config.d_model % config.n_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "d_model (", config.d_model, ") must be divisible by n_heads (", config.n_heads, ")"));
  }
  RETURN_IF_ERROR(CheckRange("n_layers", config.n_layers, 1, kMaxLayers));
  RETURN_IF_ERROR(CheckRange("d_ff", config.d_ff, 1, kMaxDim));
  switch (config.input_kind) {
    case InputKind::kTokens:
      RETURN_IF_ERROR(CheckRange("input.vocab_size", config.vocab_size, 1, kMaxVocab));
      if (config.n_features != 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("input.n_features must not be set when input.kind is \"tokens\", got ",
                         config.n_features));
      }
      break;
    case InputKind::kFeatures:
      RETURN_IF_ERROR(CheckRange("input.n_features", config.n_features, 1, kMaxDim));
      if (config.vocab_size != 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("input.vocab_size must not be set when input.kind is \"features\", got ",
                         config.vocab_size));
      }
      break;
    default:
      return absl::InvalidArgumentError("input.kind is invalid");
  }
  RETURN_IF_ERROR(CheckRange("output_dim", config.output_dim, 1, kMaxDim));
  if (config.position != PositionKind::kNone && config.position != PositionKind::kSinusoidal) {
    return absl::InvalidArgumentError("position is invalid");
  }
  // Backends compute in float32: an eps that rounds to 0 (or a subnormal) there is no eps at all.
  if (!std::isfinite(config.norm_eps) || !(config.norm_eps >= std::numeric_limits<float>::min()) ||
      config.norm_eps > std::numeric_limits<float>::max()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("norm_eps must be a positive normal float32 (>= %g), got %g",
                        std::numeric_limits<float>::min(), config.norm_eps));
  }
  return absl::OkStatus();
}

absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text) {
  const Json root = Json::parse(json_text.begin(), json_text.end(), /*cb=*/nullptr,
                                /*allow_exceptions=*/false);
  if (root.is_discarded()) {
    return ConfigError(absl::StrCat("not valid JSON: ", DescribeJsonSyntaxError(json_text)));
  }
  if (!root.is_object()) {
    return ConfigError(absl::StrCat("must be a JSON object, got ", Describe(root)));
  }

  ModelConfig config;
  ASSIGN_OR_RETURN(config.model_type, GetString(root, "model_type", "model_type"));
  if (config.model_type != "aaren") {
    return ConfigError(
        absl::StrCat("unknown model_type \"", config.model_type, "\" (expected \"aaren\")"));
  }
  ASSIGN_OR_RETURN(config.d_model, GetInt(root, "d_model", "d_model"));
  ASSIGN_OR_RETURN(config.n_heads, GetInt(root, "n_heads", "n_heads"));
  ASSIGN_OR_RETURN(config.n_layers, GetInt(root, "n_layers", "n_layers"));
  ASSIGN_OR_RETURN(config.d_ff, GetInt(root, "d_ff", "d_ff"));

  auto input_it = root.find("input");
  if (input_it == root.end()) return ConfigError("missing required key \"input\"");
  const Json& input = *input_it;
  if (!input.is_object()) {
    return ConfigError(absl::StrCat("input must be an object, got ", Describe(input)));
  }
  ASSIGN_OR_RETURN(std::string kind, GetString(input, "kind", "input.kind"));
  if (kind == "tokens") {
    config.input_kind = InputKind::kTokens;
    ASSIGN_OR_RETURN(config.vocab_size, GetInt(input, "vocab_size", "input.vocab_size"));
    if (input.contains("n_features")) {
      return ConfigError("input.n_features must not be set when input.kind is \"tokens\"");
    }
  } else if (kind == "features") {
    config.input_kind = InputKind::kFeatures;
    ASSIGN_OR_RETURN(config.n_features, GetInt(input, "n_features", "input.n_features"));
    if (input.contains("vocab_size")) {
      return ConfigError("input.vocab_size must not be set when input.kind is \"features\"");
    }
  } else {
    return ConfigError(
        absl::StrCat("input.kind must be \"tokens\" or \"features\", got \"", kind, "\""));
  }
  ASSIGN_OR_RETURN(config.output_dim, GetInt(root, "output_dim", "output_dim"));

  if (auto it = root.find("position"); it != root.end()) {
    if (!it->is_string()) {
      return ConfigError(absl::StrCat("position must be a string, got ", Describe(*it)));
    }
    const std::string& position = it->get_ref<const std::string&>();
    if (position == "none") {
      config.position = PositionKind::kNone;
    } else if (position == "sinusoidal") {
      config.position = PositionKind::kSinusoidal;
    } else {
      return ConfigError(
          absl::StrCat("position must be \"none\" or \"sinusoidal\", got \"", position, "\""));
    }
  }
  if (auto it = root.find("norm_eps"); it != root.end()) {
    if (!it->is_number()) {
      return ConfigError(absl::StrCat("norm_eps must be a number, got ", Describe(*it)));
    }
    config.norm_eps = it->get<double>();
  }

  if (absl::Status status = ValidateModelConfig(config); !status.ok()) {
    return ConfigError(status.message());
  }
  return config;
}

absl::StatusOr<ModelConfig> ReadModelConfig(const std::filesystem::path& path) {
  std::error_code ec;
  const std::filesystem::file_status file_status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(file_status)) {
    return absl::NotFoundError(absl::StrCat(path.string(), ": no such file"));
  }
  if (!std::filesystem::is_regular_file(file_status)) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": not a regular file"));
  }
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat(
        path.string(), ": cannot open: ", errno != 0 ? std::strerror(errno) : "unknown error"));
  }
  // A config is a few hundred bytes; a larger file is not one (and is not read into memory).
  if (const auto size = std::filesystem::file_size(path, ec); !ec && size > kMaxConfigBytes) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": ", size,
                                                   " bytes, more than a config.json may hold (",
                                                   kMaxConfigBytes, ")"));
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": read error"));
  }
  absl::StatusOr<ModelConfig> config = ParseModelConfig(buffer.str());
  if (!config.ok()) {
    // Replace the generic "config.json: " prefix with the actual path.
    absl::string_view message = config.status().message();
    if (message.substr(0, kPrefix.size()) == kPrefix) message.remove_prefix(kPrefix.size());
    return absl::Status(config.status().code(), absl::StrCat(path.string(), ": ", message));
  }
  return config;
}

std::string ModelConfigToJson(const ModelConfig& config) {
  nlohmann::ordered_json root;
  root["model_type"] = config.model_type;
  root["d_model"] = config.d_model;
  root["n_heads"] = config.n_heads;
  root["n_layers"] = config.n_layers;
  root["d_ff"] = config.d_ff;
  nlohmann::ordered_json input;
  input["kind"] = std::string(InputKindName(config.input_kind));
  if (config.input_kind == InputKind::kTokens) {
    input["vocab_size"] = config.vocab_size;
  } else {
    input["n_features"] = config.n_features;
  }
  root["input"] = std::move(input);
  root["output_dim"] = config.output_dim;
  root["position"] = std::string(PositionKindName(config.position));
  root["norm_eps"] = config.norm_eps;
  return root.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

}  // namespace aaren
