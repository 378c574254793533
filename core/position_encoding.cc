// SPDX-License-Identifier: Apache-2.0
#include "core/position_encoding.h"

#include <cmath>
#include <vector>

namespace aaren {

void AddSinusoidalPositions(float* x, int64_t n_rows, int64_t row_stride, int64_t d_model,
                            int64_t first_position) {
  const int64_t n_pairs = (d_model + 1) / 2;
  std::vector<double> freq(n_pairs), cos_step(n_pairs), sin_step(n_pairs), s(n_pairs), c(n_pairs);
  for (int64_t i = 0; i < n_pairs; ++i) {
    freq[i] = std::pow(10000.0, -static_cast<double>(2 * i) / static_cast<double>(d_model));
    cos_step[i] = std::cos(freq[i]);
    sin_step[i] = std::sin(freq[i]);
  }
  for (int64_t r = 0; r < n_rows; ++r) {
    if (r % kPositionAnchorStride == 0) {
      const double t = static_cast<double>(first_position + r);
      for (int64_t i = 0; i < n_pairs; ++i) {
        s[i] = std::sin(t * freq[i]);
        c[i] = std::cos(t * freq[i]);
      }
    } else {
      // (sin, cos)(t + 1) from (sin, cos)(t): rotation by the pair's frequency.
      for (int64_t i = 0; i < n_pairs; ++i) {
        const double s_next = s[i] * cos_step[i] + c[i] * sin_step[i];
        c[i] = c[i] * cos_step[i] - s[i] * sin_step[i];
        s[i] = s_next;
      }
    }
    float* row = x + r * row_stride;
    for (int64_t i = 0; i < n_pairs; ++i) {
      row[2 * i] += static_cast<float>(s[i]);
      if (2 * i + 1 < d_model) row[2 * i + 1] += static_cast<float>(c[i]);
    }
  }
}

}  // namespace aaren
