// SPDX-License-Identifier: Apache-2.0
// Aaren prefix attention over a ragged batch: for every span and head, the inclusive prefix scan
// of the leaves (s_i, 1, v_i) under the combine operator of core/aaren_state.h, seeded with the
// span's state; writes o_i = w_i / u_i for every token and the final state back.
//
// This is the "scan stage" of the CPU backend, exposed on its own so that it can be tested and
// benchmarked in isolation. Work is split into tasks over (span, head group, chunk) of about
// 1/(2 x threads) of the batch's work each. A span with more work than that is first split into
// groups of consecutive heads (independent recurrences), then into chunks of tokens processed
// with a work-efficient three-phase scan (1: reduce each chunk to its aggregate state, in
// parallel; 2: carry the prefix across the chunks, sequentially, one combine per chunk; 3: rescan
// each chunk seeded with its carried prefix, writing outputs, in parallel). Otherwise the span is
// one task: a single sequential pass over whole rows.
#ifndef AAREN_CORE_AAREN_SCAN_H_
#define AAREN_CORE_AAREN_SCAN_H_

#include <cstdint>

#include "absl/types/span.h"

namespace aaren {

struct ScanSpan {
  int64_t first_row = 0;   // row of the span's first token in scores/values/outputs
  int64_t length = 0;      // tokens; 0 is allowed (no outputs, state unchanged)
  float* state = nullptr;  // n_heads x (m, u, w[d_head]) of this layer, read then overwritten
};

// Where head h of row r of an activation lives: base + r * row_stride + h * head_stride.
// Row-major [rows, heads * width]: {heads * width, width}. Head-major [heads, rows, width]:
// {width, rows * width}, which keeps each head's rows contiguous (what the CPU backend uses).
struct HeadLayout {
  int64_t row_stride = 0;
  int64_t head_stride = 0;
  constexpr int64_t at(int64_t row, int64_t head) const {
    return row * row_stride + head * head_stride;
  }
};

struct ScanParams {
  const float* scores = nullptr;  // one float per (row, head)
  HeadLayout score_layout;
  const float* values = nullptr;  // d_head floats per (row, head), contiguous
  HeadLayout value_layout;
  float* outputs = nullptr;  // like values; must not alias scores or values
  HeadLayout output_layout;
  int64_t n_heads = 0;
  int64_t d_head = 0;
  // Spans must not overlap in rows nor share a state buffer.
  absl::Span<const ScanSpan> spans;
  // Thread budget (>= 1). Also used to size chunks: a (span, head) is cut into chunks only when
  // the batch has too few (span, head) pairs to keep the threads busy.
  int num_threads = 1;
  // Smallest chunk the three-phase scan cuts (tokens). Tests set it low to exercise chunking.
  int64_t min_chunk = 1024;
};

// Runs the scan. Inputs must be finite (scores, values, states with m finite or -inf).
// Thread-safe for calls on disjoint buffers; uses up to num_threads OpenMP threads.
void AarenPrefixAttention(const ScanParams& params);

// The sequential recurrence over `length` tokens for `heads` consecutive heads at once (each head's
// rows read in order). `state` holds the heads' (m, u, w[d_head]) records back to back, in/out.
// `workspace`: ScanWorkspaceFloats(heads) floats of scratch, or null to allocate them. This is
// the plain sequential recurrence, the benchmarks' single-thread baseline, and the scan's phase 3.
void AarenScanHeads(const float* scores, HeadLayout score_layout, const float* values,
                    HeadLayout value_layout, int64_t length, int64_t heads, int64_t d_head,
                    float* state, float* out, HeadLayout out_layout, float* workspace = nullptr);

// Scratch floats AarenScanHeads needs for `heads` heads.
int64_t ScanWorkspaceFloats(int64_t heads);

}  // namespace aaren

#endif  // AAREN_CORE_AAREN_SCAN_H_
