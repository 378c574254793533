// SPDX-License-Identifier: Apache-2.0
// The JSON Lines file format of `aaren-score` (and later `aaren-cli score`).
//
// Input, one sequence per line (blank lines are skipped; unknown fields are ignored, so a line may
// carry e.g. its "targets"):
//   {"id": <any JSON value>, "tokens": [3, 1, 4, ...]}              models with input kind tokens
//   {"id": <any JSON value>, "features": [[f0, f1, ...], ...]}      models with input kind features
// "id" is optional (default: the 1-based line number) and echoed verbatim.
// Output, one line per input sequence, in input order:
//   {"id": <id>, "outputs": [[y0, y1, ...], ...]}   one row per token (--output_mode all) or one
//                                                   row for the last token (last)
// Floats are written in the shortest form that reads back to the identical float32.
#ifndef AAREN_CORE_SEQUENCE_JSONL_H_
#define AAREN_CORE_SEQUENCE_JSONL_H_

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/model_config.h"

namespace aaren {

struct SequenceRecord {
  int64_t line = 0;             // 1-based line number in the input
  std::string id_json;          // the "id" value, serialised JSON
  std::vector<int32_t> tokens;  // input kind tokens
  std::vector<float> features;  // input kind features, [length, n_features] row-major
  int64_t length = 0;           // tokens in the sequence (>= 1)
};

// Parses one non-blank input line against `config`. INVALID_ARGUMENT naming the line and the
// field, e.g. "line 3: field 'tokens[2]': token id 99 out of range [0, 65)".
absl::StatusOr<SequenceRecord> ParseSequenceLine(absl::string_view line, int64_t line_number,
                                                 const ModelConfig& config);

// Reads a whole input file. On any bad line returns INVALID_ARGUMENT listing up to `max_errors`
// of them (one per line of the message) and how many there were in all. NOT_FOUND if missing,
// INVALID_ARGUMENT for a directory, PERMISSION_DENIED if it cannot be opened.
absl::StatusOr<std::vector<SequenceRecord>> ReadSequenceFile(const std::filesystem::path& path,
                                                             const ModelConfig& config,
                                                             int max_errors = 20);

// One output line (with trailing newline): `rows` rows of `width` floats.
std::string FormatOutputLine(absl::string_view id_json, absl::Span<const float> outputs,
                             int64_t rows, int64_t width);

}  // namespace aaren

#endif  // AAREN_CORE_SEQUENCE_JSONL_H_
