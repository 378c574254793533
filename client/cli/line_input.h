// SPDX-License-Identifier: Apache-2.0
// Turning text typed on a command line or on stdin into model inputs (aaren.v1.Sequence), checked
// against the model locally so a typo is reported before it reaches (and ends) a Stream:
//   token models:    "3 1 4" or "3,1,4" (ids in [0, vocab_size)), or plain text with a Vocab;
//   feature models:  "0.1, 0.2, ..." or "0.1 0.2 ...": a positive multiple of n_features
//                    finite values, row-major (n_features values per token).
#ifndef AAREN_CLIENT_CLI_LINE_INPUT_H_
#define AAREN_CLIENT_CLI_LINE_INPUT_H_

#include <cstdint>
#include <vector>

#include "aaren/v1/aaren.pb.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/cli/vocab.h"

namespace aaren::cli {

// Token ids separated by whitespace and/or commas, each in [0, vocab_size) (vocab_size 0: no
// upper bound). INVALID_ARGUMENT naming the first bad item.
absl::StatusOr<std::vector<int32_t>> ParseTokenIds(absl::string_view text, int64_t vocab_size);

// Finite float32 values separated by whitespace and/or commas; their count must be a positive
// multiple of n_features. INVALID_ARGUMENT naming the first bad item.
absl::StatusOr<std::vector<float>> ParseFeatureValues(absl::string_view text, int64_t n_features);

// One input for `model`: with `vocab` (token models only) the text's characters, otherwise ids
// or feature values as above. INVALID_ARGUMENT when the text is empty or does not fit the model.
absl::StatusOr<v1::Sequence> ParseSequenceText(absl::string_view text, const v1::ModelInfo& model,
                                               const Vocab* vocab);

}  // namespace aaren::cli

#endif  // AAREN_CLIENT_CLI_LINE_INPUT_H_
