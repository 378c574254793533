// SPDX-License-Identifier: Apache-2.0
// Human-readable rendering of model output rows for the interactive subcommands: the most likely
// next tokens of a row of logits (token models) or the row's values (feature models).
#ifndef AAREN_CLIENT_CLI_TOKEN_DISPLAY_H_
#define AAREN_CLIENT_CLI_TOKEN_DISPLAY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "client/cli/vocab.h"

namespace aaren::cli {

struct TokenProbability {
  int32_t token;
  double probability;  // under softmax(logits)
};

// The min(k, size) most likely tokens of `logits` under softmax, most likely first (lower id
// first on ties). Empty for empty logits or k < 1.
std::vector<TokenProbability> TopTokens(absl::Span<const float> logits, int k);

// "'e' 0.634  'a' 0.120" with a vocab, "23 0.634  19 0.120" without.
std::string FormatTopTokens(absl::Span<const TokenProbability> top, const Vocab* vocab);

// "0.125, -1.5" (shortest round-trip form of each float).
std::string FormatValues(absl::Span<const float> values);

}  // namespace aaren::cli

#endif  // AAREN_CLIENT_CLI_TOKEN_DISPLAY_H_
