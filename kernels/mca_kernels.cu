// SPDX-License-Identifier: Apache-2.0
#include "kernels/mca_kernels.h"

#include <cuda/std/cstdint>

#include "core/mca_sampling.h"
#include "kernels/aaren_combine.cuh"

namespace aaren::cuda {
namespace {

constexpr int kCountThreads = 128;
// Scores the sample-count walk loads ahead of its serial recurrence: the loads are independent of
// (m, u), so issuing a batch of them together hides most of their latency.
constexpr int kCountPrefetch = 8;
// The value kernel's block is one group of ColumnThreads(d_head) threads (32 .. 256); thread c
// owns columns c, c + blockDim, ... : at most 4 for d_head <= 1024.
constexpr int kMaxValueThreads = kAttentionThreads;
constexpr int kMaxValueCols = 4;

__global__ void __launch_bounds__(kCountThreads) McaSampleCountKernel(McaSampleCountParams p) {
  const int64_t pair = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (pair >= static_cast<int64_t>(p.spans.n_spans) * p.n_heads) return;
  const int span = static_cast<int>(pair / p.n_heads);
  const int h = static_cast<int>(pair - static_cast<int64_t>(span) * p.n_heads);
  // This layer's (m, u) of head h before the span: the attention kernels that advance it run
  // after this kernel on the same stream.
  const float* rec =
      p.spans.state[span] + p.state_offset + static_cast<int64_t>(h) * (2 + p.d_head);
  float m = rec[0], u = rec[1];
  const int64_t q0 = p.spans.first_mca_row[span];
  const int64_t length = p.spans.first_mca_row[span + 1] - q0;
  const int64_t position = p.spans.position[span];
  const float alpha = p.spans.alpha[span];
  const float bias = p.score_bias[h];
  const float* scores = p.scores + p.spans.first_row[span] * p.score_stride + h;
  int32_t* counts = p.sample_counts + q0 * p.n_heads + h;
  const int64_t d_model = p.d_model;
  const int64_t flops_per_sample = 2 * static_cast<int64_t>(p.d_head);
  unsigned long long flops = 0;
  for (int64_t i0 = 0; i0 < length; i0 += kCountPrefetch) {
    float s[kCountPrefetch];
#pragma unroll
    for (int k = 0; k < kCountPrefetch; ++k) {
      s[k] = i0 + k < length ? scores[(i0 + k) * p.score_stride] + bias : 0.0f;
    }
#pragma unroll
    for (int k = 0; k < kCountPrefetch; ++k) {
      const int64_t i = i0 + k;
      if (i >= length) break;
      // The CPU backend's recurrence (core/cpu_backend.cc), term for term.
      const float sc = s[k];
      if (sc > m) {
        u = u * expf(m - sc) + 1.0f;  // expf(-inf) = 0 for the identity state
        m = sc;
      } else {
        u += expf(sc - m);
      }
      const float importance = expf(sc - m) / u;
      const int64_t r = mca::SampleCount(importance, position + i, alpha, d_model);
      counts[i * p.n_heads] = static_cast<int32_t>(r);
      flops += static_cast<unsigned long long>(flops_per_sample * (r < d_model ? r : d_model));
    }
  }
  atomicAdd(p.value_flops + span, flops);
}

__global__ void __launch_bounds__(kMaxValueThreads) McaValuesKernel(McaValueParams p) {
  __shared__ int32_t s_column[kMaxValueThreads];
  __shared__ float s_scale[kMaxValueThreads];
  const int dh = p.d_head;
  const int d = p.d_model;
  const int cw = static_cast<int>(blockDim.x);
  const int tid = static_cast<int>(threadIdx.x);
  const int64_t tasks = p.mca_rows * p.n_heads;
  // Every thread of a block works on the same task, so the block-wide barriers below are reached
  // by all of its threads or by none.
  for (int64_t task = blockIdx.x; task < tasks; task += gridDim.x) {
    const int r = p.sample_counts[task];  // [mca row, head]
    if (r >= d) continue;                 // the GEMM's exact value stays
    const int64_t q = task / p.n_heads;
    const int h = static_cast<int>(task - q * p.n_heads);
    int lo = 0, hi = p.spans.n_spans - 1;  // the span holding MCA row q
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (p.spans.first_mca_row[mid] <= q) {
        lo = mid;
      } else {
        hi = mid - 1;
      }
    }
    const int64_t offset = q - p.spans.first_mca_row[lo];
    const int64_t row = p.spans.first_row[lo] + offset;
    const uint64_t key = mca::TokenKey(p.spans.seed[lo], p.layer, h, p.spans.position[lo] + offset);
    const int64_t table = (static_cast<int64_t>(p.layer) * p.n_heads + h) * d;
    const float* prob = p.prob + table;
    const int32_t* alias = p.alias + table;
    const float* inv_p = p.inv_p + table;
    const float* columns = p.columns + table * dh;
    const float* x = p.x + row * d;
    const float inv_r = 1.0f / static_cast<float>(r);
    float acc[kMaxValueCols];
#pragma unroll
    for (int c = 0; c < kMaxValueCols; ++c) acc[c] = 0.0f;
    for (int k0 = 0; k0 < r; k0 += cw) {
      // Draw samples k0 .. k0 + cw - 1 in parallel (each is a pure function of its index) ...
      const int k = k0 + tid;
      if (k < r) {
        const int32_t j = mca::DrawColumn(mca::SampleBits(key, k), prob, alias, d);
        s_column[tid] = j;
        s_scale[tid] = x[j] * inv_p[j] * inv_r;  // as McaValueProjection computes it
      }
      __syncthreads();
      // ... then add them to every column in sample order, as the CPU does.
      const int n = min(cw, r - k0);
      for (int i = 0; i < n; ++i) {
        const float* col = columns + static_cast<int64_t>(s_column[i]) * dh;
        const float scale = s_scale[i];
#pragma unroll
        for (int c = 0; c < kMaxValueCols; ++c) {
          const int j = tid + c * cw;
          if (j < dh) acc[c] += col[j] * scale;
        }
      }
      __syncthreads();  // the chunk is read before the next one overwrites it
    }
    float* out = p.values + row * p.value_stride + static_cast<int64_t>(h) * dh;
#pragma unroll
    for (int c = 0; c < kMaxValueCols; ++c) {
      const int j = tid + c * cw;
      if (j < dh) out[j] = acc[c];
    }
  }
}

}  // namespace

