// SPDX-License-Identifier: Apache-2.0
// StateBounds: limits that every state a model can reach satisfies, derived from its weights, so
// that an imported snapshot can be checked for being a state some sequence produces rather than
// just finite numbers (a state that no sequence produces could never be appended to: u = 0 with a
// finite m divides by zero, and a w near FLT_MAX overflows on the next combine).
//
// Why they hold. LayerNorm's output h = gamma * xhat + beta has |xhat_i| <= sqrt(D - 1) for any
// input, so |h_i| <= |gamma_i| sqrt(D - 1) + |beta_i| =: hmax_i. A token's score in head h is
// s = q_h . (W_k h + b_k)_h / sqrt(d_head), so |s| <= sum_i |(q_h^T W_k[h])_i| hmax_i /
// sqrt(d_head)
// + |q_h . b_k[h]| / sqrt(d_head). A value coordinate is |v_d| <= sum_i |W_v[d, i]| hmax_i + |b_d|
// exactly, and with Monte-Carlo Attention each sampled term W_v[d, j] h_j / p_j is at most
// max_d |W_v[d, j]| hmax_j / p_j (core/mca.h), so the larger of the two bounds both. A state
// (m, u, w) of a prefix of n >= 1 tokens then has |m| <= max |s|, 1 <= u <= n (the maximal
// term is exactly 1, the others at most 1) and |w_d| <= u max |v_d| (w / u is a convex
// combination of values); a prefix of 0 tokens is the identity (-inf, 0, 0).
//
// Thread-safety: immutable once computed.
#ifndef AAREN_CORE_STATE_BOUNDS_H_
#define AAREN_CORE_STATE_BOUNDS_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "core/aaren_state.h"
#include "core/model.h"

namespace aaren {

// The largest position a session may reach: 2^53, the last integer a float64 position code
// represents exactly.
inline constexpr int64_t kMaxPosition = int64_t{1} << 53;

struct StateBounds {
  StateLayout layout;
  std::vector<float> score;  // [n_layers * n_heads]: max |s| of a token in (layer, head)
  std::vector<float> value;  // [n_layers * d_model]: max |v_d| (exact or MCA) in a layer
};

// Computes the bounds from the model's weights (float64 sums, rounded up). O(L D^2).
StateBounds ComputeStateBounds(const Model& model);

// OK when `state` (layout.total_floats() floats) satisfies the bounds for a session at
// `position`; otherwise INVALID_ARGUMENT naming `field`, the layer, head and value, and the rule
// broken. Allows float rounding (relative 1e-3) on each bound.
absl::Status CheckReachableState(const float* state, int64_t position, const StateBounds& bounds,
                                 absl::string_view field);

}  // namespace aaren

#endif  // AAREN_CORE_STATE_BOUNDS_H_
