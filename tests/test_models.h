// SPDX-License-Identifier: Apache-2.0
// Test support: random Aaren models and inputs, and helpers to drive a Backend.
#ifndef AAREN_TESTS_TEST_MODELS_H_
#define AAREN_TESTS_TEST_MODELS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/model.h"

namespace aaren::testing {

struct RandomModelOptions {
  // Std-dev of the learned queries: scores are of this order, so it sets how peaked attention is.
  float query_scale = 2.0f;
};

ModelConfig MakeConfig(InputKind input, PositionKind position, int64_t n_heads, int64_t n_layers,
                       int64_t d_model = 32, int64_t d_ff = 64, int64_t output_dim = 5);

// Random weights for every tensor of `config` (weights ~ N(0, 1/fan_in), biases and norm
// parameters perturbed away from 0/1 so that each one matters). Deterministic in `seed`.
std::map<std::string, Tensor> RandomTensors(const ModelConfig& config, uint64_t seed,
                                            RandomModelOptions options = {});
std::shared_ptr<const Model> RandomModel(const ModelConfig& config, uint64_t seed,
                                         RandomModelOptions options = {});

// One sequence's inputs (by the model's input kind).
struct Sequence {
  std::vector<int32_t> tokens;
  std::vector<float> features;  // [length, n_features]
  int64_t length = 0;
  // Rows [begin, end) as a Span input (state/position/outputs left for the caller).
  Span Slice(int64_t begin, int64_t end, int64_t n_features) const;
};
Sequence RandomSequence(const ModelConfig& config, int64_t length, uint64_t seed);

// A session's state + position, starting from the identity state at `position`.
struct SessionState {
  std::vector<float> state;
  int64_t position = 0;
  explicit SessionState(const ModelConfig& config, int64_t first_position = 0);
};

// Runs rows [begin, end) of `seq` as one span on `session`; returns [end-begin, output_dim].
std::vector<float> RunSpan(Backend& backend, const Sequence& seq, int64_t begin, int64_t end,
                           SessionState& session);

// max_i |actual_i - expected_i| / max_i |expected_i| (the infinity-norm relative error).
double MaxRelativeError(const std::vector<float>& actual, const std::vector<double>& expected);
double MaxRelativeError(const std::vector<float>& actual, const std::vector<float>& expected);

}  // namespace aaren::testing

#endif  // AAREN_TESTS_TEST_MODELS_H_
