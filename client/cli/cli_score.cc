// SPDX-License-Identifier: Apache-2.0
// `aaren-cli score`: scores a JSON Lines file on the server with batched Score calls, several in
// flight, writing the same output file as the in-process `aaren-score` (core/sequence_jsonl.h
// reads the input and formats every output line, so the two tools cannot drift apart).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "client/cli/cli_common.h"
#include "client/cli/cli_flags.h"
#include "client/cli/commands.h"
#include "client/cli/progress_bar.h"
#include "core/model_config.h"
#include "core/sequence_jsonl.h"

ABSL_FLAG(std::string, input, "",
          "Input JSON Lines file, one sequence per line (the format of aaren-score).");
ABSL_FLAG(std::string, output, "",
          "Output JSON Lines file ('-': standard output); optional with --output_mode none.");
ABSL_FLAG(int64_t, max_batch_tokens, 65536,
          "Most tokens per Score request (a longer sequence is sent alone).");
ABSL_FLAG(bool, progress, false,
          "Draw a progress bar on stderr even when stderr is not a terminal.");

namespace aaren::cli {
namespace {

constexpr int kDefaultInFlight = 4;

// The parts of a model's config that ReadSequenceFile checks inputs against.
ModelConfig InputConfig(const v1::ModelInfo& model) {
  ModelConfig config;
  config.input_kind = model.input_kind() == "features" ? InputKind::kFeatures : InputKind::kTokens;
  config.vocab_size = model.vocab_size();
  config.n_features = model.n_features();
  config.output_dim = model.output_dim();
  return config;
}

struct Batch {
  size_t first;  // records [first, last)
  size_t last;
  int64_t tokens;
};

// Consecutive records, at most `max_sequences` and `max_tokens` tokens per batch (a record longer
// than max_tokens alone).
std::vector<Batch> PlanBatches(const std::vector<SequenceRecord>& records, int max_sequences,
                               int64_t max_tokens) {
  std::vector<Batch> batches;
  for (size_t i = 0; i < records.size(); ++i) {
    const int64_t length = records[i].length;
    if (batches.empty() ||
        static_cast<int64_t>(batches.back().last - batches.back().first) >= max_sequences ||
        batches.back().tokens + length > max_tokens) {
      batches.push_back({i, i, 0});
    }
    batches.back().last = i + 1;
    batches.back().tokens += length;
  }
  return batches;
}

v1::ScoreRequest MakeRequest(const std::string& model, v1::OutputMode mode,
                             const std::optional<v1::McaOptions>& mca,
                             const std::vector<SequenceRecord>& records, const Batch& batch) {
  v1::ScoreRequest request;
  request.set_model(model);
  request.set_output_mode(mode);
  if (mca.has_value()) *request.mutable_mca() = *mca;
  for (size_t i = batch.first; i < batch.last; ++i) {
    v1::Sequence* sequence = request.add_sequences();
    sequence->mutable_tokens()->Add(records[i].tokens.begin(), records[i].tokens.end());
    sequence->mutable_features()->Add(records[i].features.begin(), records[i].features.end());
  }
  return request;
}

// The output lines of one batch's response, checked against what was asked for.
absl::StatusOr<std::string> FormatBatch(const std::vector<SequenceRecord>& records,
                                        const Batch& batch, v1::OutputMode mode, int64_t output_dim,
                                        const v1::ScoreResponse& response) {
  if (response.results_size() != static_cast<int>(batch.last - batch.first)) {
    return absl::InternalError(absl::StrCat("Score returned ", response.results_size(),
                                            " results for ", batch.last - batch.first,
                                            " sequences"));
  }
  std::string text;
  for (size_t i = batch.first; i < batch.last; ++i) {
    const v1::SequenceResult& result = response.results(static_cast<int>(i - batch.first));
    const int64_t rows = mode == v1::OUTPUT_MODE_ALL    ? records[i].length
                         : mode == v1::OUTPUT_MODE_LAST ? 1
                                                        : 0;
    if (result.outputs_size() != rows * output_dim) {
      return absl::InternalError(absl::StrCat("Score returned ", result.outputs_size(),
                                              " floats for input line ", records[i].line,
                                              ", expected ", rows, " x ", output_dim));
    }
    text += FormatOutputLine(records[i].id_json, result.outputs(), rows, output_dim);
  }
  return text;
}

int RunScore(const std::vector<std::string>&) {
  const std::string model_name = absl::GetFlag(FLAGS_model);
  const std::string input = absl::GetFlag(FLAGS_input);
  const std::string output = absl::GetFlag(FLAGS_output);
  const int batch_sequences = absl::GetFlag(FLAGS_batch_sequences);
  const int64_t max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens);
  const int in_flight = absl::GetFlag(FLAGS_in_flight);
  absl::StatusOr<v1::OutputMode> mode = OutputModeFlag(v1::OUTPUT_MODE_ALL);
  if (!mode.ok()) return UsageError(mode.status().message());
  absl::StatusOr<std::optional<v1::McaOptions>> mca = McaFlags();
  if (!mca.ok()) return UsageError(mca.status().message());
  if (model_name.empty() || input.empty()) return UsageError("--model and --input are required");
  if (output.empty() && *mode != v1::OUTPUT_MODE_NONE) {
    return UsageError("--output is required (unless --output_mode none)");
  }
  if (batch_sequences < 1 || max_batch_tokens < 1 || in_flight < 0) {
    return UsageError("--batch_sequences and --max_batch_tokens must be >= 1, --in_flight >= 0");
  }

