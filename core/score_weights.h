// SPDX-License-Identifier: Apache-2.0
// The learned query folded into the key projection. Because the query is a constant per head,
// a head's score s_h = q_h . (W_k x + b_k)_h / sqrt(d_head) = Q_h . x + c_h with
// Q_h = q_h^T W_k[h] / sqrt(d_head) (a [d_model] row) and c_h = q_h . b_k[h] / sqrt(d_head):
// backends compute n_heads scores per token instead of a d_model-wide key. Outputs are the same
// function of the weights; only float rounding differs.
#ifndef AAREN_CORE_SCORE_WEIGHTS_H_
#define AAREN_CORE_SCORE_WEIGHTS_H_

#include <cstdint>
#include <vector>

#include "core/model.h"

namespace aaren {

struct FoldedScoreWeights {
  std::vector<float> matrix;  // [n_heads, d_model], row h = Q_h
  std::vector<float> bias;    // [n_heads], c_h
};

// Folds layer `layer` of `model` (in float64, rounded once). Thread-safe.
FoldedScoreWeights FoldQueryKey(const Model& model, int64_t layer);

}  // namespace aaren

#endif  // AAREN_CORE_SCORE_WEIGHTS_H_
