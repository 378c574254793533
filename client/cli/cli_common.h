// SPDX-License-Identifier: Apache-2.0
// Helpers every aaren-cli subcommand uses: exit statuses, error messages, the client built from
// the global flags, and output formatting (tables, protobuf messages as text or JSON).
#ifndef AAREN_CLIENT_CLI_CLI_COMMON_H_
#define AAREN_CLIENT_CLI_CLI_COMMON_H_

#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <google/protobuf/message.h>

#include "aaren/v1/aaren.pb.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/aaren_client.h"
#include "client/cli/vocab.h"

namespace aaren::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;  // the server or the environment failed the request
inline constexpr int kExitUsage = 2;    // bad flags or bad input: fix the command line

// "aaren-cli NAME", the prefix of every message; set once by the dispatcher.
void SetCommandName(absl::string_view name);
const std::string& CommandName();

// Prints "aaren-cli NAME: CODE: message" to stderr and returns `exit_status`.
int ReportError(const absl::Status& status, int exit_status = kExitFailure);
// Prints "aaren-cli NAME: message (see aaren-cli NAME --help)" to stderr; returns kExitUsage.
int UsageError(absl::string_view message);

// A client for --target with --timeout and --max_message_bytes.
// A client from the global flags (target, timeout, max_message_bytes, TLS files, token or
// $AAREN_TOKEN); an error naming the flag when a TLS file cannot be read.
absl::StatusOr<std::unique_ptr<client::AarenClient>> MakeClient();

// --output_mode (empty: `fallback`) as the wire enum; INVALID_ARGUMENT for other values.
absl::StatusOr<v1::OutputMode> OutputModeFlag(v1::OutputMode fallback);
// --mca_alpha / --mca_seed as McaOptions (enabled), or std::nullopt when --mca_alpha is unset;
// INVALID_ARGUMENT unless alpha is finite and >= 0.
absl::StatusOr<std::optional<v1::McaOptions>> McaFlags();
// "value-projection FLOPs 1234 of 5678 exact (21.7%)", for a summary line.
std::string McaSummary(uint64_t value_flops, uint64_t value_flops_exact);
// Lower-case name of an output mode ("all", "last", "none").
absl::string_view OutputModeName(v1::OutputMode mode);

// --vocab loaded and checked against `model` (a token model with the same vocab_size), or
// std::nullopt when the flag is empty.
absl::StatusOr<std::optional<Vocab>> VocabFlagFor(const v1::ModelInfo& model);

// `message` as indented protobuf JSON (field names as in the .proto, default values included) or,
// with json = false, protobuf text format; ends with a newline.
std::string FormatMessage(const google::protobuf::Message& message, bool json);

// Left-aligned columns separated by two spaces; the first row is the header.
std::string FormatTable(const std::vector<std::vector<std::string>>& rows);

}  // namespace aaren::cli

#endif  // AAREN_CLIENT_CLI_CLI_COMMON_H_
