// SPDX-License-Identifier: Apache-2.0
// Aaren attention on the GPU: the parameter structs and host launchers of the two kernels that
// read and advance session states (DESIGN.md section 1).
//
//  - Scan (LaunchAttentionScan): spans of any length. Each (span, head) is cut into tiles of
//    `tile_rows` rows; a block loads one tile's scores and values into shared memory once,
//    reduces them to the tile's (m, u, w) aggregate, gets the exclusive prefix of everything
//    before it by a decoupled look-back over the tiles before it (the last checkpoint tile's
//    inclusive prefix, every 32nd tile, and the aggregates after it: a fixed set combined in a
//    fixed order, so the same Forward is bit-identical run to run; the first tile of a span
//    starts from the span's state), and rescans the tile from shared memory writing every row's
//    output. So
//    values are read from global memory once and outputs written once: the kernel moves the
//    bytes a copy would, plus the small tile records. The last tile writes the span's new state.
//  - Step (LaunchAttentionStep): spans of length 1 (streaming appends of many sessions). One
//    (m, u, w) record per thread group, read and written in place through each span's state
//    address; consecutive threads touch consecutive floats of a record.
//
// Layouts: activations are row-major with one row per token, as the projections produce them.
// Row r's score for head h is scores[r * score_stride + h] (+ score_bias[h]); its value for head
// h, column j is values[r * value_stride + h * d_head + j] (+ value_bias[h * d_head + j]); its
// output likewise at outputs[r * output_stride + h * d_head + j]. A span's state for this layer
// is span_state[i] + state_offset: n_heads records of (m, u, w[d_head]) (core/aaren_state.h).
//
// Host-visible header: no device code; plain CUDA runtime types only (the callers turn
// cudaError_t into absl::Status). All pointers are device pointers unless a field says otherwise.
#ifndef AAREN_KERNELS_ATTENTION_KERNELS_H_
#define AAREN_KERNELS_ATTENTION_KERNELS_H_

#include <cuda_runtime.h>

#include <cstdint>

namespace aaren::cuda {

// Row-major activations one attention layer reads and writes (see the banner).
struct AttentionIo {
  const float* scores = nullptr;  // + r * score_stride + h
  int64_t score_stride = 0;
  const float* score_bias = nullptr;  // [n_heads], added to every score
  const float* values = nullptr;      // + r * value_stride + h * d_head + j
  int64_t value_stride = 0;
  const float* value_bias = nullptr;  // [n_heads * d_head], added to every value
  float* outputs = nullptr;           // + r * output_stride + h * d_head + j: o = w / u
  int64_t output_stride = 0;
  int n_heads = 0;
  int d_head = 0;
};

// Largest d_head the kernels support (columns per thread are held in registers).
inline constexpr int kMaxAttentionHeadDim = 1024;

struct AttentionScanParams {
  AttentionIo io;
  int n_spans = 0;
  const int64_t* span_first_row = nullptr;  // [n_spans] row of each span's first token
  const int64_t* span_length = nullptr;     // [n_spans] tokens (> 0)
  float* const* span_state = nullptr;       // [n_spans] state of each span (all layers)
  int64_t state_offset = 0;                 // floats from a state to this layer's records
  // [n_spans + 1] exclusive prefix sum of n_heads * ceil(length / tile_rows): the first global
  // tile id of each span (tiles of one span: head-major, then in row order).
  const int64_t* span_first_tile = nullptr;
  int64_t total_tiles = 0;
  int tile_rows = 0;  // from AttentionScanTileRows(d_head)
  // Look-back scratch, see AttentionScanScratchBytes. Zeroed by the launcher (on `stream`).
  void* scratch = nullptr;
};

// Rows per tile for a head width (shared memory holds tile_rows x d_head values).
int AttentionScanTileRows(int d_head);
// Bytes of AttentionScanParams::scratch for `total_tiles` tiles of width d_head.
int64_t AttentionScanScratchBytes(int64_t total_tiles, int d_head);

// Enqueues the scan on `stream`. Returns the first CUDA error of the launch (not of the run).
cudaError_t LaunchAttentionScan(const AttentionScanParams& params, cudaStream_t stream);

struct AttentionStepParams {
  AttentionIo io;
  int n_spans = 0;
  const int64_t* span_row = nullptr;   // [n_spans] the one row of each span
  float* const* span_state = nullptr;  // [n_spans] state of each span (all layers)
  int64_t state_offset = 0;            // floats from a state to this layer's records
};

cudaError_t LaunchAttentionStep(const AttentionStepParams& params, cudaStream_t stream);

}  // namespace aaren::cuda

#endif  // AAREN_KERNELS_ATTENTION_KERNELS_H_
