// SPDX-License-Identifier: Apache-2.0
// Monte-Carlo Attention on the GPU (core/mca.h): the parameter structs and host launchers of the
// two kernels that replace the exact value projections of a layer's MCA rows by sampled ones, with
// the CPU backend's draws (core/mca_sampling.h, shared bit for bit) and order of summation.
//
// Per layer, between the fused value + score GEMM and the attention kernels (which add the value
// and score biases), on the backend's stream:
//  1. LaunchMcaSampleCount: for each MCA span and head, walks the span's rows in order with the
//     running (m, u) of that head, seeded with the span's state for this layer (read before the
//     attention kernels advance it), and writes each row's sample count
//     r = mca::SampleCount(exp(s - m) / u, position, alpha, d_model); adds the span's value FLOPs
//     (2 d_head min(r, d_model) per row and head) to a 64-bit counter.
//  2. LaunchMcaValues: for each MCA row and head with r < d_model, overwrites the row's value slot
//     (without bias) with (1 / r) sum_{k < r} W_v[h][:, j_k] x[j_k] / p_{j_k}, summed in order
//     k = 0 .. r - 1; rows with r >= d_model keep the GEMM's exact value.
//
// The GEMM still computes exact values for every row, MCA or not (simple: one dense product; rows
// with r >= d_model keep its result). So MCA saves no device time yet: the FLOPs counted are the
// algorithm's, not the GPU's.
//
// Layouts: rows are the batch's activation rows (row-major, one per token). "MCA rows" are the
// rows of the MCA spans back to back, in span order: MCA row q of span i is batch row
// first_row[i] + (q - first_mca_row[i]). Sample counts are int32 [mca rows, n_heads].
//
// Host-visible header: no device code; plain CUDA runtime types only (the callers turn
// cudaError_t into absl::Status). All pointers are device pointers.
#ifndef AAREN_KERNELS_MCA_KERNELS_H_
#define AAREN_KERNELS_MCA_KERNELS_H_

#include <cuda_runtime.h>

#include <cstdint>

namespace aaren::cuda {

// The spans of a Forward that use MCA (struct of arrays, [n_spans] each unless noted).
struct McaSpans {
  int n_spans = 0;
  const int64_t* first_row = nullptr;      // batch row of the span's first token
  const int64_t* first_mca_row = nullptr;  // [n_spans + 1] exclusive prefix sum of the lengths
  const int64_t* position = nullptr;       // sequence position of the span's first token
  const float* alpha = nullptr;            // McaOptions::alpha (> 0)
  const uint64_t* seed = nullptr;          // McaOptions::seed
  float* const* state = nullptr;           // the span's state (all layers, core/aaren_state.h)
};

struct McaSampleCountParams {
  McaSpans spans;
  int64_t state_offset = 0;  // floats from a state to this layer's records (m at 0, u at 1)
  // Scores as the attention kernels read them: scores[row * score_stride + h] + score_bias[h].
  const float* scores = nullptr;
  int64_t score_stride = 0;
  const float* score_bias = nullptr;  // [n_heads]
  int n_heads = 0;
  int d_head = 0;
  int d_model = 0;
  int32_t* sample_counts = nullptr;  // [mca rows, n_heads], written
  // [n_spans], accumulated (atomically): value-projection FLOPs spent. Zeroed by the caller once
  // per Forward; every layer adds to it.
  unsigned long long* value_flops = nullptr;
};

// Enqueues the sample-count kernel on `stream`: one thread per (span, head), each walking its
// span's rows serially (the running (m, u) is a serial recurrence, evaluated in the CPU backend's
// order so that both pick the same r). Its cost is O(span length) dependent steps of roughly a
// hundred cycles: by estimate (not measured) ~5 ms per layer for a 100k-token MCA span, against
// microseconds for short ones. Returns the launch's CUDA error.
cudaError_t LaunchMcaSampleCount(const McaSampleCountParams& params, cudaStream_t stream);

struct McaValueParams {
  McaSpans spans;
  int64_t mca_rows = 0;  // rows of all MCA spans (spans.first_mca_row[n_spans])
  int layer = 0;
  // McaTables (core/mca.h) on the device, whole arrays (layer-major, then head):
  const float* prob = nullptr;     // [n_layers, n_heads, d_model] alias-method keep probability
  const int32_t* alias = nullptr;  // [n_layers, n_heads, d_model]
  const float* inv_p = nullptr;    // [n_layers, n_heads, d_model] 1 / p_j
  const float* columns = nullptr;  // [n_layers, n_heads, d_model, d_head] W_v[h] transposed
  const float* x = nullptr;        // [rows, d_model] LayerNorm_1 output the GEMM read
  const int32_t* sample_counts = nullptr;  // [mca rows, n_heads] from LaunchMcaSampleCount
  // Values, written where r < d_model: values[row * value_stride + h * d_head + c] (no bias).
  float* values = nullptr;
  int64_t value_stride = 0;
  int n_heads = 0;
  int d_head = 0;
  int d_model = 0;
};

// Enqueues the sampled value kernel on `stream`: one block per (MCA row, head) (grid-strided),
// its threads over the head's columns; the block draws a chunk of samples in parallel into shared
// memory, then every thread sums them in order into its columns. Returns the launch's CUDA error.
cudaError_t LaunchMcaValues(const McaValueParams& params, cudaStream_t stream);

}  // namespace aaren::cuda

#endif  // AAREN_KERNELS_MCA_KERNELS_H_
