// SPDX-License-Identifier: Apache-2.0
// mca_eval: Monte-Carlo Attention's trade-off on the bundled demo models' held-out sets.
//
// For each model and each alpha (plus the exact run): every held-out sequence scored from a fresh
// state in one Forward (CPU backend), and reported: the fraction of value-projection FLOPs spent,
// the fraction of whole-model FLOPs spent, the task metric (demo-lm: next-token accuracy; demo-ts:
// MSE, as tools/eval_demo.py defines them) against the exact run's, and wall time (best of
// --repeats) against the exact run's. Prints a Markdown table and one JSON line per row.
//
//   build/bench/mca_eval --model_dir=models/demo-lm,models/demo-ts
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
#include "core/aaren_state.h"
#include "core/cpu_backend.h"

ABSL_FLAG(std::vector<std::string>, model_dir, {},
          "Comma-separated model directories with heldout.jsonl");
ABSL_FLAG(std::string, alphas, "0.05,0.1,0.2,0.5,1.0", "MCA alphas to evaluate");
ABSL_FLAG(uint64_t, seed, 0, "MCA seed");
ABSL_FLAG(int, threads, 0, "CPU backend threads (0: one per core)");
ABSL_FLAG(int, repeats, 3, "Timed runs per row (the best is reported)");

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

Run Evaluate(CpuBackend& backend, const Heldout& data, McaOptions mca, int repeats) {
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
    const absl::Status st = backend.Forward(spans);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!st.ok()) {
      std::fprintf(stderr, "Forward: %s\n", std::string(st.message()).c_str());
      std::exit(1);
    }
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
  for (const std::string& dir : absl::GetFlag(FLAGS_model_dir)) {
    auto model = Model::Load(dir);
    if (!model.ok()) {
      std::fprintf(stderr, "%s\n", std::string(model.status().message()).c_str());
      return 1;
    }
    const ModelConfig& c = (*model)->config();
    const Heldout data = ReadHeldout(dir + "/heldout.jsonl", c);
    CpuBackend backend(*model, {.num_threads = absl::GetFlag(FLAGS_threads)});
    const int repeats = absl::GetFlag(FLAGS_repeats);
    const Run exact = Evaluate(backend, data, {}, repeats);
    const double other = OtherFlopsPerToken(c) * exact.tokens;
    const char* metric = c.input_kind == InputKind::kTokens ? "accuracy" : "mse";
    auto row = [&](const char* label, float alpha, const Run& r) {
      const double value_frac = double(r.counts.value_flops) / r.counts.value_flops_exact;
      const double whole_frac =
          (other + r.counts.value_flops) / (other + r.counts.value_flops_exact);
      std::printf("| %s | %s | %.3f | %.3f | %s %.4f | %+.4f | %.1f | %.2fx |\n",
                  (*model)->name().c_str(), label, value_frac, whole_frac, metric, r.metric,
                  r.metric - exact.metric, r.seconds * 1e3, r.seconds / exact.seconds);
      std::fprintf(
          stderr,
          "{\"model\":\"%s\",\"alpha\":%g,\"value_flops_fraction\":%.5f,"
          "\"model_flops_fraction\":%.5f,\"metric\":\"%s\",\"value\":%.6f,"
          "\"exact_value\":%.6f,\"seconds\":%.6f,\"exact_seconds\":%.6f,\"tokens\":%lld}\n",
          (*model)->name().c_str(), alpha, value_frac, whole_frac, metric, r.metric, exact.metric,
          r.seconds, exact.seconds, (long long)r.tokens);
    };
    row("exact", 0.0f, exact);
    for (float alpha : alphas) {
      const Run r = Evaluate(backend, data, {true, alpha, absl::GetFlag(FLAGS_seed)}, repeats);
      row(std::to_string(alpha).substr(0, 4).c_str(), alpha, r);
    }
  }
  return 0;
}
