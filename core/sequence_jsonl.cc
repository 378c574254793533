// SPDX-License-Identifier: Apache-2.0
#include "core/sequence_jsonl.h"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "core/json_diagnostics.h"

namespace aaren {
namespace {

using nlohmann::json;

absl::Status LineError(int64_t line, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat("line ", line, ": ", message));
}

std::string Describe(const json& v) { return DescribeJsonValue(v, 40); }

// An "id" is echoed into the output line as JSON; a deeper one is not an id (and dumping it would
// recurse once per level).
constexpr size_t kMaxIdDepth = 32;

absl::Status ParseTokens(const json& tokens, int64_t line, const ModelConfig& config,
                         SequenceRecord& rec) {
  if (!tokens.is_array()) {
    return LineError(line, absl::StrCat("field 'tokens': expected an array of integers, got ",
                                        Describe(tokens)));
  }
  rec.tokens.reserve(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    const json& t = tokens[i];
    if (!t.is_number_integer()) {
      return LineError(
          line, absl::StrCat("field 'tokens[", i, "]': expected an integer, got ", Describe(t)));
    }
    // Unsigned JSON integers may exceed int64; compare them as uint64.
    const bool in_range = t.is_number_unsigned()
                              ? t.get<uint64_t>() < static_cast<uint64_t>(config.vocab_size)
                              : t.get<int64_t>() >= 0 && t.get<int64_t>() < config.vocab_size;
    if (!in_range) {
      return LineError(line, absl::StrCat("field 'tokens[", i, "]': token id ", Describe(t),
                                          " out of range [0, ", config.vocab_size, ")"));
    }
    rec.tokens.push_back(static_cast<int32_t>(t.get<int64_t>()));
  }
  rec.length = static_cast<int64_t>(rec.tokens.size());
  return absl::OkStatus();
}

absl::Status ParseFeatures(const json& rows, int64_t line, const ModelConfig& config,
                           SequenceRecord& rec) {
  if (!rows.is_array()) {
    return LineError(
        line, absl::StrCat("field 'features': expected an array of rows, got ", Describe(rows)));
  }
  const int64_t width = config.n_features;
  rec.features.reserve(rows.size() * width);
  for (size_t r = 0; r < rows.size(); ++r) {
    const json& row = rows[r];
    if (!row.is_array() || static_cast<int64_t>(row.size()) != width) {
      return LineError(
          line, absl::StrCat("field 'features[", r, "]': expected an array of ", width,
                             " numbers (n_features), got ",
                             row.is_array() ? absl::StrCat(row.size(), " values") : Describe(row)));
    }
    for (size_t c = 0; c < row.size(); ++c) {
      if (!row[c].is_number()) {
        return LineError(line, absl::StrCat("field 'features[", r, "][", c,
                                            "]': expected a number, got ", Describe(row[c])));
      }
      const double v = row[c].get<double>();
      const float f = static_cast<float>(v);
      if (!std::isfinite(f)) {
        return LineError(line, absl::StrCat("field 'features[", r, "][", c, "]': value ",
                                            Describe(row[c]), " is not finite in float32"));
      }
      rec.features.push_back(f);
    }
  }
  rec.length = static_cast<int64_t>(rows.size());
  return absl::OkStatus();
}

void AppendFloat(std::string& out, float v) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  out.append(buf, end);
}

}  // namespace

absl::StatusOr<SequenceRecord> ParseSequenceLine(absl::string_view text, int64_t line,
                                                 const ModelConfig& config) {
  const json doc = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    // The text is a single line: "at line 1, column 9" says no more than "at column 9".
    return LineError(line, absl::StrCat("invalid JSON: ",
                                        absl::StrReplaceAll(DescribeJsonSyntaxError(text),
                                                            {{"at line 1, column", "at column"}})));
  }
  if (!doc.is_object()) return LineError(line, "expected a JSON object");
  SequenceRecord rec;
  rec.line = line;
  auto id = doc.find("id");
  if (id != doc.end() && JsonDepth(*id) > kMaxIdDepth) {
    return LineError(line,
                     absl::StrCat("field 'id': nested more than ", kMaxIdDepth, " levels deep"));
  }
  rec.id_json = id == doc.end() ? std::to_string(line) : id->dump();

  const bool tokens_input = config.input_kind == InputKind::kTokens;
  const char* field = tokens_input ? "tokens" : "features";
  const char* other = tokens_input ? "features" : "tokens";
  if (doc.contains(other)) {
    return LineError(
        line, absl::StrCat("field '", other, "': the model's input kind is ",
                           std::string(InputKindName(config.input_kind)), "; send '", field, "'"));
  }
  auto value = doc.find(field);
  if (value == doc.end()) return LineError(line, absl::StrCat("missing field '", field, "'"));
  absl::Status st = tokens_input ? ParseTokens(*value, line, config, rec)
                                 : ParseFeatures(*value, line, config, rec);
  if (!st.ok()) return st;
  if (rec.length == 0) return LineError(line, absl::StrCat("field '", field, "': empty sequence"));
  return rec;
}

absl::StatusOr<std::vector<SequenceRecord>> ReadSequenceFile(const std::filesystem::path& path,
                                                             const ModelConfig& config,
                                                             int max_errors) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path.string(), ": input file does not exist"));
  }
  if (std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": is a directory, not a file"));
  }
  std::ifstream in(path);
  if (!in) {
    return absl::PermissionDeniedError(
        absl::StrCat(path.string(), ": cannot open input file: ", std::strerror(errno)));
  }
  std::vector<SequenceRecord> records;
  std::vector<std::string> errors;
  int64_t n_errors = 0;
  std::string text;
  for (int64_t line = 1; std::getline(in, text); ++line) {
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto rec = ParseSequenceLine(text, line, config);
    if (rec.ok()) {
      records.push_back(*std::move(rec));
    } else if (++n_errors <= max_errors) {
      errors.emplace_back(rec.status().message());
    }
  }
  if (n_errors > 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": ", n_errors, " bad input line(s):\n  ",
                     absl::StrJoin(errors, "\n  "), n_errors > max_errors ? "\n  ..." : ""));
  }
  return records;
}

std::string FormatOutputLine(absl::string_view id_json, absl::Span<const float> outputs,
                             int64_t rows, int64_t width) {
  std::string out = absl::StrCat("{\"id\": ", id_json, ", \"outputs\": [");
  out.reserve(out.size() + outputs.size() * 12);
  for (int64_t r = 0; r < rows; ++r) {
    out += r == 0 ? "[" : ", [";
    for (int64_t c = 0; c < width; ++c) {
      if (c > 0) out += ", ";
      AppendFloat(out, outputs[r * width + c]);
    }
    out += "]";
  }
  out += "]}\n";
  return out;
}

}  // namespace aaren
