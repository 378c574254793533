// SPDX-License-Identifier: Apache-2.0
#include "core/score_weights.h"

#include <cmath>

namespace aaren {

FoldedScoreWeights FoldQueryKey(const Model& model, int64_t layer) {
  const ModelConfig& c = model.config();
  const int64_t dh = c.d_head();
  const LayerWeights& w = model.layer(layer);
  const double scale = 1.0 / std::sqrt(static_cast<double>(dh));
  FoldedScoreWeights f{std::vector<float>(c.n_heads * c.d_model), std::vector<float>(c.n_heads)};
  const float* q = w.query->ptr();
  const float* wk = w.key_weight->ptr();
  const float* bk = w.key_bias->ptr();
  for (int64_t h = 0; h < c.n_heads; ++h) {
    for (int64_t i = 0; i < c.d_model; ++i) {
      double acc = 0.0;
      for (int64_t j = 0; j < dh; ++j)
        acc += double(q[h * dh + j]) * wk[(h * dh + j) * c.d_model + i];
      f.matrix[h * c.d_model + i] = static_cast<float>(acc * scale);
    }
    double b = 0.0;
    for (int64_t j = 0; j < dh; ++j) b += double(q[h * dh + j]) * bk[h * dh + j];
    f.bias[h] = static_cast<float>(b * scale);
  }
  return f;
}

}  // namespace aaren
