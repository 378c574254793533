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
#include <vector>

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

// A dense layer whose weights are kept in the form libxsmm's JIT kernels take, made once: W^T,
// row-major [k, n] (the [n, k] column-major A of libxsmm's C = A B, with B = x^T and C = y^T).
// OpenBLAS packs W again on every call, which costs more than the product at the few rows a
// streaming tick has (bench/gemm_bench, bench/RESULTS.md). Small weights (n k <= kMaxJitWeights
// floats, 1 MiB: every layer of demo-lm) go through one JIT kernel per up to kRowBlock rows
// (compiled once per shape and stride, then looked up); larger ones, where libxsmm's kernels
// have no cache blocking and fall far behind (a 1024 x 4096 layer: 12 vs 68 GFLOP/s at 64
// rows), and any shape libxsmm has no kernel for, go to OpenBLAS on the same W^T. The copy
// doubles the dense weights' memory. Run is const and thread-safe; calls on disjoint outputs may
// run concurrently; it runs on the calling thread when OpenBLAS is single-threaded.
class PackedLinear {
 public:
  static constexpr int64_t kRowBlock = 64;
  static constexpr int64_t kMaxJitWeights = int64_t{1} << 18;

  PackedLinear() = default;
  // W row-major [n, k] (PyTorch nn.Linear), bias [n] or null; both copied.
  PackedLinear(const float* weight, int64_t n, int64_t k, const float* bias);
  PackedLinear(const Tensor& weight, const Tensor* bias);

  int64_t n() const { return n_; }
  int64_t k() const { return k_; }
  // Whether Run uses libxsmm's kernels (else OpenBLAS).
  bool jit() const { return use_jit_; }

  // y[m, n] (+)= x[m, k] W^T + bias; rows of x and y are ldx and ldy floats apart.
  void Run(const float* x, int64_t m, int64_t ldx, float* y, int64_t ldy,
           bool accumulate = false) const;

 private:
  int64_t n_ = 0;
  int64_t k_ = 0;
  bool use_jit_ = false;
  std::vector<float> weight_t_;  // [k, n]
  std::vector<float> bias_;      // [n] or empty
};

}  // namespace aaren

#endif  // AAREN_CORE_LINEAR_H_
