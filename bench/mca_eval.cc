// SPDX-License-Identifier: Apache-2.0
// mca_eval: Monte-Carlo Attention's trade-off on the bundled demo models' held-out sets.
//
// For each model and each alpha (plus the exact run): every held-out sequence scored from a fresh
// state in one Forward (CPU backend), and reported: the fraction of value-projection FLOPs spent,
// the fraction of whole-model FLOPs spent, the task metric (demo-lm: next-token accuracy; demo-ts:
// MSE, as tools/eval_demo.py defines them) against the exact run's, and wall time (best of
// --repeats) against the exact run's. Prints a Markdown table and one JSON line per row.
//
// --mode=stream runs the same sequences the way a server's ticks do: every sequence appends one
// token per Forward (one span of length 1 each), so a step is a batch of as many spans as there
// are sequences. --synthetic=D,H,L adds a model of that shape with random weights (vocab and
// output_dim 256, d_ff = 4D, sinusoidal positions) scored on --synthetic_sequences random
// sequences of --synthetic_length tokens; with no targets its metric is the top-1 agreement of
// each output row with the exact run's (1.0 for the exact run).
//
//   build/bench/mca_eval --model_dir=models/demo-lm,models/demo-ts
//   build/bench/mca_eval --synthetic=1024,16,2 --mode=stream --threads 1
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/bench_models.h"
#include "core/aaren_state.h"
#include "core/cpu_backend.h"

ABSL_FLAG(std::vector<std::string>, model_dir, {},
          "Comma-separated model directories with heldout.jsonl");
ABSL_FLAG(std::string, alphas, "0.05,0.1,0.2,0.5,1.0", "MCA alphas to evaluate");
ABSL_FLAG(uint64_t, seed, 0, "MCA seed");
ABSL_FLAG(int, threads, 0, "CPU backend threads (0: one per core)");
ABSL_FLAG(int, repeats, 3, "Timed runs per row (the best is reported)");
ABSL_FLAG(std::string, mode, "score",
          "score: each sequence in one span of one Forward; stream: one token per sequence per "
          "Forward");
ABSL_FLAG(std::string, synthetic, "",
          "D,H,L: also evaluate a random-weight model of that shape on random sequences");
ABSL_FLAG(int, synthetic_sequences, 16, "Sequences for --synthetic");
ABSL_FLAG(int, synthetic_length, 256, "Tokens per sequence for --synthetic");

