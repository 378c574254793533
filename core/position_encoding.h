// SPDX-License-Identifier: Apache-2.0
// Sinusoidal position encoding (DESIGN.md section 2), added in place to activation rows:
//   PE[t, 2i] = sin(t / 10000^(2i/D)),  PE[t, 2i+1] = cos(t / 10000^(2i/D)).
// Angles are evaluated in float64 so that positions in the millions stay accurate; consecutive
// rows advance by an exact rotation, re-anchored every kPositionAnchorStride rows.
#ifndef AAREN_CORE_POSITION_ENCODING_H_
#define AAREN_CORE_POSITION_ENCODING_H_

#include <cstdint>

namespace aaren {

inline constexpr int64_t kPositionAnchorStride = 64;

// Adds PE for positions first_position .. first_position + n_rows - 1 to rows of width d_model
// (row r at x + r * row_stride). Thread-safe.
void AddSinusoidalPositions(float* x, int64_t n_rows, int64_t row_stride, int64_t d_model,
                            int64_t first_position);

}  // namespace aaren

#endif  // AAREN_CORE_POSITION_ENCODING_H_
