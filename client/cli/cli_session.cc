// SPDX-License-Identifier: Apache-2.0
// `aaren-cli session create|get|delete|fork|export|import`: session management. Sessions print
// as protobuf text (or --json); export writes the SessionSnapshot as binary protobuf (or
// --format json) and import reads either.
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <google/protobuf/util/json_util.h>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "client/cli/cli_common.h"
#include "client/cli/cli_flags.h"
#include "client/cli/commands.h"
#include "client/cli/line_input.h"

ABSL_FLAG(std::string, new_session_id, "", "fork: the new session's id; empty: server-made.");
ABSL_FLAG(std::string, prefix_tokens, "", "create: token ids to start from, e.g. \"3 1 4\".");
ABSL_FLAG(std::string, prefix_text, "", "create: text to start from (needs --vocab).");
ABSL_FLAG(std::string, file, "", "export, import: the snapshot file.");
ABSL_FLAG(std::string, format, "",
          "export: binary (default) or json; import: auto (default: JSON when the file starts "
          "with '{'), binary or json.");

namespace aaren::cli {
namespace {

// Prints the session a call returned, or its error.
int PrintSession(const absl::StatusOr<v1::Session>& session) {
  if (!session.ok()) return ReportError(session.status());
  std::cout << FormatMessage(*session, absl::GetFlag(FLAGS_json));
  return kExitOk;
}

// The --prefix_tokens / --prefix_text input of `create`, or nullopt when neither is set.
absl::StatusOr<std::optional<v1::Sequence>> PrefixFlag(client::AarenClient& client,
                                                       const std::string& model_name) {
  const std::string tokens = absl::GetFlag(FLAGS_prefix_tokens);
  const std::string text = absl::GetFlag(FLAGS_prefix_text);
  if (tokens.empty() && text.empty()) return std::optional<v1::Sequence>();
  if (!tokens.empty() && !text.empty()) {
    return absl::InvalidArgumentError("--prefix_tokens and --prefix_text exclude each other");
  }
  absl::StatusOr<v1::ModelInfo> model = client.GetModel(model_name);
  if (!model.ok()) return model.status();
  absl::StatusOr<std::optional<Vocab>> vocab = VocabFlagFor(*model);
  if (!vocab.ok()) return vocab.status();
  if (!text.empty() && !vocab->has_value()) {
    return absl::InvalidArgumentError("--prefix_text needs --vocab");
  }
  absl::StatusOr<v1::Sequence> prefix =
      ParseSequenceText(text.empty() ? tokens : text, *model, text.empty() ? nullptr : &**vocab);
  if (!prefix.ok()) return prefix.status();
  return std::optional<v1::Sequence>(*std::move(prefix));
}

int Create(client::AarenClient& client) {
  const std::string model = absl::GetFlag(FLAGS_model);
  if (model.empty()) return UsageError("create: --model is required");
  absl::StatusOr<std::optional<v1::Sequence>> prefix = PrefixFlag(client, model);
  if (!prefix.ok()) return ReportError(prefix.status(), kExitUsage);
  v1::CreateSessionRequest request;
  request.set_model(model);
  request.set_session_id(absl::GetFlag(FLAGS_session_id));
  request.set_idle_ttl_seconds(absl::GetFlag(FLAGS_idle_ttl));
  if (prefix->has_value()) *request.mutable_prefix() = **prefix;
  return PrintSession(client.CreateSession(request));
}

int Fork(client::AarenClient& client, const std::string& session_id) {
  v1::ForkSessionRequest request;
  request.set_session_id(session_id);
  request.set_new_session_id(absl::GetFlag(FLAGS_new_session_id));
  request.set_idle_ttl_seconds(absl::GetFlag(FLAGS_idle_ttl));
  return PrintSession(client.ForkSession(request));
}

int Delete(client::AarenClient& client, const std::string& session_id) {
  const absl::Status status = client.DeleteSession(session_id);
  if (!status.ok()) return ReportError(status);
  std::cout << "deleted " << session_id << "\n";
  return kExitOk;
}

int Export(client::AarenClient& client, const std::string& session_id) {
  const std::string path = absl::GetFlag(FLAGS_file);
  const std::string format = absl::GetFlag(FLAGS_format);
  if (path.empty()) return UsageError("export: --file is required");
  if (!format.empty() && format != "binary" && format != "json") {
    return UsageError(absl::StrCat("export: --format must be binary or json, got '", format, "'"));
  }
  absl::StatusOr<v1::SessionSnapshot> snapshot = client.ExportSession(session_id);
  if (!snapshot.ok()) return ReportError(snapshot.status());
  const std::string bytes =
      format == "json" ? FormatMessage(*snapshot, /*json=*/true) : snapshot->SerializeAsString();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
  out.close();
  if (!out) return ReportError(absl::PermissionDeniedError(absl::StrCat("cannot write ", path)));
  std::cerr << CommandName() << ": session " << session_id << " (model " << snapshot->model()
            << ", position " << snapshot->position() << ") -> " << path << " (" << bytes.size()
            << " bytes, " << (format == "json" ? "json" : "binary") << ")\n";
  return kExitOk;
}

// Reads a snapshot file in `format` (auto, binary or json).
absl::StatusOr<v1::SessionSnapshot> ReadSnapshot(const std::string& path,
                                                 const std::string& format) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string bytes = buffer.str();
  // A binary SessionSnapshot never starts with '{' (0x7B would be field 15, wire type 3).
  const size_t first = bytes.find_first_not_of(" \t\r\n");
  const bool json =
      format == "json" || (format == "auto" && first != std::string::npos && bytes[first] == '{');
  v1::SessionSnapshot snapshot;
  if (json) {
    const auto status = google::protobuf::util::JsonStringToMessage(bytes, &snapshot);
    if (!status.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": not a SessionSnapshot in JSON: ", status.message().as_string()));
    }
  } else if (!snapshot.ParseFromString(bytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a binary SessionSnapshot (use --format json for JSON)"));
  }
  return snapshot;
}

