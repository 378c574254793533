// SPDX-License-Identifier: Apache-2.0
#include "core/backend.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

namespace aaren {

absl::Status ValidateSpans(const ModelConfig& config, absl::Span<const Span> spans) {
  const bool tokens_input = config.input_kind == InputKind::kTokens;
  const int64_t n_features = config.n_features;
  std::vector<std::pair<const float*, size_t>> claimed;  // (state, span) of non-empty spans
  for (size_t i = 0; i < spans.size(); ++i) {
    const Span& span = spans[i];
    const std::string where = absl::StrCat("spans[", i, "]");
    int64_t length = 0;
    if (tokens_input) {
      if (!span.features.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ".features: model input kind is tokens; send tokens"));
      }
      for (size_t j = 0; j < span.tokens.size(); ++j) {
        const int32_t t = span.tokens[j];
        if (t < 0 || t >= config.vocab_size) {
          return absl::InvalidArgumentError(absl::StrCat(where, ".tokens[", j, "]: token id ", t,
                                                         " out of range [0, ", config.vocab_size,
                                                         ")"));
        }
      }
      length = static_cast<int64_t>(span.tokens.size());
    } else {
      if (!span.tokens.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ".tokens: model input kind is features; send features"));
      }
      const int64_t n = static_cast<int64_t>(span.features.size());
      if (n % n_features != 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ".features: ", n, " values is not a multiple of n_features ", n_features));
      }
      for (int64_t j = 0; j < n; ++j) {
        if (!std::isfinite(span.features[j])) {
          return absl::InvalidArgumentError(
              absl::StrCat(where, ".features[", j, "]: non-finite value (row ", j / n_features,
                           ", column ", j % n_features, ")"));
        }
      }
      length = n / n_features;
    }
    if (span.mca.enabled && !(std::isfinite(span.mca.alpha) && span.mca.alpha >= 0.0f)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".mca.alpha: ", span.mca.alpha, " is not a finite number >= 0"));
    }
    if (length == 0) continue;
    if (span.state == nullptr)
      return absl::InvalidArgumentError(absl::StrCat(where, ".state: null"));
    if (span.position == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(where, ".position: null"));
    }
    if (*span.position < 0 || *span.position > std::numeric_limits<int64_t>::max() - length) {
      return absl::InvalidArgumentError(absl::StrCat(where, ".position: ", *span.position, " + ",
                                                     length, " tokens is out of range"));
    }
    if (span.output != OutputSelect::kNone && span.outputs == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(where, ".outputs: null"));
    }
    claimed.push_back({span.state, i});
  }
  // No two spans may touch the same state floats or position counter: their updates would race.
  const int64_t state_floats = config.state_floats();
  std::sort(claimed.begin(), claimed.end());
  for (size_t k = 1; k < claimed.size(); ++k) {
    const auto [prev, prev_span] = claimed[k - 1];
    const auto [cur, cur_span] = claimed[k];
    if (cur < prev + state_floats) {
      const size_t hi = std::max(prev_span, cur_span), lo = std::min(prev_span, cur_span);
      return absl::InvalidArgumentError(
          absl::StrCat("spans[", hi, "].state: ", cur == prev ? "same buffer as" : "overlaps",
                       " spans[", lo, "].state"));
    }
  }
  absl::flat_hash_map<const int64_t*, size_t> position_owner;
  for (size_t i = 0; i < spans.size(); ++i) {
    if (spans[i].length(n_features) == 0) continue;
    auto [it, inserted] = position_owner.emplace(spans[i].position, i);
    if (!inserted) {
      return absl::InvalidArgumentError(absl::StrCat(
          "spans[", i, "].position: same counter as spans[", it->second, "].position"));
    }
  }
  return absl::OkStatus();
}

}  // namespace aaren
