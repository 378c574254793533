// SPDX-License-Identifier: Apache-2.0
#include "server/logging.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace aaren {
namespace {

std::atomic<bool> g_json{false};

spdlog::level::level_enum ToSpd(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return spdlog::level::debug;
    case LogLevel::kInfo:
      return spdlog::level::info;
    case LogLevel::kWarn:
      return spdlog::level::warn;
    case LogLevel::kError:
      return spdlog::level::err;
  }
  return spdlog::level::info;
}

// logfmt value: bare when it has no space, quote or '=', else quoted with escapes.
std::string LogfmtValue(absl::string_view v) {
  if (!v.empty() && v.find_first_of(" \"=\t\n") == absl::string_view::npos) return std::string(v);
  return nlohmann::json(std::string(v)).dump();
}

}  // namespace

absl::Status InitLogging(absl::string_view level, absl::string_view format) {
  auto logger = spdlog::stderr_logger_mt("aaren");
  spdlog::set_default_logger(logger);
  if (level == "debug") {
    spdlog::set_level(spdlog::level::debug);
  } else if (level == "info") {
    spdlog::set_level(spdlog::level::info);
  } else if (level == "warn") {
    spdlog::set_level(spdlog::level::warn);
  } else if (level == "error") {
    spdlog::set_level(spdlog::level::err);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--log_level: '", level, "' is not one of debug, info, warn, error"));
  }
  if (format == "json") {
    g_json = true;
    spdlog::set_pattern(R"({"ts":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l",%v})",
                        spdlog::pattern_time_type::utc);
  } else if (format == "text") {
    spdlog::set_pattern("ts=%Y-%m-%dT%H:%M:%S.%fZ level=%l %v", spdlog::pattern_time_type::utc);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--log_format: '", format, "' is not one of text, json"));
  }
  spdlog::flush_on(spdlog::level::info);
  return absl::OkStatus();
}

void Log(LogLevel level, absl::string_view msg, std::initializer_list<LogField> fields) {
  const auto spd_level = ToSpd(level);
  if (!spdlog::should_log(spd_level)) return;
  std::string line;
  if (g_json) {
    nlohmann::json body = {{"msg", std::string(msg)}};
    for (const auto& [k, v] : fields) body[std::string(k)] = v;
    line = body.dump();
    line = line.substr(1, line.size() - 2);  // the pattern supplies the braces
  } else {
    line = absl::StrCat("msg=", LogfmtValue(msg));
    for (const auto& [k, v] : fields) absl::StrAppend(&line, " ", k, "=", LogfmtValue(v));
  }
  spdlog::log(spd_level, "{}", line);
}

}  // namespace aaren
