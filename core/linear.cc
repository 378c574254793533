// SPDX-License-Identifier: Apache-2.0
#include "core/linear.h"

#include <cblas.h>
#include <libxsmm.h>

#include <algorithm>
#include <mutex>

namespace aaren {
namespace {

void AddBias(const float* bias, int64_t m, int64_t n, float* y, int64_t ldy) {
  for (int64_t r = 0; r < m; ++r) {
    float* __restrict row = y + r * ldy;
    for (int64_t j = 0; j < n; ++j) row[j] += bias[j];
  }
}

}  // namespace

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
  if (bias != nullptr) AddBias(bias, m, n, y, ldy);
}

void LinearRows(const float* x, int64_t m, int64_t ldx, const Tensor& weight, const float* bias,
                float* y, int64_t ldy, bool accumulate) {
  LinearRows(x, m, weight.shape[1], ldx, weight.ptr(), weight.shape[0], bias, y, ldy, accumulate);
}

PackedLinear::PackedLinear(const float* weight, int64_t n, int64_t k, const float* bias)
    : n_(n), k_(k), use_jit_(n * k <= kMaxJitWeights), weight_t_(static_cast<size_t>(n * k)) {
  static std::once_flag once;
  std::call_once(once, [] { libxsmm_init(); });
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < k; ++j) weight_t_[j * n + i] = weight[i * k + j];
  }
  if (bias != nullptr) bias_.assign(bias, bias + n);
}

PackedLinear::PackedLinear(const Tensor& weight, const Tensor* bias)
    : PackedLinear(weight.ptr(), weight.shape[0], weight.shape[1],
                   bias != nullptr ? bias->ptr() : nullptr) {}

void PackedLinear::Run(const float* x, int64_t m, int64_t ldx, float* y, int64_t ldy,
                       bool accumulate) const {
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  if (!use_jit_ && m == 1) {
    // One row: a GEMV, memory-bound on W; OpenBLAS's sgemv streams it at several times its
    // sgemm's speed for a single row.
    cblas_sgemv(CblasRowMajor, CblasTrans, static_cast<blasint>(k_), static_cast<blasint>(n_),
                alpha, weight_t_.data(), static_cast<blasint>(n_), x, 1, beta, y, 1);
  } else if (!use_jit_) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<blasint>(m),
                static_cast<blasint>(n_), static_cast<blasint>(k_), alpha, x,
                static_cast<blasint>(ldx), weight_t_.data(), static_cast<blasint>(n_), beta, y,
                static_cast<blasint>(ldy));
  } else {
    const libxsmm_blasint lda = static_cast<libxsmm_blasint>(n_);
    const libxsmm_blasint ldb = static_cast<libxsmm_blasint>(ldx);
    const libxsmm_blasint ldc = static_cast<libxsmm_blasint>(ldy);
    const int flags = LIBXSMM_GEMM_FLAG_NONE;
    for (int64_t r0 = 0; r0 < m; r0 += kRowBlock) {
      const int64_t rows = std::min(kRowBlock, m - r0);
      const float* xb = x + r0 * ldx;
      float* yb = y + r0 * ldy;
      // Column-major C[n, rows] = A[n, k] B[k, rows]: A = W^T as kept, B = x^T, C = y^T.
      const libxsmm_smmfunction kernel = libxsmm_smmdispatch(
          static_cast<libxsmm_blasint>(n_), static_cast<libxsmm_blasint>(rows),
          static_cast<libxsmm_blasint>(k_), &lda, &ldb, &ldc, &alpha, &beta, &flags, nullptr);
      if (kernel != nullptr) {
        kernel(weight_t_.data(), xb, yb);
      } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<blasint>(rows),
                    static_cast<blasint>(n_), static_cast<blasint>(k_), alpha, xb,
                    static_cast<blasint>(ldx), weight_t_.data(), static_cast<blasint>(n_), beta, yb,
                    static_cast<blasint>(ldy));
      }
    }
  }
  if (!bias_.empty()) AddBias(bias_.data(), m, n_, y, ldy);
}

}  // namespace aaren
