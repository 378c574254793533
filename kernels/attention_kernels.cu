// SPDX-License-Identifier: Apache-2.0
#include "kernels/attention_kernels.h"

#include <cuda/std/cstdint>

#include "kernels/aaren_combine.cuh"

namespace aaren::cuda {
namespace {

constexpr int kThreads = kAttentionThreads;
constexpr int kMaxCols = kMaxAttentionHeadDim / kThreads;  // columns per thread, in registers
constexpr int kTileValueBytes = 32 * 1024;                 // shared memory for a tile's values
constexpr int kMaxTileRows = 256;

// Tile status in the look-back scratch.
constexpr int kTileEmpty = 0;
constexpr int kTileAggregate = 1;  // the tile's own (m, u, w) is published
constexpr int kTileInclusive = 2;  // the prefix through the tile is published

// The look-back is deterministic: which records a tile combines, and in which order, never
// depends on timing (a decoupled look-back that stops at the first inclusive prefix it happens to
// see rounds differently from run to run). Within one (span, head), tile k is a checkpoint when
// k % kCheckpointTiles == 0; a checkpoint publishes its inclusive prefix, every other tile its
// aggregate. Tile k > 0 with c = the last checkpoint before it combines exactly
//   inclusive[c] (+) (aggregate[c + 1] (+) (... (+) aggregate[k - 1]))
// (the aggregates right to left, as they are ready first), and tile 0 starts from the span's
// state. So checkpoints form the only serial chain, one link per kCheckpointTiles tiles, and a
// tile reads at most kCheckpointTiles - 1 extra records from L2.
constexpr int64_t kCheckpointTiles = 32;

__host__ __device__ inline int64_t AlignUp(int64_t v, int64_t a) { return (v + a - 1) / a * a; }

// Scratch layout: int flags[total_tiles] | uint32 counter | float aggregate[total_tiles][2 + dh]
// | float inclusive[total_tiles][2 + dh].
__host__ __device__ inline int64_t FlagsBytes(int64_t total_tiles) {
  return AlignUp(total_tiles * 4, 16) + 16;
}

struct ScanScratch {
  int* flags;
  unsigned int* counter;
  float* aggregate;
  float* inclusive;
};

__device__ inline ScanScratch ScratchOf(void* base, int64_t total_tiles, int d_head) {
  char* p = static_cast<char*>(base);
  ScanScratch s;
  s.flags = reinterpret_cast<int*>(p);
  s.counter = reinterpret_cast<unsigned int*>(p + AlignUp(total_tiles * 4, 16));
  s.aggregate = reinterpret_cast<float*>(p + FlagsBytes(total_tiles));
  s.inclusive = s.aggregate + total_tiles * (2 + d_head);
  return s;
}

// Per-thread slice of one (m, u, w) record: m and u (the same in every thread of a group) and
// the thread's columns of w.
struct Record {
  float m;
  float u;
  float w[kMaxCols];
};

__device__ inline Record Identity() {
  Record r;
  r.m = -CUDART_INF_F;
  r.u = 0.0f;
#pragma unroll
  for (int q = 0; q < kMaxCols; ++q) r.w[q] = 0.0f;
  return r;
}

// a (+) b for this thread's columns.
__device__ inline Record CombineRecords(const Record& a, const Record& b) {
  const CombineFactors f = Combine(a.m, b.m);
  Record r;
  r.m = f.m;
  r.u = a.u * f.sa + b.u * f.sb;
#pragma unroll
  for (int q = 0; q < kMaxCols; ++q) r.w[q] = a.w[q] * f.sa + b.w[q] * f.sb;
  return r;
}

// Adds leaf (s, 1, v) on the right of a running record (s finite).
__device__ inline void AppendLeaf(Record& r, float s, const float* v, int c, int cw, int d_head) {
  if (s > r.m) {
    const float a = expf(r.m - s);  // 0 when r is the identity
    r.u = r.u * a + 1.0f;
#pragma unroll
    for (int q = 0; q < kMaxCols; ++q) {
      const int j = c + q * cw;
      if (j < d_head) r.w[q] = r.w[q] * a + v[j];
    }
    r.m = s;
  } else {
    const float b = expf(s - r.m);
    r.u += b;
#pragma unroll
    for (int q = 0; q < kMaxCols; ++q) {
      const int j = c + q * cw;
      if (j < d_head) r.w[q] += b * v[j];
    }
  }
}

// Reads a record (m, u, w) from global memory; `l2` bypasses L1 (records other blocks publish).
__device__ inline Record LoadRecord(const float* rec, int c, int cw, int d_head, bool l2) {
  Record r = Identity();
  r.m = l2 ? __ldcg(rec) : rec[0];
  r.u = l2 ? __ldcg(rec + 1) : rec[1];
#pragma unroll
  for (int q = 0; q < kMaxCols; ++q) {
    const int j = c + q * cw;
    if (j < d_head) r.w[q] = l2 ? __ldcg(rec + 2 + j) : rec[2 + j];
  }
  return r;
}

// Stores a record; every thread of group 0 writes its columns, thread 0 also m and u.
__device__ inline void StoreRecord(float* rec, const Record& r, int g, int c, int cw, int d_head) {
  if (g != 0) return;
  if (c == 0) {
    rec[0] = r.m;
    rec[1] = r.u;
  }
#pragma unroll
  for (int q = 0; q < kMaxCols; ++q) {
    const int j = c + q * cw;
    if (j < d_head) rec[2 + j] = r.w[q];
  }
}

// Publishes `r` as tile `tile`'s record in `records` with status `flag`: every writer fences,
// then the block synchronises, then one thread raises the flag.
__device__ inline void Publish(float* records, int* flags, int64_t tile, const Record& r, int flag,
                               int g, int c, int cw, int d_head) {
  StoreRecord(records + tile * (2 + d_head), r, g, c, cw, d_head);
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) atomicExch(flags + tile, flag);
}

__global__ void __launch_bounds__(kThreads) AttentionScanKernel(AttentionScanParams p, bool vec4) {
  extern __shared__ float smem[];
  __shared__ int64_t s_tile;
  const AttentionIo& io = p.io;
  const int dh = io.d_head;
  const int cw = ColumnThreads(dh);
  const int groups = kThreads / cw;
  const int rows_per_group = p.tile_rows / groups;
  const int tid = threadIdx.x;
  const int g = tid / cw;
  const int c = tid - g * cw;
  float* s_v = smem;                    // [tile_rows, dh] values (+ bias)
  float* s_s = s_v + p.tile_rows * dh;  // [tile_rows] scores (+ bias)
  float* s_gw = s_s + p.tile_rows;      // [groups, dh] group partial w
  float* s_gm = s_gw + groups * dh;     // [groups] group partial m
  float* s_gu = s_gm + groups;          // [groups] group partial u

  const ScanScratch sc = ScratchOf(p.scratch, p.total_tiles, dh);
  // Tiles are taken in launch order, so a tile's predecessors have all started: waiting on
  // them always makes progress.
  if (tid == 0) s_tile = atomicAdd(sc.counter, 1u);
  __syncthreads();
  const int64_t t = s_tile;
  if (t >= p.total_tiles) return;

  int lo = 0, hi = p.n_spans - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (p.span_first_tile[mid] <= t)
      lo = mid;
    else
      hi = mid - 1;
  }
  const int span = lo;
  const int64_t length = p.span_length[span];
  const int64_t tiles_per_head = (length + p.tile_rows - 1) / p.tile_rows;
  const int64_t local = t - p.span_first_tile[span];
  const int h = static_cast<int>(local / tiles_per_head);
  const int64_t k = local - h * tiles_per_head;
  const int64_t row0 = p.span_first_row[span] + k * p.tile_rows;
  const int n = static_cast<int>(min(static_cast<int64_t>(p.tile_rows), length - k * p.tile_rows));

