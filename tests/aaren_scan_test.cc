// SPDX-License-Identifier: Apache-2.0
// The scan stage on its own (core/aaren_scan.h): ragged spans with seeded states, both activation
// layouts, every task split (head groups, chunks) and thread count, against a float64 softmax
// over each prefix computed directly from the scores.
#include "core/aaren_scan.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/aaren_state.h"

namespace aaren {
namespace {

constexpr int64_t kHeads = 4;
constexpr int64_t kDHead = 8;
constexpr int64_t kRec = 2 + kDHead;

struct Case {
  std::vector<int64_t> lengths;
  std::vector<float> scores, values;  // logical [rows, heads(, d_head)]
  std::vector<std::vector<float>> seed_states;
  // Prefix the seed state stands for: `seed_tokens` leaves, kept to recompute in float64.
  std::vector<std::vector<float>> seed_scores, seed_values;
};

Case MakeCase(std::vector<int64_t> lengths, uint64_t seed, float score_scale) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Case c;
  c.lengths = std::move(lengths);
  int64_t rows = 0;
  for (int64_t n : c.lengths) rows += n;
  for (int64_t i = 0; i < rows * kHeads; ++i) c.scores.push_back(score_scale * normal(rng));
  for (int64_t i = 0; i < rows * kHeads * kDHead; ++i) c.values.push_back(normal(rng));
  for (size_t s = 0; s < c.lengths.size(); ++s) {
    // Even spans start from the identity; odd ones from a prefix of 5 random leaves.
    const int64_t prefix = s % 2 == 0 ? 0 : 5;
    std::vector<float> state(kHeads * kRec), ps, pv;
    ResetState(state.data(), StateLayout{1, kHeads, kDHead});
    for (int64_t t = 0; t < prefix; ++t) {
      for (int64_t h = 0; h < kHeads; ++h) {
        std::vector<float> leaf(kRec);
        leaf[0] = score_scale * normal(rng);
        leaf[1] = 1.0f;
        for (int64_t j = 0; j < kDHead; ++j) leaf[2 + j] = normal(rng);
        ps.push_back(leaf[0]);
        pv.insert(pv.end(), leaf.begin() + 2, leaf.end());
        CombineInto(&state[h * kRec], leaf.data(), kDHead);
      }
    }
    c.seed_states.push_back(state);
    c.seed_scores.push_back(ps);
    c.seed_values.push_back(pv);
  }
  return c;
}

// Runs the scan with activations in `layout_kind` (0: row-major, 1: head-major).
std::vector<float> RunScan(const Case& c, int layout_kind, int threads, int64_t min_chunk,
                           std::vector<std::vector<float>>& states) {
  int64_t rows = 0;
  for (int64_t n : c.lengths) rows += n;
  const HeadLayout sl = layout_kind == 0 ? HeadLayout{kHeads, 1} : HeadLayout{1, rows};
  const HeadLayout vl =
      layout_kind == 0 ? HeadLayout{kHeads * kDHead, kDHead} : HeadLayout{kDHead, rows * kDHead};
  std::vector<float> scores(rows * kHeads), values(rows * kHeads * kDHead), out(values.size());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t h = 0; h < kHeads; ++h) {
      scores[sl.at(r, h)] = c.scores[r * kHeads + h];
      for (int64_t j = 0; j < kDHead; ++j) {
        values[vl.at(r, h) + j] = c.values[(r * kHeads + h) * kDHead + j];
      }
    }
  }
  states = c.seed_states;
  std::vector<ScanSpan> spans;
  int64_t row = 0;
  for (size_t s = 0; s < c.lengths.size(); ++s) {
    spans.push_back({row, c.lengths[s], states[s].data()});
    row += c.lengths[s];
  }
  ScanParams p;
  p.scores = scores.data();
  p.score_layout = sl;
  p.values = values.data();
  p.value_layout = vl;
  p.outputs = out.data();
  p.output_layout = vl;
  p.n_heads = kHeads;
  p.d_head = kDHead;
  p.spans = spans;
  p.num_threads = threads;
  p.min_chunk = min_chunk;
  AarenPrefixAttention(p);
  // Back to logical [rows, heads, d_head].
  std::vector<float> logical(out.size());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t h = 0; h < kHeads; ++h) {
      for (int64_t j = 0; j < kDHead; ++j) {
        logical[(r * kHeads + h) * kDHead + j] = out[vl.at(r, h) + j];
      }
    }
  }
  return logical;
}

