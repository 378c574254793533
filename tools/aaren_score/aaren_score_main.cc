// SPDX-License-Identifier: Apache-2.0
// aaren-score: scores a JSON Lines file of sequences with a model directory, in process, on the
// CPU backend. The file formats are those of core/sequence_jsonl.h.
//
//   aaren-score --model_dir DIR --input IN.jsonl --output OUT.jsonl
//               [--output_mode all|last] [--stream] [--threads N] [--max_batch_tokens N]
//               [--mca_alpha A [--mca_seed S]] [--mca_stats_file PATH]
//
// Default: sequences are packed into ragged batches of up to --max_batch_tokens tokens and scored
// with the parallel prefix scan (a longer sequence is cut into chunks that carry its state).
// --stream instead feeds every sequence one token at a time through the length-1 path, the
// sequences of a batch stepping together (one Forward per step), exactly as streaming sessions
// are served. Both give the same outputs to float32 rounding.
//
// --mca_alpha runs the value projections with Monte-Carlo Attention (core/mca.h; samples keyed by
// seed and absolute position, so --stream and the scan still agree). With --mca_alpha or
// --mca_stats_file, a one-line JSON summary of the value-projection FLOPs, e.g.
//   {"mca_enabled":true,"mca_alpha":0.5,"mca_seed":0,"tokens":120,"value_flops":1234,
//    "value_flops_exact":5678}
// is written to stderr, or to --mca_stats_file.
//
// Exit status: 0 success; 1 runtime failure; 2 bad flags or bad input (each bad line is
// reported with its line number and field, and no output file is written).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "core/aaren_state.h"
#include "core/cpu_backend.h"
#include "core/model.h"
#include "core/sequence_jsonl.h"

ABSL_FLAG(std::string, model_dir, "", "Model directory (config.json + model.safetensors).");
ABSL_FLAG(std::string, input, "", "Input JSON Lines file, one sequence per line.");
ABSL_FLAG(std::string, output, "", "Output JSON Lines file ('-' for standard output).");
ABSL_FLAG(std::string, output_mode, "all",
          "all: one output row per token; last: the last token's row only.");
ABSL_FLAG(bool, stream, false,
          "Feed tokens one at a time through the streaming (length-1) path instead of the scan.");
ABSL_FLAG(int, threads, 0, "CPU threads (0: all hardware threads).");
ABSL_FLAG(int64_t, max_batch_tokens, 65536,
          "Most tokens per backend Forward: the scan's batch, or with --stream the number of "
          "sequences stepped together (one token each per Forward).");
ABSL_FLAG(std::optional<float>, mca_alpha, std::nullopt,
          "Run with Monte-Carlo Attention at this alpha (finite, >= 0; 0: every sample, exact). "
          "Unset: exact projections, no MCA.");
ABSL_FLAG(uint64_t, mca_seed, 0, "MCA seed (with --mca_alpha): same seed and input, same output.");
ABSL_FLAG(std::string, mca_stats_file, "",
          "Write the one-line JSON FLOPs summary here instead of stderr (also without MCA).");

