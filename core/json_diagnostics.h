// SPDX-License-Identifier: Apache-2.0
// Diagnostics for JSON that failed to parse: nlohmann's non-throwing parse says neither where nor
// why, so this re-reads the text with a SAX handler that records the first syntax error.
#ifndef AAREN_CORE_JSON_DIAGNOSTICS_H_
#define AAREN_CORE_JSON_DIAGNOSTICS_H_

#include <string>

#include "absl/strings/string_view.h"

namespace aaren {

// The first syntax error in `text`, e.g. "parse error at line 1, column 2: syntax error while
// parsing object key - ...", or "syntax error" if nlohmann reports none. Never throws.
// Thread-safe.
std::string DescribeJsonSyntaxError(absl::string_view text);

}  // namespace aaren

#endif  // AAREN_CORE_JSON_DIAGNOSTICS_H_
