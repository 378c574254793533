// SPDX-License-Identifier: Apache-2.0
// Prints, as a Markdown table, the bytes of one session's Aaren state next to the KV cache a
// Transformer of the same shape keeps (2 x L x D floats per token), at 1k and 100k tokens.
//   state_bytes_table [MODEL_DIR ...]     (default: the benchmark shape D=256, H=8, L=4)
#include <cstdio>
#include <string>
#include <vector>

#include "core/model_config.h"

namespace {

void Row(const std::string& name, const aaren::ModelConfig& c) {
  const double kv_per_token = 2.0 * c.n_layers * c.d_model * 4;
  std::printf("| %s | %lld/%lld/%lld | %lld B | %.0f B | %.1f MB (%.0fx) | %.1f MB (%.0fx) |\n",
              name.c_str(), (long long)c.d_model, (long long)c.n_heads, (long long)c.n_layers,
              (long long)c.state_bytes(), kv_per_token, kv_per_token * 1e3 / 1e6,
              kv_per_token * 1e3 / c.state_bytes(), kv_per_token * 1e5 / 1e6,
              kv_per_token * 1e5 / c.state_bytes());
}

}  // namespace

int main(int argc, char** argv) {
  std::printf(
      "| model | D/H/L | Aaren state per session (any length) | KV cache per token | "
      "KV cache at 1k tokens (vs state) | KV cache at 100k tokens (vs state) |\n");
  std::printf("|---|---|---|---|---|---|\n");
  aaren::ModelConfig bench;
  bench.d_model = 256;
  bench.n_heads = 8;
  bench.n_layers = 4;
  bench.d_ff = 1024;
  bench.vocab_size = 256;
  bench.output_dim = 256;
  Row("benchmark shape", bench);
  for (int i = 1; i < argc; ++i) {
    auto c = aaren::ReadModelConfig(std::string(argv[i]) + "/config.json");
    if (!c.ok()) {
      std::fprintf(stderr, "%s\n", std::string(c.status().message()).c_str());
      return 1;
    }
    Row(argv[i], *c);
  }
  return 0;
}
