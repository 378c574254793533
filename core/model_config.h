// SPDX-License-Identifier: Apache-2.0
// ModelConfig: the parsed and validated `config.json` of an Aaren model directory
// (DESIGN.md section 2). Parsing uses nlohmann-json; every problem is an INVALID_ARGUMENT status
// naming the offending field. A validated config guarantees the invariants listed on the struct,
// so code downstream (loader, backends) never re-checks them.
#ifndef AAREN_CORE_MODEL_CONFIG_H_
#define AAREN_CORE_MODEL_CONFIG_H_

#include <cstdint>
#include <filesystem>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace aaren {

enum class InputKind { kTokens, kFeatures };
enum class PositionKind { kNone, kSinusoidal };

absl::string_view InputKindName(InputKind kind);        // "tokens" | "features"
absl::string_view PositionKindName(PositionKind kind);  // "none" | "sinusoidal"

// Upper bounds that keep every size computation far from int64 overflow and reject
// nonsense configs before any allocation.
inline constexpr int64_t kMaxDim = 1 << 16;    // d_model, d_ff, output_dim, n_features
inline constexpr int64_t kMaxVocab = 1 << 24;  // vocab_size
inline constexpr int64_t kMaxLayers = 1024;    // n_layers

// Invariants after validation: d_model, n_heads, n_layers, d_ff, output_dim >= 1;
// d_model % n_heads == 0; exactly one of vocab_size (tokens) / n_features (features) is >= 1;
// norm_eps > 0 and finite; all sizes within the kMax* bounds.
struct ModelConfig {
  std::string model_type = "aaren";
  int64_t d_model = 0;
  int64_t n_heads = 0;
  int64_t n_layers = 0;
  int64_t d_ff = 0;
  InputKind input_kind = InputKind::kTokens;
  int64_t vocab_size = 0;  // input_kind == kTokens
  int64_t n_features = 0;  // input_kind == kFeatures
  int64_t output_dim = 0;
  PositionKind position = PositionKind::kNone;
  double norm_eps = 1e-5;

  int64_t d_head() const { return d_model / n_heads; }
  // Floats in one session's recurrent state: n_layers x n_heads x (m, u, w[d_head]).
  int64_t state_floats() const { return n_layers * n_heads * (2 + d_head()); }
  // Bytes of one session's state: the floats above plus the int64 position counter.
  int64_t state_bytes() const { return state_floats() * 4 + 8; }
};

// Checks the invariants documented on ModelConfig. INVALID_ARGUMENT naming the field otherwise.
absl::Status ValidateModelConfig(const ModelConfig& config);

// Parses and validates config.json text. Unknown keys are ignored (forward compatibility);
// missing required keys, wrong JSON types and invalid values are INVALID_ARGUMENT naming the key,
// e.g. "config.json: input.vocab_size must be >= 1, got 0".
absl::StatusOr<ModelConfig> ParseModelConfig(absl::string_view json_text);

// Reads and parses a config.json file. NOT_FOUND if it does not exist.
absl::StatusOr<ModelConfig> ReadModelConfig(const std::filesystem::path& path);

// Serialises to config.json text (round-trips through ParseModelConfig).
std::string ModelConfigToJson(const ModelConfig& config);

}  // namespace aaren

#endif  // AAREN_CORE_MODEL_CONFIG_H_
