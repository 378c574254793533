// SPDX-License-Identifier: Apache-2.0
#include "client/cli/cli_common.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <utility>

#include <google/protobuf/text_format.h>
#include <google/protobuf/util/json_util.h>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli/cli_flags.h"

namespace aaren::cli {
namespace {

std::string& MutableCommandName() {
  static std::string* name = new std::string("aaren-cli");
  return *name;
}

}  // namespace

void SetCommandName(absl::string_view name) { MutableCommandName() = std::string(name); }

const std::string& CommandName() { return MutableCommandName(); }

int ReportError(const absl::Status& status, int exit_status) {
  std::cerr << CommandName() << ": " << status << "\n";
  return exit_status;
}

int UsageError(absl::string_view message) {
  std::cerr << CommandName() << ": " << message << " (see " << CommandName() << " --help)\n";
  return kExitUsage;
}

absl::StatusOr<std::unique_ptr<client::AarenClient>> MakeClient() {
  client::ClientOptions options;
  options.timeout = absl::GetFlag(FLAGS_timeout);
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  const std::string ca = absl::GetFlag(FLAGS_tls_ca_file);
  const std::string cert = absl::GetFlag(FLAGS_tls_cert_file);
  const std::string key = absl::GetFlag(FLAGS_tls_key_file);
  if (!ca.empty() || !cert.empty() || !key.empty()) {
    auto credentials = client::TlsCredentialsFromFiles(ca, cert, key);
    if (!credentials.ok()) {
      return absl::Status(credentials.status().code(),
                          absl::StrCat("--tls_*_file: ", credentials.status().message()));
    }
    options.credentials = *std::move(credentials);
  }
  options.token = absl::GetFlag(FLAGS_token);
  if (options.token.empty()) {
    if (const char* env = std::getenv("AAREN_TOKEN"); env != nullptr) options.token = env;
  }
  return std::make_unique<client::AarenClient>(absl::GetFlag(FLAGS_target), options);
}

absl::StatusOr<v1::OutputMode> OutputModeFlag(v1::OutputMode fallback) {
  const std::string mode = absl::GetFlag(FLAGS_output_mode);
  if (mode.empty()) return fallback;
  for (v1::OutputMode m : {v1::OUTPUT_MODE_ALL, v1::OUTPUT_MODE_LAST, v1::OUTPUT_MODE_NONE}) {
    if (mode == OutputModeName(m)) return m;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--output_mode must be all, last or none, got '", mode, "'"));
}

absl::StatusOr<std::optional<v1::McaOptions>> McaFlags() {
  const std::optional<float> alpha = absl::GetFlag(FLAGS_mca_alpha);
  if (!alpha.has_value()) return std::nullopt;
  if (!(std::isfinite(*alpha) && *alpha >= 0.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--mca_alpha must be a finite number >= 0, got ", *alpha));
  }
  v1::McaOptions mca;
  mca.set_enabled(true);
  mca.set_alpha(*alpha);
  mca.set_seed(absl::GetFlag(FLAGS_mca_seed));
  return mca;
}

std::string McaSummary(uint64_t value_flops, uint64_t value_flops_exact) {
  const double percent = value_flops_exact == 0 ? 100.0
                                                : 100.0 * static_cast<double>(value_flops) /
                                                      static_cast<double>(value_flops_exact);
  return absl::StrCat("value-projection FLOPs ", value_flops, " of ", value_flops_exact, " exact (",
                      absl::StrFormat("%.1f", percent), "%)");
}

absl::string_view OutputModeName(v1::OutputMode mode) {
  switch (mode) {
    case v1::OUTPUT_MODE_LAST:
      return "last";
    case v1::OUTPUT_MODE_NONE:
      return "none";
    default:
      return "all";
  }
}

absl::StatusOr<std::optional<Vocab>> VocabFlagFor(const v1::ModelInfo& model) {
  const std::string path = absl::GetFlag(FLAGS_vocab);
  if (path.empty()) return std::optional<Vocab>();
  if (model.input_kind() != "tokens") {
    return absl::InvalidArgumentError(
        absl::StrCat("--vocab: model '", model.name(), "' takes features, not tokens"));
  }
  absl::StatusOr<Vocab> vocab = Vocab::Load(path);
  if (!vocab.ok()) return vocab.status();
  if (vocab->size() != model.vocab_size()) {
    return absl::InvalidArgumentError(absl::StrCat("--vocab: ", path, " has ", vocab->size(),
                                                   " entries but model '", model.name(),
                                                   "' has vocab_size ", model.vocab_size()));
  }
  return std::optional<Vocab>(*std::move(vocab));
}

std::string FormatMessage(const google::protobuf::Message& message, bool json) {
  std::string text;
  if (json) {
    google::protobuf::util::JsonPrintOptions options;
    options.preserve_proto_field_names = true;
    options.always_print_primitive_fields = true;
    options.add_whitespace = true;
    // Serialising a valid in-memory message cannot fail.
    (void)google::protobuf::util::MessageToJsonString(message, &text, options);
  } else {
    google::protobuf::TextFormat::PrintToString(message, &text);
    if (!text.empty() && text.back() == '\n') text.pop_back();
  }
  return text + "\n";
}

std::string FormatTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()), 0);
    for (size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], row[c].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      line += row[c];
      if (c + 1 < row.size()) line += std::string(widths[c] - row[c].size() + 2, ' ');
    }
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

}  // namespace aaren::cli