namespace aaren {
namespace {

struct Heldout {
  std::vector<std::vector<int32_t>> tokens;
  std::vector<std::vector<float>> features;  // [n * n_features]
  std::vector<std::vector<float>> targets;   // tokens: [n] ids; features: [n * output_dim]
};

Heldout ReadHeldout(const std::string& path, const ModelConfig& c) {
  Heldout h;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const nlohmann::json j = nlohmann::json::parse(line);
    std::vector<float> targets;
    if (c.input_kind == InputKind::kTokens) {
      h.tokens.push_back(j.at("tokens").get<std::vector<int32_t>>());
      for (int t : j.at("targets").get<std::vector<int>>()) targets.push_back(float(t));
    } else {
      std::vector<float> f;
      for (const auto& row : j.at("features")) {
        for (float v : row.get<std::vector<float>>()) f.push_back(v);
      }
      h.features.push_back(std::move(f));
      for (const auto& row : j.at("targets")) {
        for (float v : row.get<std::vector<float>>()) targets.push_back(v);
      }
    }
    h.targets.push_back(std::move(targets));
  }
  return h;
}

struct Run {
  double seconds = 0;
  double metric = 0;
  McaCounts counts;
  int64_t tokens = 0;
};

void CheckOk(const absl::Status& st) {
  if (!st.ok()) {
    std::fprintf(stderr, "Forward: %s\n", std::string(st.message()).c_str());
    std::exit(1);
  }
}

// Runs `whole` (one span per sequence, from position 0) one token per sequence per Forward, as
// a server's ticks do when every session appends one token at a time; the outputs, states,
// positions and summed counts end as one Forward of `whole` would leave them (to rounding).
void RunStreaming(CpuBackend& backend, const std::vector<Span>& whole) {
  const ModelConfig& c = backend.model().config();
  const int64_t nf = c.n_features;
  int64_t longest = 0;
  for (const Span& s : whole) longest = std::max(longest, s.length(nf));
  std::vector<McaCounts> step_counts(whole.size());
  std::vector<size_t> which;
  std::vector<Span> step;
  for (int64_t t = 0; t < longest; ++t) {
    step.clear();
    which.clear();
    for (size_t i = 0; i < whole.size(); ++i) {
      const Span& w = whole[i];
      if (w.length(nf) <= t) continue;
      Span s = w;
      if (c.input_kind == InputKind::kTokens) {
        s.tokens = w.tokens.subspan(t, 1);
      } else {
        s.features = w.features.subspan(t * nf, nf);
      }
      s.outputs = w.outputs + t * c.output_dim;
      step_counts[i] = {};
      s.mca_counts = &step_counts[i];
      step.push_back(s);
      which.push_back(i);
    }
    CheckOk(backend.Forward(step));
    for (size_t i : which) *whole[i].mca_counts += step_counts[i];
  }
}

// `exact_rows`, when set, receives the best run's outputs (one vector per sequence).
Run Evaluate(CpuBackend& backend, const Heldout& data, McaOptions mca, int repeats, bool stream,
             std::vector<std::vector<float>>* exact_rows = nullptr) {
  const ModelConfig& c = backend.model().config();
  const size_t n_seq = data.targets.size();
  const int64_t sf = c.state_floats();
  Run best;
  best.seconds = std::numeric_limits<double>::infinity();
  for (int rep = 0; rep < repeats; ++rep) {
    std::vector<std::vector<float>> states(n_seq, std::vector<float>(sf));
    std::vector<std::vector<float>> outputs(n_seq);
    std::vector<int64_t> positions(n_seq, 0);
    std::vector<McaCounts> counts(n_seq);
    std::vector<Span> spans(n_seq);
    int64_t tokens = 0;
    for (size_t i = 0; i < n_seq; ++i) {
      ResetState(states[i].data(), StateLayout::For(c));
      Span& s = spans[i];
      int64_t n;
      if (c.input_kind == InputKind::kTokens) {
        s.tokens = data.tokens[i];
        n = static_cast<int64_t>(data.tokens[i].size());
      } else {
        s.features = data.features[i];
        n = static_cast<int64_t>(data.features[i].size()) / c.n_features;
      }
      tokens += n;
      outputs[i].resize(n * c.output_dim);
      s.state = states[i].data();
      s.position = &positions[i];
      s.outputs = outputs[i].data();
      s.mca = mca;
      s.mca_counts = &counts[i];
    }
    const auto t0 = std::chrono::steady_clock::now();
    if (stream) {
      RunStreaming(backend, spans);
    } else {
      CheckOk(backend.Forward(spans));
    }
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (secs >= best.seconds) continue;
    Run r;
    r.seconds = secs;
    r.tokens = tokens;
    double total = 0;
    int64_t count = 0;
    for (size_t i = 0; i < n_seq; ++i) {
      r.counts += counts[i];
      const std::vector<float>& out = outputs[i];
      if (c.input_kind == InputKind::kTokens) {
        for (size_t t = 0; t < data.targets[i].size(); ++t) {
          const float* row = &out[t * c.output_dim];
          const int64_t arg = std::max_element(row, row + c.output_dim) - row;  // first on ties
          total += arg == static_cast<int64_t>(data.targets[i][t]);
          ++count;
        }
      } else {
        for (size_t k = 0; k < data.targets[i].size(); ++k) {
          const double e = double(out[k]) - data.targets[i][k];
          total += e * e;
          ++count;
        }
      }
    }
    r.metric = total / count;
    best = r;
    if (exact_rows != nullptr) *exact_rows = std::move(outputs);
  }
  return best;
}

// Whole-model FLOPs per token apart from the value projection (2 per multiply-add): the folded
// scores, the output projection and the FFN per layer, the head, the input projection.
double OtherFlopsPerToken(const ModelConfig& c) {
  const double d = c.d_model;
  double f = c.n_layers * (2 * c.n_heads * d + 2 * d * d + 4 * d * c.d_ff) + 2 * d * c.output_dim;
  if (c.input_kind == InputKind::kFeatures) f += 2.0 * c.n_features * d;
  return f;
}

}  // namespace
}  // namespace aaren

