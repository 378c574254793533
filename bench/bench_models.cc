// SPDX-License-Identifier: Apache-2.0
#include "bench/bench_models.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <random>
#include <thread>
#include <vector>

namespace aaren::bench {

ModelConfig BenchConfig(int64_t n_layers) {
  ModelConfig c;
  c.d_model = 256;
  c.n_heads = 8;
  c.n_layers = n_layers;
  c.d_ff = 1024;
  c.input_kind = InputKind::kTokens;
  c.vocab_size = 256;
  c.output_dim = 256;
  c.position = PositionKind::kSinusoidal;
  return c;
}

std::shared_ptr<const Model> RandomBenchModel(const ModelConfig& config, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::map<std::string, Tensor> tensors;
  for (const auto& [name, shape] : ExpectedTensors(config)) {
    Tensor t{shape, std::vector<float>(static_cast<size_t>(NumElements(shape)))};
    const float scale = shape.size() == 2 ? 1.0f / std::sqrt(float(shape[1])) : 0.1f;
    for (float& v : t.data) v = scale * normal(rng);
    tensors.emplace(name, std::move(t));
  }
  auto model = Model::FromTensors("bench", config, std::move(tensors));
  if (!model.ok()) {
    std::cerr << model.status() << "\n";
    std::abort();
  }
  return *model;
}

std::vector<int32_t> RandomTokens(int64_t n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> dist(0, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> v(n);
  for (auto& t : v) t = dist(rng);
  return v;
}

std::vector<float> RandomFloats(int64_t n, uint64_t seed, float scale) {
  // Chunks of 2^20 values, each from its own generator seeded by (seed, chunk), filled by all
  // cores: the GPU benchmarks need 4-16 GB of inputs, which one mt19937 takes minutes to make.
  // The values depend on n, seed and scale only, not on the number of threads.
  constexpr int64_t kChunk = int64_t{1} << 20;
  std::vector<float> v(static_cast<size_t>(n));
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::atomic<int64_t> next{0};
  auto fill = [&] {
    for (int64_t c = next++; c < chunks; c = next++) {
      std::seed_seq seq{seed, static_cast<uint64_t>(c)};
      std::mt19937_64 rng(seq);
      std::normal_distribution<float> normal(0.0f, scale);
      const int64_t end = std::min(n, (c + 1) * kChunk);
      for (int64_t i = c * kChunk; i < end; ++i) v[static_cast<size_t>(i)] = normal(rng);
    }
  };
  const int64_t threads =
      std::min<int64_t>(chunks, std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::thread> workers;
  for (int64_t t = 1; t < threads; ++t) workers.emplace_back(fill);
  fill();
  for (std::thread& w : workers) w.join();
  return v;
}

}  // namespace aaren::bench
