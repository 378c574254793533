// SPDX-License-Identifier: Apache-2.0
// Server logs: spdlog to stderr, one line per event, as logfmt text
// (`ts=... level=info msg="listening" port=50051`) or JSON objects (--log_format=json), with a
// level threshold (--log_level). Thread-safe.
#ifndef AAREN_SERVER_LOGGING_H_
#define AAREN_SERVER_LOGGING_H_

#include <initializer_list>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace aaren {

enum class LogLevel { kDebug, kInfo, kWarn, kError };

// `level`: debug|info|warn|error; `format`: text|json. INVALID_ARGUMENT naming the flag.
absl::Status InitLogging(absl::string_view level, absl::string_view format);

using LogField = std::pair<absl::string_view, std::string>;
void Log(LogLevel level, absl::string_view msg, std::initializer_list<LogField> fields = {});

}  // namespace aaren

#endif  // AAREN_SERVER_LOGGING_H_