  // ---- Load the tile (the only read of scores and values). ----
  const float score_bias = io.score_bias[h];
  for (int i = tid; i < n; i += kThreads) {
    s_s[i] = io.scores[(row0 + i) * io.score_stride + h] + score_bias;
  }
  const float* values = io.values + static_cast<int64_t>(h) * dh;
  const float* value_bias = io.value_bias + static_cast<int64_t>(h) * dh;
  if (vec4) {
    const int dh4 = dh / 4;
    for (int e = tid; e < n * dh4; e += kThreads) {
      const int i = e / dh4, j4 = e - i * dh4;
      const float4 v =
          *reinterpret_cast<const float4*>(values + (row0 + i) * io.value_stride + 4 * j4);
      const float4 b = *reinterpret_cast<const float4*>(value_bias + 4 * j4);
      *reinterpret_cast<float4*>(s_v + i * dh + 4 * j4) =
          make_float4(v.x + b.x, v.y + b.y, v.z + b.z, v.w + b.w);
    }
  } else {
    for (int e = tid; e < n * dh; e += kThreads) {
      const int i = e / dh, j = e - i * dh;
      s_v[e] = values[(row0 + i) * io.value_stride + j] + value_bias[j];
    }
  }
  __syncthreads();

  // ---- Each group's partial (m, u, w) over its rows. ----
  const int i0 = g * rows_per_group;
  const int i1 = min(n, i0 + rows_per_group);
  Record part = Identity();
  for (int i = i0; i < i1; ++i) part.m = fmaxf(part.m, s_s[i]);
  for (int i = i0; i < i1; ++i) {
    const float e = expf(s_s[i] - part.m);
    part.u += e;
#pragma unroll
    for (int q = 0; q < kMaxCols; ++q) {
      const int j = c + q * cw;
      if (j < dh) part.w[q] += e * s_v[i * dh + j];
    }
  }
  if (c == 0) {
    s_gm[g] = part.m;
    s_gu[g] = part.u;
  }
#pragma unroll
  for (int q = 0; q < kMaxCols; ++q) {
    const int j = c + q * cw;
    if (j < dh) s_gw[g * dh + j] = part.w[q];
  }
  __syncthreads();