cudaError_t LaunchMcaSampleCount(const McaSampleCountParams& p, cudaStream_t stream) {
  if (p.spans.n_spans == 0) return cudaSuccess;
  if (p.n_heads < 1 || p.d_head < 1 || p.d_model < 1) return cudaErrorInvalidValue;
  const int64_t pairs = static_cast<int64_t>(p.spans.n_spans) * p.n_heads;
  const int64_t blocks = (pairs + kCountThreads - 1) / kCountThreads;
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  McaSampleCountKernel<<<static_cast<unsigned>(blocks), kCountThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

cudaError_t LaunchMcaValues(const McaValueParams& p, cudaStream_t stream) {
  if (p.spans.n_spans == 0 || p.mca_rows == 0) return cudaSuccess;
  const int threads = ColumnThreads(p.d_head);
  if (p.n_heads < 1 || p.d_head < 1 || p.d_model < 1 || p.d_head > kMaxValueCols * threads) {
    return cudaErrorInvalidValue;
  }
  const int64_t tasks = p.mca_rows * p.n_heads;
  constexpr int64_t kMaxBlocks = int64_t{65535} * 32;  // the rest grid-strided
  const int64_t blocks = tasks < kMaxBlocks ? tasks : kMaxBlocks;
  McaValuesKernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace aaren::cuda