namespace aaren {
namespace {

struct Piece {  // rows [begin, end) of one record, run as one span
  size_t record;
  int64_t begin;
  int64_t end;
};

// Scores records[first, last) (whose outputs fit in memory together) and appends their output
// lines to `out`.
absl::Status ScoreGroup(Backend& backend, const std::vector<SequenceRecord>& records, size_t first,
                        size_t last, bool last_only, bool stream, int64_t max_batch_tokens,
                        const McaOptions& mca, McaCounts& mca_total, std::string& out) {
  const ModelConfig& c = backend.model().config();
  const StateLayout layout = StateLayout::For(c);
  const size_t n = last - first;
  std::vector<std::vector<float>> states(n, std::vector<float>(layout.total_floats()));
  std::vector<int64_t> positions(n, 0);
  std::vector<std::vector<float>> outputs(n);
  std::vector<McaCounts> counts;  // one per span of the Forward in progress
  for (size_t i = 0; i < n; ++i) {
    ResetState(states[i].data(), layout);
    outputs[i].resize((last_only ? 1 : records[first + i].length) * c.output_dim);
  }
  auto make_span = [&](const Piece& p) {
    const SequenceRecord& rec = records[first + p.record];
    Span s;
    if (c.input_kind == InputKind::kTokens) {
      s.tokens = absl::MakeConstSpan(rec.tokens).subspan(p.begin, p.end - p.begin);
    } else {
      s.features = absl::MakeConstSpan(rec.features)
                       .subspan(p.begin * c.n_features, (p.end - p.begin) * c.n_features);
    }
    s.state = states[p.record].data();
    s.position = &positions[p.record];
    s.mca = mca;
    const bool ends_record = p.end == rec.length;
    if (last_only) {
      s.output = ends_record ? OutputSelect::kLast : OutputSelect::kNone;
      s.outputs = outputs[p.record].data();
    } else {
      s.outputs = outputs[p.record].data() + p.begin * c.output_dim;
    }
    return s;
  };

  std::vector<Span> batch;
  // Runs `batch`, adding its value-projection FLOPs to mca_total.
  auto forward = [&]() -> absl::Status {
    counts.assign(batch.size(), McaCounts{});
    for (size_t k = 0; k < batch.size(); ++k) batch[k].mca_counts = &counts[k];
    absl::Status st = backend.Forward(batch);
    if (!st.ok()) return st;
    for (const McaCounts& c : counts) mca_total += c;
    return absl::OkStatus();
  };
  if (stream) {
    int64_t longest = 0;
    for (size_t i = 0; i < n; ++i) longest = std::max(longest, records[first + i].length);
    for (int64_t t = 0; t < longest; ++t) {
      batch.clear();
      for (size_t i = 0; i < n; ++i) {
        if (t < records[first + i].length) batch.push_back(make_span(Piece{i, t, t + 1}));
      }
      absl::Status st = forward();
      if (!st.ok()) return st;
    }
  } else {
    // Cut records into pieces of at most max_batch_tokens and pack consecutive pieces. Pieces of
    // one record never share a batch: every piece but a record's last is a full batch.
    int64_t batch_tokens = 0;
    for (size_t i = 0; i < n; ++i) {
      const int64_t len = records[first + i].length;
      for (int64_t b = 0; b < len; b += max_batch_tokens) {
        const Piece p{i, b, std::min(len, b + max_batch_tokens)};
        if (batch_tokens + (p.end - p.begin) > max_batch_tokens && !batch.empty()) {
          absl::Status st = forward();
          if (!st.ok()) return st;
          batch.clear();
          batch_tokens = 0;
        }
        batch.push_back(make_span(p));
        batch_tokens += p.end - p.begin;
      }
    }
    if (!batch.empty()) {
      absl::Status st = forward();
      if (!st.ok()) return st;
    }
  }
  for (size_t i = 0; i < n; ++i) {
    const SequenceRecord& rec = records[first + i];
    out += FormatOutputLine(rec.id_json, outputs[i], last_only ? 1 : rec.length, c.output_dim);
  }
  return absl::OkStatus();
}

int Run() {
  const std::string model_dir = absl::GetFlag(FLAGS_model_dir);
  const std::string input = absl::GetFlag(FLAGS_input);
  const std::string output = absl::GetFlag(FLAGS_output);
  const std::string mode = absl::GetFlag(FLAGS_output_mode);
  const int64_t max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens);
  if (model_dir.empty() || input.empty() || output.empty()) {
    std::cerr << "aaren-score: --model_dir, --input and --output are required (see --help)\n";
    return 2;
  }
  if (mode != "all" && mode != "last") {
    std::cerr << "aaren-score: --output_mode must be 'all' or 'last', got '" << mode << "'\n";
    return 2;
  }
  if (max_batch_tokens < 1) {
    std::cerr << "aaren-score: --max_batch_tokens must be >= 1\n";
    return 2;
  }
  McaOptions mca;
  if (const std::optional<float> alpha = absl::GetFlag(FLAGS_mca_alpha); alpha.has_value()) {
    if (!(std::isfinite(*alpha) && *alpha >= 0.0f)) {
      std::cerr << "aaren-score: --mca_alpha must be a finite number >= 0, got " << *alpha << "\n";
      return 2;
    }
    mca = McaOptions{true, *alpha, absl::GetFlag(FLAGS_mca_seed)};
  }
  const std::string stats_file = absl::GetFlag(FLAGS_mca_stats_file);
  McaCounts mca_total;
  auto model = Model::Load(model_dir);
  if (!model.ok()) {
    std::cerr << "aaren-score: " << model.status().message() << "\n";
    return 2;
  }
  auto records = ReadSequenceFile(input, (*model)->config());
  if (!records.ok()) {
    std::cerr << "aaren-score: " << records.status().message() << "\n";
    return 2;
  }
  CpuBackend backend(*model, {.num_threads = absl::GetFlag(FLAGS_threads)});