  // The tile's aggregate, and the part of it before this thread's group.
  Record aggregate = Identity(), before_group = Identity();
  for (int gg = 0; gg < groups; ++gg) {
    if (gg == g) before_group = aggregate;
    Record other;
    other.m = s_gm[gg];
    other.u = s_gu[gg];
#pragma unroll
    for (int q = 0; q < kMaxCols; ++q) {
      const int j = c + q * cw;
      other.w[q] = j < dh ? s_gw[gg * dh + j] : 0.0f;
    }
    aggregate = CombineRecords(aggregate, other);
  }

  // ---- The exclusive prefix of the tile (deterministic look-back, see kCheckpointTiles). ----
  float* state = p.span_state[span] + p.state_offset + static_cast<int64_t>(h) * (2 + dh);
  const bool checkpoint = k % kCheckpointTiles == 0;
  Record prefix;
  if (k == 0) {
    prefix = LoadRecord(state, c, cw, dh, /*l2=*/false);
  } else {
    if (!checkpoint) Publish(sc.aggregate, sc.flags, t, aggregate, kTileAggregate, g, c, cw, dh);
    const int64_t first = t - k;  // this (span, head)'s tile 0
    const int64_t last_checkpoint = first + (k - 1) / kCheckpointTiles * kCheckpointTiles;
    Record later = Identity();  // aggregate[j + 1] (+) ... (+) aggregate[k - 1]
    for (int64_t j = t - 1; j >= last_checkpoint; --j) {
      if (tid == 0) {
        while (*reinterpret_cast<volatile int*>(sc.flags + j) == kTileEmpty) __nanosleep(32);
        __threadfence();  // the record is read after its flag was seen
      }
      __syncthreads();
      __threadfence();
      if (j == last_checkpoint) {
        prefix =
            CombineRecords(LoadRecord(sc.inclusive + j * (2 + dh), c, cw, dh, /*l2=*/true), later);
      } else {
        later =
            CombineRecords(LoadRecord(sc.aggregate + j * (2 + dh), c, cw, dh, /*l2=*/true), later);
      }
    }
  }
  const Record inclusive = CombineRecords(prefix, aggregate);
  if (checkpoint) Publish(sc.inclusive, sc.flags, t, inclusive, kTileInclusive, g, c, cw, dh);

  // ---- Rescan the tile from shared memory, writing every row's output. ----
  Record run = CombineRecords(prefix, before_group);
  float* out = io.outputs + static_cast<int64_t>(h) * dh;
  for (int i = i0; i < i1; ++i) {
    AppendLeaf(run, s_s[i], s_v + i * dh, c, cw, dh);
    const float inv_u = 1.0f / run.u;
#pragma unroll
    for (int q = 0; q < kMaxCols; ++q) {
      const int j = c + q * cw;
      if (j < dh) out[(row0 + i) * io.output_stride + j] = run.w[q] * inv_u;
    }
  }
  if (k == tiles_per_head - 1) StoreRecord(state, inclusive, g, c, cw, dh);
}