int Import(client::AarenClient& client) {
  const std::string path = absl::GetFlag(FLAGS_file);
  std::string format = absl::GetFlag(FLAGS_format);
  if (format.empty()) format = "auto";
  if (path.empty()) return UsageError("import: --file is required");
  if (format != "auto" && format != "binary" && format != "json") {
    return UsageError(
        absl::StrCat("import: --format must be auto, binary or json, got '", format, "'"));
  }
  absl::StatusOr<v1::SessionSnapshot> snapshot = ReadSnapshot(path, format);
  if (!snapshot.ok()) return ReportError(snapshot.status(), kExitUsage);
  v1::ImportSessionRequest request;
  *request.mutable_snapshot() = *std::move(snapshot);
  request.set_session_id(absl::GetFlag(FLAGS_session_id));
  request.set_idle_ttl_seconds(absl::GetFlag(FLAGS_idle_ttl));
  return PrintSession(client.ImportSession(request));
}

int RunSession(const std::vector<std::string>& args) {
  const std::string& action = args[0];
  const std::string session_id = absl::GetFlag(FLAGS_session_id);
  auto made = MakeClient();
  if (!made.ok()) return ReportError(made.status(), kExitUsage);
  std::unique_ptr<client::AarenClient> client = *std::move(made);
  if (action == "create") return Create(*client);
  if (action == "import") return Import(*client);
  if (action != "get" && action != "delete" && action != "fork" && action != "export") {
    return UsageError(
        absl::StrCat("unknown action '", action, "': create, get, delete, fork, export or import"));
  }
  if (session_id.empty()) return UsageError(absl::StrCat(action, ": --session_id is required"));
  if (action == "get") return PrintSession(client->GetSession(session_id));
  if (action == "delete") return Delete(*client, session_id);
  if (action == "fork") return Fork(*client, session_id);
  return Export(*client, session_id);
}

}  // namespace

Subcommand SessionCommand() {
  return {
      "session",
      "creates, inspects, deletes, forks, exports and imports sessions",
      "Usage: aaren-cli session create --model M [--session_id S] [--idle_ttl SECONDS]\n"
      "                                [--prefix_tokens \"3 1 4\" | --prefix_text T --vocab "
      "V]\n"
      "       aaren-cli session get    --session_id S\n"
      "       aaren-cli session delete --session_id S\n"
      "       aaren-cli session fork   --session_id S [--new_session_id N] [--idle_ttl "
      "SECONDS]\n"
      "       aaren-cli session export --session_id S --file F [--format binary|json]\n"
      "       aaren-cli session import --file F [--format auto|binary|json] [--session_id N]\n\n"
      "Sessions print as protobuf text, or protobuf JSON with --json. export writes the\n"
      "SessionSnapshot (state, position, model and config hash) to --file; import creates a\n"
      "session from it on a server that serves the same model (--session_id: the new id).",
      {"model", "session_id", "new_session_id", "idle_ttl", "prefix_tokens", "prefix_text", "vocab",
       "file", "format", "json"},
      1,
      RunSession};
}

}  // namespace aaren::cli
