// SPDX-License-Identifier: Apache-2.0
#include "core/position_encoding.h"

#include <cmath>
#include <vector>

namespace aaren {

namespace {

// Per-pair frequencies and one-step rotations for one d_model, computed once per thread (a
// streaming step encodes one row per span, so recomputing them per call would cost more pow/sin/
// cos than the row itself), plus the running (sin, cos) scratch.
struct PairTable {
  int64_t d_model = -1;
  std::vector<double> freq, cos_step, sin_step, s, c;
};

PairTable& TableFor(int64_t d_model) {
  thread_local PairTable table;
  if (table.d_model != d_model) {
    const int64_t n_pairs = (d_model + 1) / 2;
    table.d_model = d_model;
    table.freq.resize(n_pairs);
    table.cos_step.resize(n_pairs);
    table.sin_step.resize(n_pairs);
    table.s.resize(n_pairs);
    table.c.resize(n_pairs);
    for (int64_t i = 0; i < n_pairs; ++i) {
      table.freq[i] = std::pow(10000.0, -static_cast<double>(2 * i) / static_cast<double>(d_model));
      table.cos_step[i] = std::cos(table.freq[i]);
      table.sin_step[i] = std::sin(table.freq[i]);
    }
  }
  return table;
}

}  // namespace

void AddSinusoidalPositions(float* x, int64_t n_rows, int64_t row_stride, int64_t d_model,
                            int64_t first_position) {
  const int64_t n_pairs = (d_model + 1) / 2;
  PairTable& table = TableFor(d_model);
  const std::vector<double>& freq = table.freq;
  const std::vector<double>& cos_step = table.cos_step;
  const std::vector<double>& sin_step = table.sin_step;
  std::vector<double>& s = table.s;
  std::vector<double>& c = table.c;
  for (int64_t r = 0; r < n_rows; ++r) {
    if (r % kPositionAnchorStride == 0) {
      const double t = static_cast<double>(first_position + r);
      // One sincos per pair (glibc computes both from one argument reduction, with the same
      // results as sin and cos): a streamed token's row is always an anchor.
      for (int64_t i = 0; i < n_pairs; ++i) sincos(t * freq[i], &s[i], &c[i]);
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
