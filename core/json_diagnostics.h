// SPDX-License-Identifier: Apache-2.0
// Diagnostics for JSON that failed to parse: nlohmann's non-throwing parse says neither where nor
// why, so this re-reads the text with a SAX handler that records the first syntax error.
#ifndef AAREN_CORE_JSON_DIAGNOSTICS_H_
#define AAREN_CORE_JSON_DIAGNOSTICS_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"
#include "nlohmann/json_fwd.hpp"

namespace aaren {

// The first syntax error in `text`, e.g. "parse error at line 1, column 2: syntax error while
// parsing object key - ...", or "syntax error" if nlohmann reports none. Never throws.
// Thread-safe.
std::string DescribeJsonSyntaxError(absl::string_view text);

// A short rendering of a parsed value for messages: a scalar as its JSON text cut to `max_chars`
// ("2.5", "\"x\"", "null"), an array or object by type and size only ("array of 3 elements"),
// because dumping one recurses once per nesting level and a deeply nested value read from a file
// or a request would overflow the stack. Never throws.
std::string DescribeJsonValue(const nlohmann::json& value, size_t max_chars = 64);

// How deeply `value` nests (a scalar is 0, [[1]] is 2), computed without recursion: callers that
// dump, copy into protobuf or otherwise recurse over a value check this first.
size_t JsonDepth(const nlohmann::json& value);

}  // namespace aaren

#endif  // AAREN_CORE_JSON_DIAGNOSTICS_H_
