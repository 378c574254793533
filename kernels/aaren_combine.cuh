// SPDX-License-Identifier: Apache-2.0
// Device-side Aaren state algebra (core/aaren_state.h on the GPU): the combine operator's scale
// factors with the identity guard, and the kernels' column layout. Device code only.
#ifndef AAREN_KERNELS_AAREN_COMBINE_CUH_
#define AAREN_KERNELS_AAREN_COMBINE_CUH_

#include <math_constants.h>

namespace aaren::cuda {

// Threads per block of the attention kernels.
inline constexpr int kAttentionThreads = 256;

// Threads that share one (m, u, w[d_head]) record: the smallest power of two >= d_head, at least a
// warp and at most a block, so that groups of them tile a block exactly. Thread c of such a group
// owns columns c, c + ColumnThreads, ... (kMaxCols at most).
__host__ __device__ inline int ColumnThreads(int d_head) {
  int cw = 32;
  while (cw < d_head && cw < kAttentionThreads) cw *= 2;
  return cw;
}

// The result's m and the factors that scale each side: (m, u, w) = (m, sa * uA + sb * uB,
// sa * wA + sb * wB) for A (+) B. Exact when either side is the identity (m = -inf): the other
// side is kept bit for bit (factor 1, the identity's u and w are 0).
struct CombineFactors {
  float m;
  float sa;
  float sb;
};

__device__ inline CombineFactors Combine(float ma, float mb) {
  if (mb == -CUDART_INF_F) return {ma, 1.0f, 0.0f};
  if (ma == -CUDART_INF_F) return {mb, 0.0f, 1.0f};
  const float m = fmaxf(ma, mb);
  return {m, expf(ma - m), expf(mb - m)};
}

}  // namespace aaren::cuda

#endif  // AAREN_KERNELS_AAREN_COMBINE_CUH_
