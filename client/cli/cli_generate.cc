// SPDX-License-Identifier: Apache-2.0
// `aaren-cli generate`: samples tokens from a session (Generate) and prints them as they arrive,
// as text with --vocab.
#include <chrono>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli/cli_common.h"
#include "client/cli/cli_flags.h"
#include "client/cli/commands.h"
#include "client/cli/line_input.h"

ABSL_FLAG(std::string, prompt_text, "", "Prompt text appended before sampling (needs --vocab).");
ABSL_FLAG(std::string, prompt_tokens, "", "Prompt token ids appended before sampling: \"3 1 4\".");
ABSL_FLAG(uint32_t, max_tokens, 64, "Tokens to generate.");
ABSL_FLAG(float, temperature, 1.0f, "Sampling temperature; 0 = greedy (argmax).");
ABSL_FLAG(uint32_t, top_k, 0, "Sample among the k most likely tokens; 0 = all.");
ABSL_FLAG(std::string, stop_tokens, "", "Token ids that end generation: \"0 5\".");
ABSL_FLAG(bool, show_tokens, false,
          "One line per token (position, id, text, log-probability) instead of plain output.");

namespace aaren::cli {
namespace {

struct Target {
  v1::ModelInfo model;
  std::string session_id;
  bool temporary = false;  // created here, deleted at the end
};

// The session to generate from: --session_id, or a new one of --model.
absl::StatusOr<Target> ResolveTarget(client::AarenClient& client) {
  Target target;
  target.session_id = absl::GetFlag(FLAGS_session_id);
  std::string model = absl::GetFlag(FLAGS_model);
  if (!target.session_id.empty()) {
    absl::StatusOr<v1::Session> session = client.GetSession(target.session_id);
    if (!session.ok()) return session.status();
    model = session->model();
  }
  absl::StatusOr<v1::ModelInfo> info = client.GetModel(model);
  if (!info.ok()) return info.status();
  target.model = *std::move(info);
  if (target.session_id.empty()) {
    v1::CreateSessionRequest create;
    create.set_model(model);
    absl::StatusOr<v1::Session> session = client.CreateSession(create);
    if (!session.ok()) return session.status();
    target.session_id = session->session_id();
    target.temporary = true;
  }
  return target;
}

// --prompt_text / --prompt_tokens as a Sequence (empty when neither is set).
absl::StatusOr<v1::Sequence> PromptFlag(const v1::ModelInfo& model, const Vocab* vocab) {
  const std::string text = absl::GetFlag(FLAGS_prompt_text);
  const std::string tokens = absl::GetFlag(FLAGS_prompt_tokens);
  if (!text.empty() && !tokens.empty()) {
    return absl::InvalidArgumentError("--prompt_text and --prompt_tokens exclude each other");
  }
  if (!text.empty() && vocab == nullptr) {
    return absl::InvalidArgumentError("--prompt_text needs --vocab");
  }
  if (text.empty() && tokens.empty()) return v1::Sequence();
  return ParseSequenceText(text.empty() ? tokens : text, model, text.empty() ? nullptr : vocab);
}

// Generates from `target` and prints the tokens; returns the exit status.
int GenerateFrom(client::AarenClient& client, const Target& target) {
  absl::StatusOr<std::optional<Vocab>> vocab = VocabFlagFor(target.model);
  if (!vocab.ok()) return ReportError(vocab.status(), kExitUsage);
  const Vocab* vocab_ptr = vocab->has_value() ? &**vocab : nullptr;
  absl::StatusOr<v1::Sequence> prompt = PromptFlag(target.model, vocab_ptr);
  if (!prompt.ok()) return ReportError(prompt.status(), kExitUsage);
  absl::StatusOr<std::vector<int32_t>> stop =
      ParseTokenIds(absl::GetFlag(FLAGS_stop_tokens), target.model.vocab_size());
  if (!stop.ok()) return ReportError(stop.status(), kExitUsage);

  v1::GenerateRequest request;
  request.set_session_id(target.session_id);
  request.set_max_tokens(absl::GetFlag(FLAGS_max_tokens));
  request.set_temperature(absl::GetFlag(FLAGS_temperature));
  request.set_top_k(absl::GetFlag(FLAGS_top_k));
  request.set_seed(absl::GetFlag(FLAGS_seed));
  *request.mutable_prompt() = *std::move(prompt);
  request.mutable_stop_tokens()->Add(stop->begin(), stop->end());
  const bool show_tokens = absl::GetFlag(FLAGS_show_tokens);
  int64_t generated = 0;
  int64_t position = 0;
  const auto start = std::chrono::steady_clock::now();
  const absl::Status status = client.Generate(request, [&](const v1::GenerateResponse& t) {
    ++generated;
    position = t.position();
    if (show_tokens) {
      std::cout << t.position() << "  " << t.token() << "  "
                << (vocab_ptr != nullptr ? vocab_ptr->Display(t.token()) : "")
                << absl::StrFormat("  %.4f", t.logprob()) << "\n";
    } else if (vocab_ptr != nullptr) {
      std::cout << vocab_ptr->Decode(t.token());
    } else {
      std::cout << (generated > 1 ? " " : "") << t.token();
    }
    std::cout.flush();
  });
  if (!show_tokens && generated > 0) std::cout << "\n";
  if (!status.ok()) return ReportError(status);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cerr << CommandName() << ": " << generated << " tokens in " << seconds << " s, "
            << (target.temporary ? "temporary session " : "session ") << target.session_id
            << " at position " << position << "\n";
  return kExitOk;
}

int RunGenerate(const std::vector<std::string>&) {
  if (absl::GetFlag(FLAGS_session_id).empty() && absl::GetFlag(FLAGS_model).empty()) {
    return UsageError("--session_id (or --model, for a new temporary session) is required");
  }
  auto made = MakeClient();
  if (!made.ok()) return ReportError(made.status(), kExitUsage);
  std::unique_ptr<client::AarenClient> client = *std::move(made);
  absl::StatusOr<Target> target = ResolveTarget(*client);
  if (!target.ok()) return ReportError(target.status());
  int exit_status = GenerateFrom(*client, *target);
  if (target->temporary) {
    const absl::Status deleted = client->DeleteSession(target->session_id);
    if (!deleted.ok() && exit_status == kExitOk) exit_status = ReportError(deleted);
  }
  return exit_status;
}

}  // namespace

Subcommand GenerateCommand() {
  return {"generate",
          "samples tokens from a session (token models) and prints them",
          "Usage: aaren-cli generate --session_id S [--prompt_text T --vocab V | "
          "--prompt_tokens \"3 1 4\"]\n"
          "                          [--max_tokens N] [--temperature F] [--top_k K] [--seed N]\n"
          "                          [--stop_tokens \"0\"] [--show_tokens]\n"
          "       aaren-cli generate --model M ...   (a temporary session, deleted at the end)\n\n"
          "Appends the prompt (if any) to the session, then samples --max_tokens tokens, each\n"
          "appended to the session, and prints them as they arrive: as text with --vocab, as\n"
          "ids otherwise. The same session state and --seed give the same tokens.",
          {"session_id", "model", "prompt_text", "prompt_tokens", "vocab", "max_tokens",
           "temperature", "top_k", "seed", "stop_tokens", "show_tokens"},
          0,
          RunGenerate};
}

}  // namespace aaren::cli
