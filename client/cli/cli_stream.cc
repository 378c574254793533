// SPDX-License-Identifier: Apache-2.0
// `aaren-cli stream`: an interactive Stream session. Each line read from stdin is one append
// (token ids, feature values or, with --text, text); the outputs are printed as they arrive.
#include <unistd.h>

#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "client/cli/cli_common.h"
#include "client/cli/cli_flags.h"
#include "client/cli/commands.h"
#include "client/cli/line_input.h"
#include "client/cli/token_display.h"
#include "client/stream_session.h"

ABSL_FLAG(bool, tokens, false, "Lines are token ids, e.g. \"3 1 4\" (the default).");
ABSL_FLAG(bool, text, false, "Lines are text, turned into token ids with --vocab.");
ABSL_FLAG(int, top, 1, "Token models: print the N most likely next tokens of each output row.");

namespace aaren::cli {
namespace {

// Which model the session runs: --model, or the existing session's.
absl::StatusOr<v1::ModelInfo> ResolveModel(client::AarenClient& client) {
  std::string name = absl::GetFlag(FLAGS_model);
  if (name.empty()) {
    absl::StatusOr<v1::Session> session = client.GetSession(absl::GetFlag(FLAGS_session_id));
    if (!session.ok()) return session.status();
    name = session->model();
  }
  return client.GetModel(name);
}

// One line per output row: "POSITION  INPUT  ->  PREDICTION" for token models,
// "POSITION  ->  VALUES" for feature models.
void PrintOutputs(const v1::ModelInfo& model, const v1::Sequence& input,
                  const v1::AppendResponse& reply, const Vocab* vocab, int top) {
  const int64_t width = reply.output_dim() > 0 ? reply.output_dim() : model.output_dim();
  const int64_t rows = width > 0 ? reply.outputs_size() / width : 0;
  const int64_t input_length =
      input.tokens_size() > 0 ? input.tokens_size() : input.features_size() / model.n_features();
  for (int64_t r = 0; r < rows; ++r) {
    // The row belongs to input token (input_length - rows + r) of this append.
    const int64_t index = input_length - rows + r;
    const int64_t position = reply.position() - input_length + index;
    const absl::Span<const float> row(reply.outputs().data() + r * width, width);
    std::string line = absl::StrCat(position, "  ");
    if (model.input_kind() == "tokens") {
      const int32_t token = input.tokens(static_cast<int>(index));
      absl::StrAppend(&line, vocab != nullptr ? vocab->Display(token) : absl::StrCat(token),
                      "  ->  ", FormatTopTokens(TopTokens(row, top), vocab));
    } else {
      absl::StrAppend(&line, "->  ", FormatValues(row));
    }
    std::cout << line << "\n";
  }
  std::cout.flush();
}

int RunStream(const std::vector<std::string>&) {
  const std::string session_id = absl::GetFlag(FLAGS_session_id);
  const std::string model_name = absl::GetFlag(FLAGS_model);
  const bool text = absl::GetFlag(FLAGS_text);
  const int top = absl::GetFlag(FLAGS_top);
  if (model_name.empty() && session_id.empty()) {
    return UsageError("--model (new session) or --session_id (existing session) is required");
  }
  if (text && absl::GetFlag(FLAGS_tokens))
    return UsageError("--text and --tokens exclude each other");
  if (text && absl::GetFlag(FLAGS_vocab).empty()) return UsageError("--text needs --vocab");
  if (top < 1) return UsageError("--top must be >= 1");
  absl::StatusOr<v1::OutputMode> mode = OutputModeFlag(v1::OUTPUT_MODE_LAST);
  if (!mode.ok()) return UsageError(mode.status().message());
  absl::StatusOr<std::optional<v1::McaOptions>> mca = McaFlags();
  if (!mca.ok()) return UsageError(mca.status().message());

  auto made = MakeClient();
  if (!made.ok()) return ReportError(made.status(), kExitUsage);
  std::unique_ptr<client::AarenClient> client = *std::move(made);
  absl::StatusOr<v1::ModelInfo> model = ResolveModel(*client);
  if (!model.ok()) return ReportError(model.status());
  absl::StatusOr<std::optional<Vocab>> vocab = VocabFlagFor(*model);
  if (!vocab.ok()) return ReportError(vocab.status(), kExitUsage);
  const Vocab* vocab_ptr = vocab->has_value() ? &**vocab : nullptr;

  client::StreamSession stream(*client);
  v1::OpenSession open;
  open.set_session_id(session_id);
  open.set_model(model_name);
  // A client-chosen id with a model: attach if it exists, create it otherwise.
  open.set_create_if_missing(!session_id.empty() && !model_name.empty());
  open.set_idle_ttl_seconds(absl::GetFlag(FLAGS_idle_ttl));
  absl::StatusOr<v1::Session> session = stream.Open(open);
  if (!session.ok()) return ReportError(session.status());
  std::cerr << "session " << session->session_id() << " (model " << session->model()
            << ", position " << session->position() << ")\n";

  const bool interactive = isatty(STDIN_FILENO) == 1;
  const Vocab* input_vocab = text ? vocab_ptr : nullptr;
  int64_t position = session->position();
  std::string line;
  while (true) {
    if (interactive) std::cerr << "> " << std::flush;
    if (!std::getline(std::cin, line)) break;
    // Text keeps its spaces; ids and values need none.
    const absl::string_view content =
        text ? absl::StripSuffix(line, "\r") : absl::StripAsciiWhitespace(line);
    if (content.empty()) continue;
    // Checked locally: a bad line is reported and skipped instead of ending the stream.
    absl::StatusOr<v1::Sequence> input = ParseSequenceText(content, *model, input_vocab);
    if (!input.ok()) {
      std::cerr << CommandName() << ": " << input.status().message() << " (line skipped)\n";
      continue;
    }
    v1::AppendRequest request;
    *request.mutable_input() = *input;
    request.set_output_mode(*mode);
    if (mca->has_value()) *request.mutable_mca() = **mca;
    absl::StatusOr<v1::AppendResponse> reply = stream.Append(request);
    if (!reply.ok()) return ReportError(reply.status());
    PrintOutputs(*model, *input, *reply, vocab_ptr, top);
    position = reply->position();
  }
  const absl::Status closed = stream.Close();
  if (!closed.ok()) return ReportError(closed);
  std::cerr << "session " << session->session_id() << " at position " << position << "\n";
  return kExitOk;
}

}  // namespace

Subcommand StreamCommand() {
  return {"stream",
          "interactive streaming session: one append per line of stdin",
          "Usage: aaren-cli stream --model M                 (a new session)\n"
          "       aaren-cli stream --session_id S [--model M] (attach; with --model: create S "
          "if missing)\n"
          "       [--tokens | --text --vocab vocab.json] [--output_mode last|all|none] [--top N]\n"
          "       [--mca_alpha A [--mca_seed S]]\n\n"
          "Each non-empty line of stdin is appended to the session over one bidirectional "
          "Stream:\n"
          "  token models: token ids (\"3 1 4\"), or with --text the line's characters mapped by\n"
          "    --vocab (models/demo-lm/vocab.json); prints, for each output row, the position,\n"
          "    the input token and the --top most likely next tokens with their probabilities;\n"
          "  feature models: n_features values per token, comma- or space-separated; prints the\n"
          "    output values.\n"
          "--output_mode last (default) prints the last token's row of each line, all every "
          "row.\n"
          "A line that does not fit the model is reported and skipped; end with EOF (Ctrl-D).\n"
          "--mca_alpha appends with Monte-Carlo Attention (--mca_seed; samples are keyed by "
          "position,\n"
          "so the outputs are those of `score` with the same options).",
          {"model", "session_id", "tokens", "text", "vocab", "top", "output_mode", "idle_ttl",
           "mca_alpha", "mca_seed"},
          0,
          RunStream};
}

}  // namespace aaren::cli
