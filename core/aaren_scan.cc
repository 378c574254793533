// SPDX-License-Identifier: Apache-2.0
#include "core/aaren_scan.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include <immintrin.h>
#include <omp.h>
#include <Eigen/Core>

#include "core/aaren_state.h"

namespace aaren {
namespace {

// Tokens whose exponentials are evaluated together with Eigen's vectorised exp.
constexpr int64_t kExpBlock = 64;
// A call of AarenScanHeads whose outputs exceed this writes them with streaming stores.
constexpr int64_t kStreamOutputBytes = 4 << 20;
constexpr int64_t kMaxStreamedDHead = 256;

using ArrayMap = Eigen::Map<Eigen::ArrayXf>;

// Carves a task's workspace (ScanWorkspaceFloats(heads) floats): per-head running values, kept
// out of the state records so the hot loops work on small local arrays, and the exponent blocks.
struct Workspace {
  float* m;
  float* u;
  float* from_identity;  // 1.0f where the head's state was the identity at the block's start
  float* a;              // [kExpBlock, heads]
  float* e;              // [kExpBlock, heads]
  Workspace(float* base, int64_t heads)
      : m(base),
        u(base + heads),
        from_identity(base + 2 * heads),
        a(base + 3 * heads),
        e(base + 3 * heads + kExpBlock * heads) {}
};

// Reduces rows [0, length) of heads [0, heads) to their aggregate states (no outputs). `agg` holds
// `heads` records of (m, u, w[d_head]), back to back.
void ReduceChunk(const float* scores, HeadLayout sl, const float* values, HeadLayout vl,
                 int64_t length, int64_t heads, int64_t d_head, float* agg, float* workspace) {
  const int64_t rec = 2 + d_head;
  for (int64_t g = 0; g < heads; ++g) {
    float m = kNegInf;
    for (int64_t i = 0; i < length; ++i) m = std::max(m, scores[sl.at(i, g)]);
    agg[g * rec] = m;
    agg[g * rec + 1] = 0.0f;
    std::fill(agg + g * rec + 2, agg + (g + 1) * rec, 0.0f);
  }
  float* e = Workspace(workspace, heads).e;
  for (int64_t b0 = 0; b0 < length; b0 += kExpBlock) {
    const int64_t nb = std::min(kExpBlock, length - b0);
    for (int64_t i = 0; i < nb; ++i) {
      for (int64_t g = 0; g < heads; ++g) {
        e[i * heads + g] = scores[sl.at(b0 + i, g)] - agg[g * rec];
      }
    }
    ArrayMap(e, nb * heads) = ArrayMap(e, nb * heads).exp();
    for (int64_t i = 0; i < nb; ++i) {
      for (int64_t g = 0; g < heads; ++g) {
        const float ei = e[i * heads + g];
        float* __restrict w = agg + g * rec + 2;
        const float* __restrict v = values + vl.at(b0 + i, g);
        agg[g * rec + 1] += ei;
        for (int64_t j = 0; j < d_head; ++j) w[j] += ei * v[j];
      }
    }
  }
}

struct Task {
  int64_t span = 0;
  int64_t head_begin = 0;  // heads [head_begin, head_end)
  int64_t head_end = 0;
  int64_t begin = 0;  // token offsets inside the span
  int64_t end = 0;
  bool multi_chunk = false;  // one of several chunks of a (span, head group)
  bool last_chunk = true;
};

}  // namespace

int64_t ScanWorkspaceFloats(int64_t heads) { return heads * (3 + 2 * kExpBlock); }

namespace {

// One pass of the recurrence over `heads` heads together (see AarenScanHeads).
// stream: write outputs with streaming stores (rows 16-byte aligned, d_head % 4 == 0).
void ScanPass(const float* scores, HeadLayout sl, const float* values, HeadLayout vl,
              int64_t length, int64_t heads, int64_t d_head, float* state, float* out,
              HeadLayout ol, float* workspace, bool stream) {
  const Workspace ws(workspace, heads);
  const int64_t rec = 2 + d_head;
  float* m = ws.m;
  float* u = ws.u;
  float* a = ws.a;
  float* e = ws.e;
  for (int64_t g = 0; g < heads; ++g) {
    m[g] = state[g * rec];
    u[g] = state[g * rec + 1];
  }
  // Per token and head: a = exp(m_prev - m_new) rescales the carried (u, w); e = exp(s - m_new)
  // weighs the new leaf. Evaluated a block of tokens at a time so the exps vectorise.
  for (int64_t b0 = 0; b0 < length; b0 += kExpBlock) {
    const int64_t nb = std::min(kExpBlock, length - b0);
    for (int64_t g = 0; g < heads; ++g) ws.from_identity[g] = (m[g] == kNegInf) ? 1.0f : 0.0f;
    for (int64_t i = 0; i < nb; ++i) {
      for (int64_t g = 0; g < heads; ++g) {
        const float s = scores[sl.at(b0 + i, g)];
        const float m_new = std::max(m[g], s);
        a[i * heads + g] = m[g] == kNegInf ? 0.0f : m[g] - m_new;
        e[i * heads + g] = s - m_new;
        m[g] = m_new;
      }
    }
    ArrayMap(a, nb * heads) = ArrayMap(a, nb * heads).exp();
    ArrayMap(e, nb * heads) = ArrayMap(e, nb * heads).exp();
    // Seeded from the identity: exp(-inf - s) is exactly 0 (only a head's first token can be).
    for (int64_t g = 0; g < heads; ++g) {
      if (ws.from_identity[g] != 0.0f) a[g] = 0.0f;
    }
    for (int64_t i = 0; i < nb; ++i) {
      for (int64_t g = 0; g < heads; ++g) {
        const float ai = a[i * heads + g];
        const float ei = e[i * heads + g];
        u[g] = u[g] * ai + ei;
        const float inv_u = 1.0f / u[g];
        float* __restrict w = state + g * rec + 2;
        const float* __restrict v = values + vl.at(b0 + i, g);
        float* __restrict o = out + ol.at(b0 + i, g);
        if (stream) {
          // Computed in L1, then written around the cache: no read-for-ownership of the output
          // lines, a third less memory traffic on long spans.
          alignas(64) float row[kMaxStreamedDHead];
          for (int64_t j = 0; j < d_head; ++j) {
            const float wj = w[j] * ai + ei * v[j];
            w[j] = wj;
            row[j] = wj * inv_u;
          }
          for (int64_t j = 0; j < d_head; j += 4) _mm_stream_ps(o + j, _mm_load_ps(row + j));
        } else {
          for (int64_t j = 0; j < d_head; ++j) {
            const float wj = w[j] * ai + ei * v[j];
            w[j] = wj;
            o[j] = wj * inv_u;
          }
        }
      }
    }
  }
  if (stream) _mm_sfence();  // order the streaming stores before anyone reads the outputs
  for (int64_t g = 0; g < heads; ++g) {
    state[g * rec] = m[g];
    state[g * rec + 1] = u[g];
  }
}

}  // namespace

void AarenScanHeads(const float* scores, HeadLayout sl, const float* values, HeadLayout vl,
                    int64_t length, int64_t heads, int64_t d_head, float* state, float* out,
                    HeadLayout ol, float* workspace) {
  std::vector<float> owned;
  if (workspace == nullptr) {
    owned.resize(static_cast<size_t>(ScanWorkspaceFloats(heads)));
    workspace = owned.data();
  }
  // Head-major activations: one head per pass, i.e. three sequential streams (scores, values,
  // outputs), which the prefetchers follow best. Row-major: every head of a row in one pass, so
  // each row is read whole.
  const bool head_major = vl.head_stride > vl.row_stride;
  const int64_t per_pass = head_major ? 1 : heads;
  const int64_t rec = 2 + d_head;
  // Outputs much larger than the caches are written with streaming (non-temporal) stores when
  // every output row is 16-byte aligned.
  const bool stream = length * heads * d_head * int64_t{sizeof(float)} >= kStreamOutputBytes &&
                      d_head % 4 == 0 && d_head <= kMaxStreamedDHead &&
                      reinterpret_cast<uintptr_t>(out) % 16 == 0 && ol.row_stride % 4 == 0 &&
                      ol.head_stride % 4 == 0;
  for (int64_t g = 0; g < heads; g += per_pass) {
    const int64_t n = std::min(per_pass, heads - g);
    ScanPass(scores + sl.at(0, g), sl, values + vl.at(0, g), vl, length, n, d_head, state + g * rec,
             out + ol.at(0, g), ol, workspace, stream);
  }
}

void AarenPrefixAttention(const ScanParams& p) {
  const int64_t n_heads = p.n_heads;
  const int64_t d_head = p.d_head;
  const int64_t rec = 2 + d_head;
  const int threads = std::max(1, p.num_threads);

  int64_t total_work = 0;  // token-heads
  for (const ScanSpan& s : p.spans) total_work += s.length * n_heads;
  if (total_work == 0) return;
  // Task sizing: about two tasks per thread. A span with more work than that is split first by
  // head groups (free: each group is an independent recurrence reading its own columns), then by
  // chunks of tokens (costs phase 1's extra read of the chunk), never below min_chunk tokens.
  // With head-major activations every head's rows are contiguous, so a task reads one sequential
  // stream per head, which the hardware prefetchers follow.
  const int64_t target = std::max<int64_t>(1, total_work / (2 * threads));
  std::vector<Task> tasks;
  for (int64_t si = 0; si < static_cast<int64_t>(p.spans.size()); ++si) {
    const int64_t len = p.spans[si].length;
    if (len == 0) continue;
    int64_t groups = 1, chunks = 1;
    if (threads > 1) {
      groups = std::clamp<int64_t>((len * n_heads + target - 1) / target, 1, n_heads);
      const int64_t group_work = len * n_heads / groups;
      const int64_t max_chunks = std::max<int64_t>(1, len / std::max<int64_t>(1, p.min_chunk));
      chunks = std::clamp<int64_t>((group_work + target - 1) / target, 1, max_chunks);
    }
    for (int64_t g = 0; g < groups; ++g) {
      for (int64_t c = 0; c < chunks; ++c) {
        // Boundaries spread remainders evenly; chunks of one group are consecutive in `tasks`.
        tasks.push_back(Task{si, n_heads * g / groups, n_heads * (g + 1) / groups, len * c / chunks,
                             len * (c + 1) / chunks, chunks > 1, c == chunks - 1});
      }
    }
  }
  const int64_t n_tasks = static_cast<int64_t>(tasks.size());
  const bool parallel = threads > 1 && n_tasks > 1 && total_work >= 4096;

  // seeds: for each multi-chunk task, its head group's records. Phase 1 writes the chunk's
  // aggregate there, phase 2 turns it into the prefix state that seeds the chunk, phase 3 scans
  // from it.
  std::vector<int64_t> seed_offset(n_tasks + 1, 0);
  for (int64_t ti = 0; ti < n_tasks; ++ti) {
    const Task& t = tasks[ti];
    seed_offset[ti + 1] = seed_offset[ti] + (t.multi_chunk ? (t.head_end - t.head_begin) * rec : 0);
  }
  std::vector<float> seeds(static_cast<size_t>(seed_offset[n_tasks]));
  // Per-thread workspaces, allocated here so nothing allocates inside the parallel regions.
  int64_t max_heads = 1;
  for (const Task& t : tasks) max_heads = std::max(max_heads, t.head_end - t.head_begin);
  // Rounded up to whole cache lines, plus one: the running (m, u) are written every token, and
  // sharing a line with a neighbour's workspace would bounce it between cores.
  constexpr int64_t kLineFloats = 64 / sizeof(float);
  const int64_t ws_floats =
      (ScanWorkspaceFloats(max_heads) + kLineFloats - 1) / kLineFloats * kLineFloats + kLineFloats;
  std::vector<float> workspaces(static_cast<size_t>(threads * ws_floats));
  auto workspace = [&] { return workspaces.data() + omp_get_thread_num() * ws_floats; };

  struct Rows {
    const float* s;
    const float* v;
    float* o;
  };
  auto rows = [&](const Task& t) {
    const int64_t r0 = p.spans[t.span].first_row + t.begin;
    return Rows{p.scores + p.score_layout.at(r0, t.head_begin),
                p.values + p.value_layout.at(r0, t.head_begin),
                p.outputs + p.output_layout.at(r0, t.head_begin)};
  };

  if (!seeds.empty()) {
    // Phase 1: aggregates of every chunk but the last of each (span, head group).
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (parallel)
    for (int64_t ti = 0; ti < n_tasks; ++ti) {
      const Task& t = tasks[ti];
      if (!t.multi_chunk || t.last_chunk) continue;
      const Rows r = rows(t);
      ReduceChunk(r.s, p.score_layout, r.v, p.value_layout, t.end - t.begin,
                  t.head_end - t.head_begin, d_head, seeds.data() + seed_offset[ti], workspace());
    }
    // Phase 2: exclusive prefix over the chunks, seeded with the span's state.
    std::vector<float> carry, agg;
    for (int64_t ti = 0; ti < n_tasks; ++ti) {
      const Task& t = tasks[ti];
      if (!t.multi_chunk) continue;
      const int64_t heads = t.head_end - t.head_begin;
      float* seed = seeds.data() + seed_offset[ti];
      if (t.begin == 0) {
        const float* state = p.spans[t.span].state + t.head_begin * rec;
        carry.assign(state, state + heads * rec);
      }
      if (!t.last_chunk) agg.assign(seed, seed + heads * rec);
      std::copy(carry.begin(), carry.end(), seed);
      if (!t.last_chunk) {
        for (int64_t g = 0; g < heads; ++g) CombineInto(&carry[g * rec], &agg[g * rec], d_head);
      }
    }
  }

  // Phase 3 (or the only phase): sequential scan of each task from its seed.
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (parallel)
  for (int64_t ti = 0; ti < n_tasks; ++ti) {
    const Task& t = tasks[ti];
    const Rows r = rows(t);
    const int64_t heads = t.head_end - t.head_begin;
    float* span_state = p.spans[t.span].state + t.head_begin * rec;
    float* state = t.multi_chunk ? seeds.data() + seed_offset[ti] : span_state;
    AarenScanHeads(r.s, p.score_layout, r.v, p.value_layout, t.end - t.begin, heads, d_head, state,
                   r.o, p.output_layout);
    if (t.multi_chunk && t.last_chunk) std::copy(state, state + heads * rec, span_state);
  }
}

}  // namespace aaren
