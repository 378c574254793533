// SPDX-License-Identifier: Apache-2.0
// The CUDA backend's fused element-wise and row kernels: input rows (embedding gather or
// feature-projection bias, plus the sinusoidal position code), LayerNorm with the pending bias of
// the previous projection folded in, bias + GELU, row gathers, and the all-or-nothing helpers
// (saving / restoring span states, flagging non-finite results). The dense products around them
// are cuBLAS calls (kernels/cuda_backend.cc).
//
// Host-visible header: parameter structs and launchers only; every launcher enqueues on `stream`
// and returns the launch's CUDA error. All pointers are device pointers.
#ifndef AAREN_KERNELS_LAYER_KERNELS_H_
#define AAREN_KERNELS_LAYER_KERNELS_H_

#include <cuda_runtime.h>

#include <cstdint>

namespace aaren::cuda {

struct InputRowsParams {
  int64_t rows = 0;
  int d_model = 0;
  // Token models: x[r] = embed[tokens[r]]. Feature models (tokens null): x[r] += bias (x already
  // holds W_in f_r).
  const int32_t* tokens = nullptr;  // [rows]
  const float* embed = nullptr;     // [vocab, d_model]
  const float* bias = nullptr;      // [d_model]
  // Sinusoidal position code added when non-null: PE(positions[r]), frequencies[i] =
  // 10000^(-2i / d_model) (float64, as the CPU backend computes it).
  const int64_t* positions = nullptr;   // [rows]
  const double* frequencies = nullptr;  // [(d_model + 1) / 2]
  float* x = nullptr;                   // [rows, d_model]
};
cudaError_t LaunchInputRows(const InputRowsParams& p, cudaStream_t stream);

struct LayerNormParams {
  int64_t rows = 0;
  int d = 0;
  float* x = nullptr;               // [rows, d]
  const float* add_bias = nullptr;  // [d] or null: first x += add_bias, written back to x
  const float* gamma = nullptr;     // [d]
  const float* beta = nullptr;      // [d]
  float eps = 1e-5f;
  float* y = nullptr;  // [rows, d]: LayerNorm(x) * gamma + beta (two-pass mean and variance)
};
cudaError_t LaunchLayerNorm(const LayerNormParams& p, cudaStream_t stream);

struct BiasActivationParams {
  float* y = nullptr;  // [rows, cols], in place: y = act(y + bias)
  int64_t rows = 0;
  int cols = 0;
  const float* bias = nullptr;  // [cols]
  bool gelu = false;            // exact GELU 0.5 z (1 + erf(z / sqrt 2)); identity otherwise
};
cudaError_t LaunchBiasActivation(const BiasActivationParams& p, cudaStream_t stream);

struct GatherRowsParams {
  const float* src = nullptr;      // [*, cols]
  const int64_t* index = nullptr;  // [rows] source row of each destination row
  float* dst = nullptr;            // [rows, cols]
  int64_t rows = 0;
  int cols = 0;
};
cudaError_t LaunchGatherRows(const GatherRowsParams& p, cudaStream_t stream);

struct StateCopyParams {
  float* const* states = nullptr;  // [n_states] span states
  float* saved = nullptr;          // [n_states, state_floats]
  int n_states = 0;
  int64_t state_floats = 0;
  bool restore = false;  // false: saved <- states; true: states <- saved
};
cudaError_t LaunchStateCopy(const StateCopyParams& p, cudaStream_t stream);

struct NonFiniteParams {
  float* const* states = nullptr;  // [n_states] (after the run)
  int n_states = 0;
  int64_t state_floats = 0;
  const float* outputs = nullptr;         // [n_outputs, output_dim]
  const int32_t* output_state = nullptr;  // [n_outputs] which state each output row belongs to
  int64_t n_outputs = 0;
  int output_dim = 0;
  int32_t* flags = nullptr;  // [n_states], zeroed by the launcher; 1 where anything is not finite
};
cudaError_t LaunchNonFinite(const NonFiniteParams& p, cudaStream_t stream);

}  // namespace aaren::cuda

#endif  // AAREN_KERNELS_LAYER_KERNELS_H_