  auto made = MakeClient();
  if (!made.ok()) return ReportError(made.status(), kExitUsage);
  std::unique_ptr<client::AarenClient> client = *std::move(made);
  absl::StatusOr<v1::ModelInfo> model = client->GetModel(model_name);
  if (!model.ok()) return ReportError(model.status());
  absl::StatusOr<std::vector<SequenceRecord>> records =
      ReadSequenceFile(input, InputConfig(*model));
  if (!records.ok()) return ReportError(records.status(), kExitUsage);

  std::ofstream file;
  if (!output.empty() && output != "-") {
    file.open(output, std::ios::binary | std::ios::trunc);
    if (!file)
      return ReportError(absl::PermissionDeniedError(absl::StrCat("cannot write ", output)));
  }
  std::ostream& out = output == "-" ? std::cout : file;

  const std::vector<Batch> batches = PlanBatches(*records, batch_sequences, max_batch_tokens);
  int64_t total_tokens = 0;
  for (const Batch& b : batches) total_tokens += b.tokens;
  ProgressBar bar(total_tokens, "tokens",
                  absl::GetFlag(FLAGS_progress) || ProgressBar::StderrIsTerminal());
  const auto start = std::chrono::steady_clock::now();
  uint64_t value_flops = 0, value_flops_exact = 0;
  absl::Status status = client->ScoreMany(
      batches.size(), in_flight > 0 ? in_flight : kDefaultInFlight,
      [&](size_t i) { return MakeRequest(model_name, *mode, *mca, *records, batches[i]); },
      [&](size_t i, v1::ScoreResponse& response) -> absl::Status {
        absl::StatusOr<std::string> text =
            FormatBatch(*records, batches[i], *mode, model->output_dim(), response);
        if (!text.ok()) return text.status();
        for (const v1::SequenceResult& r : response.results()) {
          value_flops += r.mca_stats().value_flops();
          value_flops_exact += r.mca_stats().value_flops_exact();
        }
        if (!output.empty()) out << *text;
        bar.Advance(batches[i].tokens);
        return absl::OkStatus();
      });
  bar.Finish();
  if (status.ok() && !output.empty()) {
    out.flush();
    if (!out) status = absl::DataLossError(absl::StrCat("error writing ", output));
  }
  if (!status.ok()) {
    // No partial output file: a complete one or none, as with aaren-score.
    if (file.is_open()) {
      file.close();
      std::filesystem::remove(output);
    }
    return ReportError(status);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cerr << CommandName() << ": " << records->size() << " sequences, " << total_tokens
            << " tokens in " << seconds << " s ("
            << static_cast<int64_t>(total_tokens / std::max(seconds, 1e-9)) << " tokens/s, "
            << batches.size() << " requests)\n";
  if (mca->has_value()) {
    std::cerr << CommandName() << ": MCA alpha " << (*mca)->alpha() << " seed " << (*mca)->seed()
              << ": " << McaSummary(value_flops, value_flops_exact) << "\n";
  }
  return kExitOk;
}

}  // namespace

Subcommand ScoreCommand() {
  return {"score",
          "scores a JSON Lines file of sequences (the format of aaren-score)",
          "Usage: aaren-cli score --model M --input IN.jsonl --output OUT.jsonl\n"
          "                       [--output_mode all|last|none] [--batch_sequences N]\n"
          "                       [--max_batch_tokens N] [--in_flight N] [--progress]\n"
          "                       [--mca_alpha A [--mca_seed S]]\n\n"
          "Input lines: {\"id\": ..., \"tokens\": [ids...]} or {\"id\": ..., \"features\": "
          "[[floats...], ...]}.\n"
          "Output lines: {\"id\": ..., \"outputs\": [[floats...], ...]}, in input order, byte for "
          "byte what\n"
          "aaren-score writes for the same model and input. Sequences go to the server in "
          "batches of\n"
          "--batch_sequences (and at most --max_batch_tokens tokens), --in_flight requests at a "
          "time.\n"
          "A bad input line is reported with its line number (exit 2) before anything is sent.\n"
          "--mca_alpha scores with Monte-Carlo Attention (the same --mca_seed, the same outputs) "
          "and\n"
          "reports the value-projection FLOPs spent against the exact cost.",
          {"model", "input", "output", "output_mode", "batch_sequences", "max_batch_tokens",
           "in_flight", "progress", "mca_alpha", "mca_seed"},
          0,
          RunScore};
}

}  // namespace aaren::cli