__global__ void __launch_bounds__(kThreads) AttentionStepKernel(AttentionStepParams p) {
  const AttentionIo& io = p.io;
  const int dh = io.d_head;
  const int cw = ColumnThreads(dh);
  const int groups = kThreads / cw;
  const int g = threadIdx.x / cw;
  const int c = threadIdx.x - g * cw;
  const int64_t pair = static_cast<int64_t>(blockIdx.x) * groups + g;  // (span, head)
  const bool active = pair < static_cast<int64_t>(p.n_spans) * io.n_heads;
  Record r = Identity();
  float* rec = nullptr;
  float* out = nullptr;
  float s = 0.0f;
  float v[kMaxCols] = {};
  if (active) {
    const int64_t span = pair / io.n_heads;
    const int h = static_cast<int>(pair - span * io.n_heads);
    const int64_t row = p.span_row[span];
    rec = p.span_state[span] + p.state_offset + static_cast<int64_t>(h) * (2 + dh);
    r = LoadRecord(rec, c, cw, dh, /*l2=*/false);
    s = io.scores[row * io.score_stride + h] + io.score_bias[h];
    const float* values = io.values + row * io.value_stride + static_cast<int64_t>(h) * dh;
    const float* bias = io.value_bias + static_cast<int64_t>(h) * dh;
#pragma unroll
    for (int q = 0; q < kMaxCols; ++q) {
      const int j = c + q * cw;
      if (j < dh) v[q] = values[j] + bias[j];
    }
    out = io.outputs + row * io.output_stride + static_cast<int64_t>(h) * dh;
  }
  // Every thread of a record has read m and u before its thread 0 overwrites them.
  __syncthreads();
  if (!active) return;
  // r (+) leaf(s, 1, v), with v in registers (AppendLeaf's column loop, unrolled here).
  if (s > r.m) {
    const float a = expf(r.m - s);
    r.u = r.u * a + 1.0f;
#pragma unroll
    for (int q = 0; q < kMaxCols; ++q) r.w[q] = r.w[q] * a + v[q];
    r.m = s;
  } else {
    const float b = expf(s - r.m);
    r.u += b;
#pragma unroll
    for (int q = 0; q < kMaxCols; ++q) r.w[q] += b * v[q];
  }
  if (c == 0) {
    rec[0] = r.m;
    rec[1] = r.u;
  }
  const float inv_u = 1.0f / r.u;
#pragma unroll
  for (int q = 0; q < kMaxCols; ++q) {
    const int j = c + q * cw;
    if (j < dh) {
      rec[2 + j] = r.w[q];
      out[j] = r.w[q] * inv_u;
    }
  }
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

int AttentionScanTileRows(int d_head) {
  const int groups = kThreads / ColumnThreads(d_head);
  int rows = kTileValueBytes / (4 * d_head);
  if (rows > kMaxTileRows) rows = kMaxTileRows;
  rows = rows / groups * groups;
  return rows < groups ? groups : rows;
}

int64_t AttentionScanScratchBytes(int64_t total_tiles, int d_head) {
  return FlagsBytes(total_tiles) + 2 * total_tiles * (2 + d_head) * 4;
}

cudaError_t LaunchAttentionScan(const AttentionScanParams& p, cudaStream_t stream) {
  if (p.total_tiles == 0) return cudaSuccess;
  if (p.io.d_head < 1 || p.io.d_head > kMaxAttentionHeadDim || p.tile_rows < 1 ||
      p.total_tiles > 0x7fffffff) {
    return cudaErrorInvalidValue;
  }
  cudaError_t err = cudaMemsetAsync(p.scratch, 0, FlagsBytes(p.total_tiles), stream);
  if (err != cudaSuccess) return err;
  const int dh = p.io.d_head;
  const int groups = kThreads / ColumnThreads(dh);
  const size_t smem = (static_cast<size_t>(p.tile_rows) * (dh + 1) + groups * (dh + 2)) * 4;
  const bool vec4 = dh % 4 == 0 && p.io.value_stride % 4 == 0 && Aligned16(p.io.values) &&
                    Aligned16(p.io.value_bias);
  AttentionScanKernel<<<static_cast<unsigned>(p.total_tiles), kThreads, smem, stream>>>(p, vec4);
  return cudaGetLastError();
}

cudaError_t LaunchAttentionStep(const AttentionStepParams& p, cudaStream_t stream) {
  if (p.n_spans == 0) return cudaSuccess;
  if (p.io.d_head < 1 || p.io.d_head > kMaxAttentionHeadDim) return cudaErrorInvalidValue;
  const int groups = kThreads / ColumnThreads(p.io.d_head);
  const int64_t pairs = static_cast<int64_t>(p.n_spans) * p.io.n_heads;
  const int64_t blocks = (pairs + groups - 1) / groups;
  AttentionStepKernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace aaren::cuda
