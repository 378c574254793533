// SPDX-License-Identifier: Apache-2.0
#include "core/json_diagnostics.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace aaren {
namespace {

using Json = nlohmann::json;

// Accepts every event and records the first parse error.
struct SyntaxErrorRecorder : nlohmann::json_sax<Json> {
  std::string error;
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return true; }
  bool key(string_t&) override { return true; }
  bool end_object() override { return true; }
  bool start_array(std::size_t) override { return true; }
  bool end_array() override { return true; }
  bool parse_error(std::size_t, const std::string&,
                   const nlohmann::detail::exception& ex) override {
    // Drop nlohmann's "[json.exception.parse_error.101] " tag; keep "parse error at ...".
    error = ex.what();
    if (const size_t tag_end = error.find("] ");
        error.rfind("[json.exception", 0) == 0 && tag_end != std::string::npos) {
      error.erase(0, tag_end + 2);
    }
    return false;
  }
};

}  // namespace

std::string DescribeJsonSyntaxError(absl::string_view text) {
  SyntaxErrorRecorder recorder;
  Json::sax_parse(text.begin(), text.end(), &recorder);
  return recorder.error.empty() ? std::string("syntax error") : recorder.error;
}

std::string DescribeJsonValue(const Json& value, size_t max_chars) {
  if (value.is_array() || value.is_object()) {
    const size_t n = value.size();
    return absl::StrCat(value.type_name(), " of ", n, value.is_array() ? " element" : " key",
                        n == 1 ? "" : "s");
  }
  std::string text = value.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (text.size() > max_chars) text = absl::StrCat(text.substr(0, max_chars - 3), "...");
  return text;
}

size_t JsonDepth(const Json& value) {
  size_t deepest = 0;
  std::vector<std::pair<const Json*, size_t>> pending = {{&value, 0}};
  while (!pending.empty()) {
    auto [v, depth] = pending.back();
    pending.pop_back();
    if (!v->is_array() && !v->is_object()) continue;
    deepest = std::max(deepest, depth + 1);
    for (const Json& child : *v) pending.emplace_back(&child, depth + 1);
  }
  return deepest;
}

}  // namespace aaren
