// SPDX-License-Identifier: Apache-2.0
// Request inputs as the engine takes them (owned copies, no protobuf), and their validation
// against a model, with messages naming the request field.
#ifndef AAREN_ENGINE_INPUT_VALIDATION_H_
#define AAREN_ENGINE_INPUT_VALIDATION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "core/mca.h"
#include "core/model_config.h"

namespace aaren {

// One run of tokens of a sequence: token ids (tokens models) or row-major [n, n_features]
// features (features models). Exactly one is non-empty once validated.
struct SequenceInput {
  std::vector<int32_t> tokens;
  std::vector<float> features;

  // Tokens in the run for a model with `n_features` floats per token (0 for tokens models).
  int64_t length(int64_t n_features) const {
    return !tokens.empty() || n_features <= 0 ? static_cast<int64_t>(tokens.size())
                                              : static_cast<int64_t>(features.size()) / n_features;
  }
  bool empty() const { return tokens.empty() && features.empty(); }
};

// Checks `input` for `config`: the model's input field only; token ids in [0, vocab_size);
// feature count a multiple of n_features and every value finite; at most `max_tokens` tokens;
// not empty unless `allow_empty`. INVALID_ARGUMENT naming `field` and the element, e.g.
// "input.tokens[3]: token id 99 out of range [0, 43)".
absl::Status ValidateInput(const ModelConfig& config, const SequenceInput& input,
                           absl::string_view field, int64_t max_tokens, bool allow_empty);

// A 64-bit fingerprint of an input (FNV-1a over its bytes): how a retried append is recognised.
uint64_t InputFingerprint(const SequenceInput& input);

// Checks MCA options: when enabled, alpha must be finite and >= 0. INVALID_ARGUMENT naming
// `field`.alpha, e.g. "mca.alpha: -1 is not a finite number >= 0". Disabled options are not
// checked (their alpha and seed are ignored).
absl::Status ValidateMca(const McaOptions& mca, absl::string_view field);

// InputFingerprint(input) combined with the MCA options when enabled (alpha and seed change the
// outputs, so a retry must repeat them to be recognised); equal to InputFingerprint without MCA.
uint64_t RetryFingerprint(const SequenceInput& input, const McaOptions& mca);

// A client-supplied name (model, version, id) as an error message may quote it: at most
// kQuotedChars characters, non-printable bytes C-escaped, "..." when cut. Names are quoted only
// through this, so that no message carries a client's arbitrary bytes or length.
inline constexpr size_t kQuotedChars = 64;
std::string Quoted(absl::string_view name);

}  // namespace aaren

#endif  // AAREN_ENGINE_INPUT_VALIDATION_H_
