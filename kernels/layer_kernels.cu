// SPDX-License-Identifier: Apache-2.0
#include "kernels/layer_kernels.h"

namespace aaren::cuda {
namespace {

constexpr int kThreads = 256;

unsigned BlocksFor(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 65535 * 32 ? (b < 1 ? 1 : b) : 65535 * 32);
}

// Grid-stride over [0, n).
#define AAREN_GRID_LOOP(i, n)                                                            \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

__global__ void InputRowsKernel(InputRowsParams p) {
  const int d = p.d_model;
  AAREN_GRID_LOOP(e, p.rows * d) {
    const int64_t r = e / d;
    const int col = static_cast<int>(e - r * d);
    float v = p.tokens != nullptr ? p.embed[static_cast<int64_t>(p.tokens[r]) * d + col]
                                  : p.x[e] + p.bias[col];
    if (p.positions != nullptr) {
      const double a = static_cast<double>(p.positions[r]) * p.frequencies[col / 2];
      v += static_cast<float>(col % 2 == 0 ? sin(a) : cos(a));
    }
    p.x[e] = v;
  }
}

__device__ inline float WarpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// One warp per row.
__global__ void LayerNormKernel(LayerNormParams p) {
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= p.rows) return;
  float* x = p.x + row * p.d;
  float sum = 0.0f;
  for (int c = lane; c < p.d; c += 32) {
    float v = x[c];
    if (p.add_bias != nullptr) {
      v += p.add_bias[c];
      x[c] = v;
    }
    sum += v;
  }
  const float mean = WarpSum(sum) / static_cast<float>(p.d);
  float sq = 0.0f;
  for (int c = lane; c < p.d; c += 32) {
    const float t = x[c] - mean;
    sq += t * t;
  }
  const float inv_std = 1.0f / sqrtf(WarpSum(sq) / static_cast<float>(p.d) + p.eps);
  float* y = p.y + row * p.d;
  for (int c = lane; c < p.d; c += 32) y[c] = (x[c] - mean) * inv_std * p.gamma[c] + p.beta[c];
}

__global__ void BiasActivationKernel(BiasActivationParams p) {
  AAREN_GRID_LOOP(e, p.rows * p.cols) {
    float v = p.y[e] + p.bias[e % p.cols];
    if (p.gelu) v = 0.5f * v * (1.0f + erff(v * 0.70710678118654752440f));
    p.y[e] = v;
  }
}

__global__ void GatherRowsKernel(GatherRowsParams p) {
  AAREN_GRID_LOOP(e, p.rows * p.cols) {
    const int64_t r = e / p.cols;
    p.dst[e] = p.src[p.index[r] * p.cols + (e - r * p.cols)];
  }
}

__global__ void StateCopyKernel(StateCopyParams p) {
  AAREN_GRID_LOOP(e, p.n_states * p.state_floats) {
    const int64_t i = e / p.state_floats;
    float* state = p.states[i] + (e - i * p.state_floats);
    if (p.restore) {
      *state = p.saved[e];
    } else {
      p.saved[e] = *state;
    }
  }
}

__global__ void NonFiniteKernel(NonFiniteParams p) {
  const int64_t n_state = p.n_states * p.state_floats;
  AAREN_GRID_LOOP(e, n_state + p.n_outputs * p.output_dim) {
    if (e < n_state) {
      const int64_t i = e / p.state_floats;
      if (!isfinite(p.states[i][e - i * p.state_floats])) p.flags[i] = 1;
    } else {
      const int64_t o = e - n_state;
      if (!isfinite(p.outputs[o])) p.flags[p.output_state[o / p.output_dim]] = 1;
    }
  }
}

}  // namespace

cudaError_t LaunchInputRows(const InputRowsParams& p, cudaStream_t stream) {
  if (p.rows == 0) return cudaSuccess;
  InputRowsKernel<<<BlocksFor(p.rows * p.d_model), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchLayerNorm(const LayerNormParams& p, cudaStream_t stream) {
  if (p.rows == 0) return cudaSuccess;
  constexpr int kRowsPerBlock = kThreads / 32;
  const int64_t blocks = (p.rows + kRowsPerBlock - 1) / kRowsPerBlock;
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  LayerNormKernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchBiasActivation(const BiasActivationParams& p, cudaStream_t stream) {
  if (p.rows == 0) return cudaSuccess;
  BiasActivationKernel<<<BlocksFor(p.rows * p.cols), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchGatherRows(const GatherRowsParams& p, cudaStream_t stream) {
  if (p.rows == 0) return cudaSuccess;
  GatherRowsKernel<<<BlocksFor(p.rows * p.cols), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchStateCopy(const StateCopyParams& p, cudaStream_t stream) {
  if (p.n_states == 0) return cudaSuccess;
  StateCopyKernel<<<BlocksFor(p.n_states * p.state_floats), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchNonFinite(const NonFiniteParams& p, cudaStream_t stream) {
  if (p.n_states == 0) return cudaSuccess;
  cudaError_t err = cudaMemsetAsync(p.flags, 0, sizeof(int32_t) * p.n_states, stream);
  if (err != cudaSuccess) return err;
  NonFiniteKernel<<<BlocksFor(p.n_states * p.state_floats + p.n_outputs * p.output_dim), kThreads,
                    0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace aaren::cuda