// float64: softmax over (seed prefix + span prefix) of each token, from scratch.
std::vector<double> Reference(const Case& c) {
  std::vector<double> out;
  int64_t row = 0;
  for (size_t s = 0; s < c.lengths.size(); ++s) {
    const int64_t prefix = static_cast<int64_t>(c.seed_scores[s].size()) / kHeads;
    for (int64_t t = 0; t < c.lengths[s]; ++t) {
      for (int64_t h = 0; h < kHeads; ++h) {
        std::vector<double> sc, vv;
        for (int64_t i = 0; i < prefix; ++i) {
          sc.push_back(c.seed_scores[s][i * kHeads + h]);
          for (int64_t j = 0; j < kDHead; ++j) {
            vv.push_back(c.seed_values[s][(i * kHeads + h) * kDHead + j]);
          }
        }
        for (int64_t i = 0; i <= t; ++i) {
          sc.push_back(c.scores[(row + i) * kHeads + h]);
          for (int64_t j = 0; j < kDHead; ++j) {
            vv.push_back(c.values[((row + i) * kHeads + h) * kDHead + j]);
          }
        }
        double m = -INFINITY, den = 0;
        for (double x : sc) m = std::max(m, x);
        std::vector<double> o(kDHead, 0.0);
        for (size_t i = 0; i < sc.size(); ++i) {
          const double e = std::exp(sc[i] - m);
          den += e;
          for (int64_t j = 0; j < kDHead; ++j) o[j] += e * vv[i * kDHead + j];
        }
        for (int64_t j = 0; j < kDHead; ++j) out.push_back(o[j] / den);
      }
    }
    row += c.lengths[s];
  }
  return out;
}

double MaxRelError(const std::vector<float>& a, const std::vector<double>& b) {
  double diff = 0, ref = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    diff = std::max(diff, std::abs(a[i] - b[i]));
    ref = std::max(ref, std::abs(b[i]));
  }
  return diff / ref;
}

TEST(AarenScanTest, MatchesFloat64SoftmaxForEverySplitAndLayout) {
  const Case c = MakeCase({1, 700, 0, 3, 1, 257}, 42, 3.0f);
  const std::vector<double> expected = Reference(c);
  std::vector<std::vector<float>> first_states;
  for (int layout_kind : {0, 1}) {
    for (int threads : {1, 2, 3, 8}) {
      for (int64_t min_chunk : {1, 16, 1024}) {
        SCOPED_TRACE(testing::Message() << "layout " << layout_kind << " threads " << threads
                                        << " min_chunk " << min_chunk);
        std::vector<std::vector<float>> states;
        EXPECT_LT(MaxRelError(RunScan(c, layout_kind, threads, min_chunk, states), expected), 1e-5);
        if (first_states.empty()) first_states = states;
        for (size_t s = 0; s < states.size(); ++s) {
          for (size_t k = 0; k < states[s].size(); ++k) {
            if (states[s][k] == first_states[s][k]) continue;  // includes m = -inf (empty span)
            ASSERT_NEAR(states[s][k], first_states[s][k],
                        1e-5 * std::max(1.0f, std::abs(first_states[s][k])));
          }
        }
      }
    }
  }
}

TEST(AarenScanTest, ExtremeScoresStayFiniteAndExact) {
  const Case c = MakeCase({1000, 5}, 7, 1e4f);  // scores ~ +-1e4: weights nearly one-hot
  std::vector<std::vector<float>> states;
  const std::vector<float> out = RunScan(c, 1, 2, 16, states);
  EXPECT_LT(MaxRelError(out, Reference(c)), 1e-5);
  for (const auto& s : states) {
    for (float v : s) ASSERT_FALSE(std::isnan(v));
  }
}

// A span long enough (8 MB of outputs) for the scan to write with streaming stores, against the
// float64 recurrence (exact arithmetic of the same prefix softmax, O(N)).
TEST(AarenScanTest, LongSpanMatchesFloat64Recurrence) {
  const int64_t n = 65536;
  const Case c = MakeCase({n}, 9, 3.0f);
  std::vector<double> expected;
  expected.reserve(n * kHeads * kDHead);
  std::vector<double> m(kHeads, -INFINITY), u(kHeads, 0.0), w(kHeads * kDHead, 0.0);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t h = 0; h < kHeads; ++h) {
      const double s = c.scores[t * kHeads + h];
      const double m_new = std::max(m[h], s);
      const double a = std::exp(m[h] - m_new), e = std::exp(s - m_new);
      u[h] = u[h] * a + e;
      for (int64_t j = 0; j < kDHead; ++j) {
        double& wj = w[h * kDHead + j];
        wj = wj * a + e * c.values[(t * kHeads + h) * kDHead + j];
        expected.push_back(wj / u[h]);
      }
      m[h] = m_new;
    }
  }
  for (int layout_kind : {0, 1}) {
    for (int threads : {1, 2}) {
      std::vector<std::vector<float>> states;
      EXPECT_LT(MaxRelError(RunScan(c, layout_kind, threads, 1024, states), expected), 1e-5)
          << "layout " << layout_kind << " threads " << threads;
    }
  }
}

TEST(AarenScanTest, EmptyBatchAndEmptySpansChangeNothing) {
  const Case c = MakeCase({0, 0}, 1, 1.0f);
  std::vector<std::vector<float>> states;
  RunScan(c, 0, 2, 16, states);
  EXPECT_EQ(states, c.seed_states);
}

}  // namespace
}  // namespace aaren
