// SPDX-License-Identifier: Apache-2.0
// Models and inputs for the benchmarks: random weights of the benchmark shapes (timing does not
// depend on the values, only on the shapes).
#ifndef AAREN_BENCH_BENCH_MODELS_H_
#define AAREN_BENCH_BENCH_MODELS_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "core/model.h"

namespace aaren::bench {

// The benchmark model of the issue: D = 256, H = 8, token input (vocab 256), sinusoidal
// positions, d_ff = 4D, output_dim 256.
ModelConfig BenchConfig(int64_t n_layers = 4);

std::shared_ptr<const Model> RandomBenchModel(const ModelConfig& config, uint64_t seed = 1);

std::vector<int32_t> RandomTokens(int64_t n, int64_t vocab, uint64_t seed = 2);
std::vector<float> RandomFloats(int64_t n, uint64_t seed = 3, float scale = 1.0f);

}  // namespace aaren::bench

#endif  // AAREN_BENCH_BENCH_MODELS_H_