  std::ofstream file;
  if (output != "-") {
    file.open(output, std::ios::binary | std::ios::trunc);
    if (!file) {
      std::cerr << "aaren-score: cannot write " << output << "\n";
      return 1;
    }
  }
  std::ostream& out = output == "-" ? std::cout : file;
  const auto start = std::chrono::steady_clock::now();
  int64_t tokens = 0;
  // Groups of consecutive records bound the memory held for outputs.
  for (size_t first = 0; first < records->size();) {
    size_t last = first;
    int64_t group_tokens = 0;
    // A group bounds the tokens per Forward: with the scan, the group's tokens; with --stream,
    // its sequences (each contributes one token per step).
    const bool stream = absl::GetFlag(FLAGS_stream);
    while (last < records->size() &&
           (last == first ||
            (stream ? static_cast<int64_t>(last - first) : group_tokens) < max_batch_tokens)) {
      group_tokens += (*records)[last++].length;
    }
    std::string text;
    absl::Status st =
        ScoreGroup(backend, *records, first, last, mode == "last", absl::GetFlag(FLAGS_stream),
                   max_batch_tokens, mca, mca_total, text);
    if (!st.ok()) {
      std::cerr << "aaren-score: " << st.message() << "\n";
      return 1;
    }
    out << text;
    tokens += group_tokens;
    first = last;
  }
  out.flush();
  if (!out) {
    std::cerr << "aaren-score: error writing " << output << "\n";
    return 1;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cerr << "aaren-score: " << records->size() << " sequences, " << tokens << " tokens in "
            << seconds << " s (" << static_cast<int64_t>(tokens / std::max(seconds, 1e-9))
            << " tokens/s, " << (absl::GetFlag(FLAGS_stream) ? "stream" : "scan") << ", "
            << backend.num_threads() << " threads)\n";
  if (mca.enabled || !stats_file.empty()) {
    const std::string summary =
        absl::StrCat("{\"mca_enabled\":", mca.enabled ? "true" : "false",
                     ",\"mca_alpha\":", mca.alpha, ",\"mca_seed\":", mca.seed,
                     ",\"tokens\":", tokens, ",\"value_flops\":", mca_total.value_flops,
                     ",\"value_flops_exact\":", mca_total.value_flops_exact, "}\n");
    if (stats_file.empty()) {
      std::cerr << summary;
    } else {
      std::ofstream stats(stats_file, std::ios::binary | std::ios::trunc);
      stats << summary;
      stats.flush();
      if (!stats) {
        std::cerr << "aaren-score: cannot write " << stats_file << "\n";
        return 1;
      }
    }
  }
  return 0;
}

}  // namespace
}  // namespace aaren

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Scores a JSON Lines file of sequences with an Aaren model.\n"
      "  aaren-score --model_dir DIR --input IN.jsonl --output OUT.jsonl "
      "[--output_mode all|last] [--stream] [--threads N] [--max_batch_tokens N]\n"
      "      [--mca_alpha A [--mca_seed S]] [--mca_stats_file PATH]");
  absl::ParseCommandLine(argc, argv);
  return aaren::Run();
}
