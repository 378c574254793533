// SPDX-License-Identifier: Apache-2.0
#include "client/cli/token_display.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace aaren::cli {

std::vector<TokenProbability> TopTokens(absl::Span<const float> logits, int k) {
  if (logits.empty() || k < 1) return {};
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<double>(x) - max_logit);
  std::vector<int32_t> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  const size_t n = std::min(static_cast<size_t>(k), ids.size());
  std::partial_sort(ids.begin(), ids.begin() + n, ids.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  std::vector<TokenProbability> top;
  for (size_t i = 0; i < n; ++i) {
    top.push_back({ids[i], std::exp(static_cast<double>(logits[ids[i]]) - max_logit) / sum});
  }
  return top;
}

std::string FormatTopTokens(absl::Span<const TokenProbability> top, const Vocab* vocab) {
  std::string out;
  for (const TokenProbability& t : top) {
    absl::StrAppend(&out, out.empty() ? "" : "  ",
                    vocab != nullptr ? vocab->Display(t.token) : absl::StrCat(t.token),
                    absl::StrFormat(" %.3f", t.probability));
  }
  return out;
}

std::string FormatValues(absl::Span<const float> values) {
  std::string out;
  for (float v : values) {
    char buf[32];
    auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
    absl::StrAppend(&out, out.empty() ? "" : ", ", absl::string_view(buf, end - buf));
  }
  return out;
}

}  // namespace aaren::cli
