// SPDX-License-Identifier: Apache-2.0
#include "client/cli/line_input.h"

#include <cmath>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace aaren::cli {
namespace {

std::vector<absl::string_view> SplitItems(absl::string_view text) {
  return absl::StrSplit(text, absl::ByAnyChar(" \t\r\n,"), absl::SkipEmpty());
}

}  // namespace

absl::StatusOr<std::vector<int32_t>> ParseTokenIds(absl::string_view text, int64_t vocab_size) {
  std::vector<int32_t> tokens;
  for (absl::string_view item : SplitItems(text)) {
    int32_t id = 0;
    if (!absl::SimpleAtoi(item, &id) || id < 0 || (vocab_size > 0 && id >= vocab_size)) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokens[", tokens.size(), "]: '", item, "' is not a token id in [0, ",
                       vocab_size > 0 ? absl::StrCat(vocab_size) : std::string("2^31"), ")"));
    }
    tokens.push_back(id);
  }
  return tokens;
}

absl::StatusOr<std::vector<float>> ParseFeatureValues(absl::string_view text, int64_t n_features) {
  std::vector<float> values;
  for (absl::string_view item : SplitItems(text)) {
    float v = 0;
    if (!absl::SimpleAtof(item, &v) || !std::isfinite(v)) {
      return absl::InvalidArgumentError(
          absl::StrCat("features[", values.size(), "]: '", item, "' is not a finite number"));
    }
    values.push_back(v);
  }
  if (values.empty() || n_features < 1 || values.size() % n_features != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("got ", values.size(),
                     " feature values; need a positive multiple of n_features (", n_features, ")"));
  }
  return values;
}

absl::StatusOr<v1::Sequence> ParseSequenceText(absl::string_view text, const v1::ModelInfo& model,
                                               const Vocab* vocab) {
  v1::Sequence sequence;
  if (model.input_kind() == "features") {
    absl::StatusOr<std::vector<float>> values = ParseFeatureValues(text, model.n_features());
    if (!values.ok()) return values.status();
    sequence.mutable_features()->Add(values->begin(), values->end());
    return sequence;
  }
  absl::StatusOr<std::vector<int32_t>> tokens =
      vocab != nullptr ? vocab->Encode(text) : ParseTokenIds(text, model.vocab_size());
  if (!tokens.ok()) return tokens.status();
  if (tokens->empty()) return absl::InvalidArgumentError("empty input: no tokens");
  sequence.mutable_tokens()->Add(tokens->begin(), tokens->end());
  return sequence;
}

}  // namespace aaren::cli
