// SPDX-License-Identifier: Apache-2.0
#include "tests/test_models.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "core/aaren_state.h"

namespace aaren::testing {

ModelConfig MakeConfig(InputKind input, PositionKind position, int64_t n_heads, int64_t n_layers,
                       int64_t d_model, int64_t d_ff, int64_t output_dim) {
  ModelConfig c;
  c.d_model = d_model;
  c.n_heads = n_heads;
  c.n_layers = n_layers;
  c.d_ff = d_ff;
  c.input_kind = input;
  if (input == InputKind::kTokens) {
    c.vocab_size = 37;
  } else {
    c.n_features = 7;
  }
  c.output_dim = output_dim;
  c.position = position;
  return c;
}

std::map<std::string, Tensor> RandomTensors(const ModelConfig& config, uint64_t seed,
                                            RandomModelOptions options) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::map<std::string, Tensor> tensors;
  for (const auto& [name, shape] : ExpectedTensors(config)) {
    Tensor t{shape, std::vector<float>(static_cast<size_t>(NumElements(shape)))};
    auto ends_with = [&](const std::string& suffix) {
      return name.size() >= suffix.size() &&
             name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    const bool is_norm = name.find("norm") != std::string::npos;
    float mean = 0.0f, scale = 1.0f;
    if (name == "embed.weight") {
      scale = 1.0f;
    } else if (ends_with("attn.query")) {
      scale = options.query_scale;
    } else if (is_norm && ends_with(".weight")) {
      mean = 1.0f;
      scale = 0.1f;
    } else if (ends_with(".bias")) {
      scale = 0.1f;
    } else {  // nn.Linear weight [out, in]
      scale = 1.0f / std::sqrt(static_cast<float>(shape[1]));
    }
    for (float& v : t.data) v = mean + scale * normal(rng);
    tensors.emplace(name, std::move(t));
  }
  return tensors;
}

std::shared_ptr<const Model> RandomModel(const ModelConfig& config, uint64_t seed,
                                         RandomModelOptions options) {
  auto model = Model::FromTensors("random", config, RandomTensors(config, seed, options));
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *model : nullptr;
}

Span Sequence::Slice(int64_t begin, int64_t end, int64_t n_features) const {
  Span s;
  if (!tokens.empty()) {
    s.tokens = absl::MakeConstSpan(tokens).subspan(begin, end - begin);
  } else {
    s.features =
        absl::MakeConstSpan(features).subspan(begin * n_features, (end - begin) * n_features);
  }
  return s;
}

Sequence RandomSequence(const ModelConfig& config, int64_t length, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Sequence seq;
  seq.length = length;
  if (config.input_kind == InputKind::kTokens) {
    std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(config.vocab_size - 1));
    for (int64_t i = 0; i < length; ++i) seq.tokens.push_back(tok(rng));
  } else {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (int64_t i = 0; i < length * config.n_features; ++i) seq.features.push_back(normal(rng));
  }
  return seq;
}

SessionState::SessionState(const ModelConfig& config, int64_t first_position)
    : state(static_cast<size_t>(config.state_floats())), position(first_position) {
  ResetState(state.data(), StateLayout::For(config));
}

std::vector<float> RunSpan(Backend& backend, const Sequence& seq, int64_t begin, int64_t end,
                           SessionState& session) {
  const ModelConfig& c = backend.model().config();
  std::vector<float> out(static_cast<size_t>((end - begin) * c.output_dim));
  Span span = seq.Slice(begin, end, c.n_features);
  span.state = session.state.data();
  span.position = &session.position;
  span.outputs = out.data();
  absl::Status st = backend.Forward({span});
  EXPECT_TRUE(st.ok()) << st;
  return out;
}

double MaxRelativeError(const std::vector<float>& actual, const std::vector<double>& expected) {
  EXPECT_EQ(actual.size(), expected.size());
  double max_diff = 0.0, max_ref = 0.0;
  for (size_t i = 0; i < std::min(actual.size(), expected.size()); ++i) {
    if (!std::isfinite(actual[i])) return INFINITY;
    max_diff = std::max(max_diff, std::abs(double(actual[i]) - expected[i]));
    max_ref = std::max(max_ref, std::abs(expected[i]));
  }
  return max_ref > 0 ? max_diff / max_ref : max_diff;
}

double MaxRelativeError(const std::vector<float>& actual, const std::vector<float>& expected) {
  return MaxRelativeError(actual, std::vector<double>(expected.begin(), expected.end()));
}

}  // namespace aaren::testing