int main(int argc, char** argv) {
  using namespace aaren;
  absl::ParseCommandLine(argc, argv);
  std::vector<float> alphas;
  for (absl::string_view a : absl::StrSplit(absl::GetFlag(FLAGS_alphas), ',')) {
    float v;
    if (!absl::SimpleAtof(a, &v)) {
      std::fprintf(stderr, "--alphas: bad value\n");
      return 2;
    }
    alphas.push_back(v);
  }
  std::printf(
      "| model | alpha | value-projection FLOPs | whole-model FLOPs | metric | vs exact | "
      "wall ms | vs exact |\n|---|---|---|---|---|---|---|---|\n");
  const bool stream = absl::GetFlag(FLAGS_mode) == "stream";
  if (!stream && absl::GetFlag(FLAGS_mode) != "score") {
    std::fprintf(stderr, "--mode: score or stream\n");
    return 2;
  }
  const int repeats = absl::GetFlag(FLAGS_repeats);
  // Held-out data without targets (synthetic): the targets become the exact run's top-1 rows.
  auto evaluate_model = [&](const std::shared_ptr<const Model>& model, Heldout data) {
    const ModelConfig& c = model->config();
    CpuBackend backend(model, {.num_threads = absl::GetFlag(FLAGS_threads)});
    const bool agreement = data.targets.empty();
    std::vector<std::vector<float>> exact_rows;
    if (agreement) data.targets.resize(data.tokens.size());
    Run exact = Evaluate(backend, data, {}, repeats, stream, &exact_rows);
    if (agreement) {
      for (size_t i = 0; i < exact_rows.size(); ++i) {
        for (size_t r = 0; r * c.output_dim < exact_rows[i].size(); ++r) {
          const float* row = &exact_rows[i][r * c.output_dim];
          data.targets[i].push_back(float(std::max_element(row, row + c.output_dim) - row));
        }
      }
      exact.metric = 1.0;  // agreement of the exact run with itself
    }
    const double other = OtherFlopsPerToken(c) * exact.tokens;
    const char* metric = agreement                            ? "top-1 agreement"
                         : c.input_kind == InputKind::kTokens ? "accuracy"
                                                              : "mse";
    auto row = [&](const char* label, float alpha, const Run& r) {
      const double value_frac = double(r.counts.value_flops) / r.counts.value_flops_exact;
      const double whole_frac =
          (other + r.counts.value_flops) / (other + r.counts.value_flops_exact);
      std::printf("| %s | %s | %.3f | %.3f | %s %.4f | %+.4f | %.1f | %.2fx |\n",
                  model->name().c_str(), label, value_frac, whole_frac, metric, r.metric,
                  r.metric - exact.metric, r.seconds * 1e3, r.seconds / exact.seconds);
      std::fprintf(
          stderr,
          "{\"model\":\"%s\",\"mode\":\"%s\",\"alpha\":%g,\"value_flops_fraction\":%.5f,"
          "\"model_flops_fraction\":%.5f,\"metric\":\"%s\",\"value\":%.6f,"
          "\"exact_value\":%.6f,\"seconds\":%.6f,\"exact_seconds\":%.6f,\"tokens\":%lld}\n",
          model->name().c_str(), stream ? "stream" : "score", alpha, value_frac, whole_frac, metric,
          r.metric, exact.metric, r.seconds, exact.seconds, (long long)r.tokens);
    };
    row("exact", 0.0f, exact);
    for (float alpha : alphas) {
      const Run r =
          Evaluate(backend, data, {true, alpha, absl::GetFlag(FLAGS_seed)}, repeats, stream);
      row(std::to_string(alpha).substr(0, 4).c_str(), alpha, r);
    }
  };
  for (const std::string& dir : absl::GetFlag(FLAGS_model_dir)) {
    auto model = Model::Load(dir);
    if (!model.ok()) {
      std::fprintf(stderr, "%s\n", std::string(model.status().message()).c_str());
      return 1;
    }
    evaluate_model(*model, ReadHeldout(dir + "/heldout.jsonl", (*model)->config()));
  }
  if (const std::string shape = absl::GetFlag(FLAGS_synthetic); !shape.empty()) {
    std::vector<int64_t> dims;
    bool parsed = true;
    for (absl::string_view d : absl::StrSplit(shape, ',')) {
      int64_t v = 0;
      parsed = parsed && absl::SimpleAtoi(d, &v) && v > 0;
      dims.push_back(v);
    }
    if (!parsed || dims.size() != 3 || dims[0] % dims[1] != 0) {
      std::fprintf(stderr, "--synthetic: D,H,L with H dividing D\n");
      return 2;
    }
    ModelConfig c = bench::BenchConfig(dims[2]);
    c.d_model = dims[0];
    c.n_heads = dims[1];
    c.d_ff = 4 * dims[0];
    Heldout data;
    const int n_seq = absl::GetFlag(FLAGS_synthetic_sequences);
    for (int i = 0; i < n_seq; ++i) {
      data.tokens.push_back(
          bench::RandomTokens(absl::GetFlag(FLAGS_synthetic_length), c.vocab_size, 100 + i));
    }
    evaluate_model(bench::RandomBenchModel(c), std::move(data));
  }
  return 0;
}
