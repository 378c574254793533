// SPDX-License-Identifier: Apache-2.0
#include "core/aaren_scan.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include <Eigen/Core>

#include "core/aaren_state.h"

namespace aaren {
namespace {

// Tokens whose exponentials are evaluated together with Eigen's vectorised exp.
constexpr int64_t kExpBlock = 64;

using ArrayMap = Eigen::Map<Eigen::ArrayXf>;

// Reduces rows [0, length) of one head to its aggregate state (m, u, w) without outputs.
void ReduceChunk(const float* scores, int64_t score_stride, const float* values,
                 int64_t value_stride, int64_t length, int64_t d_head, float* agg) {
  float m = kNegInf;
  for (int64_t i = 0; i < length; ++i) m = std::max(m, scores[i * score_stride]);
  float u = 0.0f;
  float* __restrict w = agg + 2;
  std::fill(w, w + d_head, 0.0f);
  alignas(64) float e[kExpBlock];
  for (int64_t b0 = 0; b0 < length; b0 += kExpBlock) {
    const int64_t nb = std::min(kExpBlock, length - b0);
    for (int64_t i = 0; i < nb; ++i) e[i] = scores[(b0 + i) * score_stride] - m;
    ArrayMap(e, nb) = ArrayMap(e, nb).exp();
    for (int64_t i = 0; i < nb; ++i) {
      const float* __restrict v = values + (b0 + i) * value_stride;
      const float ei = e[i];
      u += ei;
      for (int64_t j = 0; j < d_head; ++j) w[j] += ei * v[j];
    }
  }
  agg[0] = m;
  agg[1] = u;
}

struct Task {
  int64_t span = 0;
  int64_t head = 0;
  int64_t begin = 0;  // token offsets inside the span
  int64_t end = 0;
  bool multi_chunk = false;  // part of a (span, head) cut into several chunks
  bool last_chunk = true;
};

}  // namespace

void AarenScanSequential(const float* scores, int64_t score_stride, const float* values,
                         int64_t value_stride, int64_t length, int64_t d_head, float* state,
                         float* out, int64_t out_stride) {
  float m = state[0];
  float u = state[1];
  float* __restrict w = state + 2;
  // Per token: a = exp(m_prev - m_new) rescales the carried (u, w); e = exp(s - m_new) weighs
  // the new leaf. Evaluated a block at a time so the exps vectorise.
  alignas(64) float a[kExpBlock];
  alignas(64) float e[kExpBlock];
  for (int64_t b0 = 0; b0 < length; b0 += kExpBlock) {
    const int64_t nb = std::min(kExpBlock, length - b0);
    const bool from_identity = (m == kNegInf);
    for (int64_t i = 0; i < nb; ++i) {
      const float s = scores[(b0 + i) * score_stride];
      const float m_new = std::max(m, s);
      a[i] = (m == kNegInf) ? 0.0f : m - m_new;
      e[i] = s - m_new;
      m = m_new;
    }
    ArrayMap(a, nb) = ArrayMap(a, nb).exp();
    ArrayMap(e, nb) = ArrayMap(e, nb).exp();
    // exp(-inf - s) is exactly 0: an identity seed contributes nothing (u = w = 0 anyway, but
    // this keeps the rescale factor exact rather than exp(0) = 1 applied to zeros).
    if (from_identity) a[0] = 0.0f;
    for (int64_t i = 0; i < nb; ++i) {
      const float* __restrict v = values + (b0 + i) * value_stride;
      float* __restrict o = out + (b0 + i) * out_stride;
      const float ai = a[i];
      const float ei = e[i];
      u = u * ai + ei;
      const float inv_u = 1.0f / u;
      for (int64_t j = 0; j < d_head; ++j) {
        const float wj = w[j] * ai + ei * v[j];
        w[j] = wj;
        o[j] = wj * inv_u;
      }
    }
  }
  state[0] = m;
  state[1] = u;
}

void AarenPrefixAttention(const ScanParams& p) {
  const int64_t n_heads = p.n_heads;
  const int64_t d_head = p.d_head;
  const int64_t rec = 2 + d_head;
  const int threads = std::max(1, p.num_threads);

  int64_t total_work = 0;
  for (const ScanSpan& s : p.spans) total_work += s.length * n_heads;
  if (total_work == 0) return;
  // Aim for ~4 tasks per thread; never cut chunks below min_chunk tokens.
  const int64_t target =
      std::max<int64_t>(std::max<int64_t>(1, p.min_chunk), total_work / (4 * threads));

  std::vector<Task> tasks;
  for (int64_t si = 0; si < static_cast<int64_t>(p.spans.size()); ++si) {
    const int64_t len = p.spans[si].length;
    if (len == 0) continue;
    const int64_t n_chunks = threads > 1 ? std::max<int64_t>(1, len / target) : 1;
    for (int64_t h = 0; h < n_heads; ++h) {
      for (int64_t c = 0; c < n_chunks; ++c) {
        // Chunk boundaries spread the remainder evenly.
        tasks.push_back(Task{si, h, len * c / n_chunks, len * (c + 1) / n_chunks, n_chunks > 1,
                             c == n_chunks - 1});
      }
    }
  }
  const int64_t n_tasks = static_cast<int64_t>(tasks.size());
  const bool parallel = threads > 1 && n_tasks > 1 && total_work >= 4096;

  // seeds[t]: for a multi-chunk task, phase 1 writes the chunk's aggregate here, phase 2 turns it
  // into the prefix state that seeds the chunk, phase 3 scans from it.
  bool any_multi = false;
  for (const Task& t : tasks) any_multi |= t.multi_chunk;
  std::vector<float> seeds(any_multi ? static_cast<size_t>(n_tasks * rec) : 0);

  auto rows = [&](const Task& t, const float*& s, const float*& v, float*& o) {
    const int64_t r0 = p.spans[t.span].first_row + t.begin;
    s = p.scores + r0 * p.score_stride + t.head;
    v = p.values + r0 * p.value_stride + t.head * d_head;
    o = p.outputs + r0 * p.output_stride + t.head * d_head;
  };

  if (any_multi) {
    // Phase 1: aggregates of every chunk but the last of each (span, head).
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (parallel)
    for (int64_t ti = 0; ti < n_tasks; ++ti) {
      const Task& t = tasks[ti];
      if (!t.multi_chunk || t.last_chunk) continue;
      const float *s, *v;
      float* o;
      rows(t, s, v, o);
      ReduceChunk(s, p.score_stride, v, p.value_stride, t.end - t.begin, d_head,
                  seeds.data() + ti * rec);
    }
    // Phase 2: exclusive prefix over chunks, seeded with the span's state. Chunks of one
    // (span, head) are consecutive in `tasks`.
    std::vector<float> carry(rec), agg(rec);
    for (int64_t ti = 0; ti < n_tasks; ++ti) {
      const Task& t = tasks[ti];
      if (!t.multi_chunk) continue;
      if (t.begin == 0) {
        std::memcpy(carry.data(), p.spans[t.span].state + t.head * rec, rec * sizeof(float));
      }
      float* seed = seeds.data() + ti * rec;
      if (!t.last_chunk) std::memcpy(agg.data(), seed, rec * sizeof(float));
      std::memcpy(seed, carry.data(), rec * sizeof(float));
      if (!t.last_chunk) CombineInto(carry.data(), agg.data(), d_head);
    }
  }

  // Phase 3 (or the only phase): sequential scan of each task from its seed.
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (parallel)
  for (int64_t ti = 0; ti < n_tasks; ++ti) {
    const Task& t = tasks[ti];
    const float *s, *v;
    float* o;
    rows(t, s, v, o);
    float* span_state = p.spans[t.span].state + t.head * rec;
    float* state = t.multi_chunk ? seeds.data() + ti * rec : span_state;
    AarenScanSequential(s, p.score_stride, v, p.value_stride, t.end - t.begin, d_head, state, o,
                        p.output_stride);
    if (t.multi_chunk && t.last_chunk) std::memcpy(span_state, state, rec * sizeof(float));
  }
}

}  // namespace aaren
