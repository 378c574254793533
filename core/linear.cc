// SPDX-License-Identifier: Apache-2.0
#include "core/linear.h"

#include <cblas.h>

#include <mutex>

namespace aaren {

void SetBlasSingleThreaded() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}

void LinearRows(const float* x, int64_t m, int64_t k, int64_t ldx, const float* weight, int64_t n,
                const float* bias, float* y, int64_t ldy, bool accumulate) {
  if (m == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(m),
              static_cast<blasint>(n), static_cast<blasint>(k), 1.0f, x, static_cast<blasint>(ldx),
              weight, static_cast<blasint>(k), accumulate ? 1.0f : 0.0f, y,
              static_cast<blasint>(ldy));
  if (bias != nullptr) {
    for (int64_t r = 0; r < m; ++r) {
      float* __restrict row = y + r * ldy;
      for (int64_t j = 0; j < n; ++j) row[j] += bias[j];
    }
  }
}

void LinearRows(const float* x, int64_t m, int64_t ldx, const Tensor& weight, const float* bias,
                float* y, int64_t ldy, bool accumulate) {
  LinearRows(x, m, weight.shape[1], ldx, weight.ptr(), weight.shape[0], bias, y, ldy, accumulate);
}

}  // namespace aaren
