// SPDX-License-Identifier: Apache-2.0
#include "engine/input_validation.h"

#include <cmath>
#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace aaren {

absl::Status ValidateInput(const ModelConfig& config, const SequenceInput& input,
                           absl::string_view field, int64_t max_tokens, bool allow_empty) {
  const bool takes_tokens = config.input_kind == InputKind::kTokens;
  if (takes_tokens && !input.features.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field,
                                                   ".features: the model takes tokens (vocab_size ",
                                                   config.vocab_size, "), not features"));
  }
  if (!takes_tokens && !input.tokens.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field,
                                                   ".tokens: the model takes features (n_features ",
                                                   config.n_features, "), not tokens"));
  }
  if (input.empty()) {
    if (allow_empty) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(field, takes_tokens ? ".tokens" : ".features",
                                                   ": empty (at least one token)"));
  }
  if (takes_tokens) {
    for (size_t i = 0; i < input.tokens.size(); ++i) {
      const int32_t t = input.tokens[i];
      if (t < 0 || t >= config.vocab_size) {
        return absl::InvalidArgumentError(absl::StrCat(
            field, ".tokens[", i, "]: token id ", t, " out of range [0, ", config.vocab_size, ")"));
      }
    }
  } else {
    const int64_t n = static_cast<int64_t>(input.features.size());
    if (n % config.n_features != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ".features: ", n, " values is not a multiple of n_features ", config.n_features));
    }
    for (size_t i = 0; i < input.features.size(); ++i) {
      if (!std::isfinite(input.features[i])) {
        return absl::InvalidArgumentError(absl::StrCat(
            field, ".features[", i, "]: ", input.features[i], " is not a finite value"));
      }
    }
  }
  const int64_t length = input.length(config.n_features);
  if (length > max_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", length,
                                                   " tokens exceed the limit of ", max_tokens,
                                                   " per sequence (--max_sequence_tokens)"));
  }
  return absl::OkStatus();
}

uint64_t InputFingerprint(const SequenceInput& input) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  };
  const uint64_t sizes[2] = {input.tokens.size(), input.features.size()};
  mix(sizes, sizeof(sizes));
  mix(input.tokens.data(), input.tokens.size() * sizeof(int32_t));
  mix(input.features.data(), input.features.size() * sizeof(float));
  return h;
}

absl::Status ValidateMca(const McaOptions& mca, absl::string_view field) {
  if (mca.enabled && !(std::isfinite(mca.alpha) && mca.alpha >= 0.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".alpha: ", mca.alpha, " is not a finite number >= 0"));
  }
  return absl::OkStatus();
}

uint64_t RetryFingerprint(const SequenceInput& input, const McaOptions& mca) {
  uint64_t h = InputFingerprint(input);
  if (!mca.enabled) return h;
  uint32_t alpha_bits;
  std::memcpy(&alpha_bits, &mca.alpha, sizeof(alpha_bits));
  const uint64_t parts[3] = {1, alpha_bits, mca.seed};
  const auto* p = reinterpret_cast<const uint8_t*>(parts);
  for (size_t i = 0; i < sizeof(parts); ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

std::string Quoted(absl::string_view name) {
  std::string out = absl::CHexEscape(name.substr(0, kQuotedChars));
  if (name.size() > kQuotedChars) out += "...";
  return out;
}

}  // namespace aaren
