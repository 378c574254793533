// SPDX-License-Identifier: Apache-2.0
// Dense layers on the CPU through OpenBLAS' sgemm (faster than Eigen's GEMM on AVX-512 hosts:
// ~90 vs ~64 GFLOP/s single-threaded on the CI machine).
//
// Callers parallelise over row blocks themselves, so OpenBLAS' own threading is switched off
// once per process (SetBlasSingleThreaded) and the calls below may run concurrently from any
// number of threads on disjoint outputs.
#ifndef AAREN_CORE_LINEAR_H_
#define AAREN_CORE_LINEAR_H_

#include <cstdint>

#include "core/tensor.h"

namespace aaren {

// y[m, n] (+)= x[m, k] W^T (+ bias), with W a row-major [n, k] tensor (PyTorch nn.Linear) and
// bias [n] or null. Rows of x and y are ldx and ldy floats apart. accumulate: add to y instead
// of overwriting it (residual connections).
void LinearRows(const float* x, int64_t m, int64_t ldx, const Tensor& weight, const float* bias,
                float* y, int64_t ldy, bool accumulate = false);

// Same with a raw row-major [n, k] weight matrix.
void LinearRows(const float* x, int64_t m, int64_t k, int64_t ldx, const float* weight, int64_t n,
                const float* bias, float* y, int64_t ldy, bool accumulate = false);

// Makes OpenBLAS run each call on the calling thread. Idempotent, thread-safe.
void SetBlasSingleThreaded();

}  // namespace aaren

#endif  // AAREN_CORE_LINEAR_H_
