// SPDX-License-Identifier: Apache-2.0
// The Aaren recurrent state and its combine operator (DESIGN.md section 1).
//
// State of a prefix, per head: (m, u, w) = (running max score, sum of exp(s_i - m),
// sum of exp(s_i - m) v_i), stored as 2 + d_head contiguous floats [m, u, w_0 .. w_{d_head-1}].
// A session's whole state is n_layers x n_heads of these, layer-major then head-major
// (StateLayout). This flat layout is the contract shared by every backend (CPU now, CUDA later)
// and by session export/import: keep it.
#ifndef AAREN_CORE_AAREN_STATE_H_
#define AAREN_CORE_AAREN_STATE_H_

#include <cmath>
#include <cstdint>
#include <limits>

#include "core/model_config.h"

namespace aaren {

inline constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Offsets into a session's flat state buffer.
struct StateLayout {
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t d_head = 0;

  static StateLayout For(const ModelConfig& c) { return {c.n_layers, c.n_heads, c.d_head()}; }
  int64_t head_floats() const { return 2 + d_head; }
  int64_t layer_floats() const { return n_heads * head_floats(); }
  int64_t total_floats() const { return n_layers * layer_floats(); }
  int64_t offset(int64_t layer, int64_t head) const {
    return layer * layer_floats() + head * head_floats();
  }
};

// Writes the identity (empty prefix) state (-inf, 0, 0) into every (m, u, w[d_head]) record of
// a session's state buffer (layout.total_floats() floats).
inline void ResetState(float* state, const StateLayout& layout) {
  for (int64_t r = 0; r < layout.n_layers * layout.n_heads; ++r) {
    float* p = state + r * layout.head_floats();
    p[0] = kNegInf;
    p[1] = 0.0f;
    for (int64_t j = 0; j < layout.d_head; ++j) p[2 + j] = 0.0f;
  }
}

// a := a (+) b, with a on the left (the operator is associative, not commutative). Each side is
// a (m, u, w[d_head]) record. Exact when either side is the identity: (-inf, 0, 0) (+) B == B and
// A (+) (-inf, 0, 0) == A bit for bit.
inline void CombineInto(float* a, const float* b, int64_t d_head) {
  if (b[0] == kNegInf) return;  // A (+) identity: A, untouched
  if (a[0] == kNegInf) {        // identity (+) B: B, copied
    for (int64_t j = 0; j < 2 + d_head; ++j) a[j] = b[j];
    return;
  }
  const float m = std::fmax(a[0], b[0]);
  const float sa = std::exp(a[0] - m);
  const float sb = std::exp(b[0] - m);
  a[0] = m;
  a[1] = a[1] * sa + b[1] * sb;
  for (int64_t j = 0; j < d_head; ++j) a[2 + j] = a[2 + j] * sa + b[2 + j] * sb;
}

}  // namespace aaren

#endif  // AAREN_CORE_AAREN_STATE_H_
