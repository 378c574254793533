// SPDX-License-Identifier: Apache-2.0
#include "core/cpu_backend.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <thread>

#include <Eigen/Core>
#include <unsupported/Eigen/SpecialFunctions>

#include "absl/strings/str_cat.h"
#include "core/aaren_scan.h"
#include "core/aaren_state.h"
#include "core/linear.h"
#include "core/mca_sampling.h"
#include "core/position_encoding.h"
#include "core/score_weights.h"
#include "core/status_macros.h"

namespace aaren {
namespace {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
// Activations live in buffers aligned for the widest vectors: Eigen's vectorised reductions (the
// LayerNorm means) start their packets at the first aligned element, so with malloc's varying
// alignment the same rows would be summed in a different order from one call to the next. Aligned
// buffers make a Forward's results a function of its batch alone (Monte-Carlo Attention's
// "same seed, same result" relies on it).
using AlignedFloats = std::vector<float, Eigen::aligned_allocator<float>>;
using ArrayMap = Eigen::Map<Eigen::ArrayXf>;
using ConstArrayMap = Eigen::Map<const Eigen::ArrayXf>;

// Rows per block of the row-parallel stages: large enough for efficient matrix products, small
// enough that a block's activations stay in cache.
constexpr int64_t kMaxBlockRows = 256;
constexpr int64_t kMinBlockRows = 16;

// y = LayerNorm(x) * gamma + beta for n rows of width d (two-pass mean / variance, as PyTorch).
void LayerNormRows(const float* x, int64_t n, int64_t d, const Tensor& gamma, const Tensor& beta,
                   float eps, float* y) {
  const ConstArrayMap g(gamma.ptr(), d), b(beta.ptr(), d);
  for (int64_t r = 0; r < n; ++r) {
    const ConstArrayMap row(x + r * d, d);
    const float mean = row.mean();
    const float var = (row - mean).square().mean();
    const float inv_std = 1.0f / std::sqrt(var + eps);
    ArrayMap(y + r * d, d) = (row - mean) * inv_std * g + b;
  }
}

// Exact GELU, 0.5 z (1 + erf(z / sqrt 2)), in place, with Eigen's vectorised erf.
void GeluInPlace(float* z, int64_t n) {
  ArrayMap a(z, n);
  a = 0.5f * a * (1.0f + (a * float(M_SQRT1_2)).erf());
}

// One thread's scratch for blocks of up to `rows` rows. Allocated before any parallel region, so
// that running out of memory is reported (and undone) rather than terminating the process.
struct Scratch {
  AlignedFloats normed;  // [rows, d_model]
  AlignedFloats wide;    // [rows, max(d_model, d_ff)]: values, FFN hidden
  AlignedFloats scores;  // [rows, n_heads]
  AlignedFloats attn;    // [rows, d_model]: attention outputs gathered row-major
  Scratch(const ModelConfig& c, int64_t rows)
      : normed(rows * c.d_model),
        wide(rows * std::max(c.d_model, c.d_ff)),
        scores(rows * c.n_heads),
        attn(rows * c.d_model) {}
};

struct RowRange {
  int64_t begin;
  int64_t end;
  int64_t size() const { return end - begin; }
};

std::vector<RowRange> SplitRows(int64_t rows, int threads) {
  const int64_t per_block =
      std::clamp<int64_t>((rows + 4 * threads - 1) / (4 * threads), kMinBlockRows, kMaxBlockRows);
  std::vector<RowRange> blocks;
  for (int64_t b = 0; b < rows; b += per_block)
    blocks.push_back({b, std::min(rows, b + per_block)});
  return blocks;
}

// Runs fn(block, scratch) over blocks on up to scratch.size() OpenMP threads, each thread with
// its own scratch. fn must not throw (it runs inside a parallel region).
template <typename Fn>
void ForEachBlock(const std::vector<RowRange>& blocks, std::vector<Scratch>& scratch, Fn&& fn) {
  const int64_t n = static_cast<int64_t>(blocks.size());
  const int threads = static_cast<int>(scratch.size());
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (n > 1 && threads > 1)
  for (int64_t i = 0; i < n; ++i) fn(blocks[i], scratch[omp_get_thread_num()]);
}

// Attention activations in head-major layout [n_heads, rows, width]: each head's rows are
// contiguous, which is what the scan streams through.
struct HeadMajor {
  AlignedFloats data;
  int64_t rows = 0;
  int64_t width = 0;
  HeadMajor(int64_t n_heads, int64_t rows, int64_t width)
      : data(static_cast<size_t>(n_heads * rows * width)), rows(rows), width(width) {}
  HeadLayout layout() const { return {width, rows * width}; }
  float* at(int64_t row, int64_t head) { return data.data() + layout().at(row, head); }
};

// Row-major [n, n_heads * width] block rows <-> head-major rows [first_row, first_row + n).
void ScatterToHeads(const float* block, int64_t n, int64_t n_heads, HeadMajor& hm,
                    int64_t first_row) {
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t h = 0; h < n_heads; ++h) {
      std::copy_n(block + (r * n_heads + h) * hm.width, hm.width, hm.at(first_row + r, h));
    }
  }
}
// Block row r <- head-major row row_of(r).
template <typename RowOf>
void GatherFromHeads(HeadMajor& hm, int64_t n, int64_t n_heads, RowOf row_of, float* block) {
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t h = 0; h < n_heads; ++h) {
      std::copy_n(hm.at(row_of(r), h), hm.width, block + (r * n_heads + h) * hm.width);
    }
  }
}

// x += W_o attn + b_o; x += W_2 gelu(W_1 LN_2(x) + b_1) + b_2, for n rows (attn row-major).
template <typename Packed>
void ResidualRows(const LayerWeights& w, const Packed& p, const ModelConfig& c, const float* attn,
                  float* x, int64_t n, Scratch& scratch) {
  const int64_t d = c.d_model;
  p.out.Run(attn, n, d, x, d, /*accumulate=*/true);
  LayerNormRows(x, n, d, *w.norm2_weight, *w.norm2_bias, static_cast<float>(c.norm_eps),
                scratch.normed.data());
  float* hidden = scratch.wide.data();
  p.ffn_up.Run(scratch.normed.data(), n, d, hidden, c.d_ff);
  GeluInPlace(hidden, n * c.d_ff);
  p.ffn_down.Run(hidden, n, c.d_ff, x, d, /*accumulate=*/true);
}

}  // namespace

CpuBackend::CpuBackend(std::shared_ptr<const Model> model, CpuBackendOptions options)
    : model_(std::move(model)),
      num_threads_(options.num_threads > 0
                       ? options.num_threads
                       : std::max(1, static_cast<int>(std::thread::hardware_concurrency()))),
      min_scan_chunk_(options.min_scan_chunk) {
  SetBlasSingleThreaded();  // this backend parallelises over row blocks itself
  const ModelConfig& c = model_->config();
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const LayerWeights& w = model_->layer(l);
    const FoldedScoreWeights folded = FoldQueryKey(*model_, l);
    layers_.push_back(PackedLayer{
        PackedLinear(folded.matrix.data(), c.n_heads, c.d_model, folded.bias.data()),
        PackedLinear(*w.value_weight, w.value_bias), PackedLinear(*w.out_weight, w.out_bias),
        PackedLinear(*w.ffn_up_weight, w.ffn_up_bias),
        PackedLinear(*w.ffn_down_weight, w.ffn_down_bias)});
  }
  if (c.input_kind == InputKind::kFeatures) {
    input_ = PackedLinear(*model_->input_weight(), model_->input_bias());
  }
  head_ = PackedLinear(model_->head_weight(), &model_->head_bias());
}

CpuBackend::~CpuBackend() = default;

absl::Status CpuBackend::Forward(absl::Span<const Span> spans) {
  const ModelConfig& c = model_->config();
  RETURN_IF_ERROR(ValidateSpans(c, spans));
  const int64_t n_spans = static_cast<int64_t>(spans.size());
  const int64_t state_floats = c.state_floats();

  // Row r of every activation is one token; spans are laid out back to back.
  std::vector<int64_t> first_row(n_spans + 1, 0);
  for (int64_t i = 0; i < n_spans; ++i) {
    first_row[i + 1] = first_row[i] + spans[i].length(c.n_features);
  }
  if (first_row[n_spans] == 0) return absl::OkStatus();
  auto span_rows = [&](int64_t i) { return first_row[i + 1] - first_row[i]; };
  // Output rows span i writes (in `outputs`, spans' rows follow each other).
  auto wanted_rows = [&](int64_t i) -> int64_t {
    switch (spans[i].output) {
      case OutputSelect::kAll:
        return span_rows(i);
      case OutputSelect::kLast:
        return 1;
      case OutputSelect::kNone:
        break;
    }
    return 0;
  };

  // All or nothing: keep the states to put back if the batch fails after touching them.
  std::vector<float> saved;
  auto restore = [&] {
    for (int64_t i = 0, k = 0; i < n_spans && !saved.empty(); ++i) {
      if (span_rows(i) == 0) continue;
      std::copy_n(&saved[k++ * state_floats], state_floats, spans[i].state);
    }
  };
  std::vector<float> outputs;  // rows of every wanted output, in span order
  std::vector<McaCounts> mca_counts(n_spans);
  try {
    int64_t live = 0;
    for (int64_t i = 0; i < n_spans; ++i) live += span_rows(i) > 0;
    saved.resize(static_cast<size_t>(live * state_floats));
    for (int64_t i = 0, k = 0; i < n_spans; ++i) {
      if (span_rows(i) > 0) std::copy_n(spans[i].state, state_floats, &saved[k++ * state_floats]);
    }
    RunLayers(spans, first_row, outputs, mca_counts);
  } catch (const std::bad_alloc&) {
    restore();
    return absl::ResourceExhaustedError(absl::StrCat(
        "not enough memory for a batch of ", first_row[n_spans], " tokens in ", n_spans, " spans"));
  }

  // A finite but huge input can overflow an activation; never let it poison a state.
  for (int64_t i = 0, o = 0; i < n_spans; ++i) {
    if (span_rows(i) == 0) continue;
    const int64_t n_out = wanted_rows(i);
    const auto finite = [](float v) { return std::isfinite(v); };
    const bool ok = std::all_of(spans[i].state, spans[i].state + state_floats, finite) &&
                    std::all_of(outputs.data() + o * c.output_dim,
                                outputs.data() + (o + n_out) * c.output_dim, finite);
    if (!ok) {
      restore();
      return absl::InvalidArgumentError(
          absl::StrCat("spans[", i,
                       "]: activations overflow float32 (input values too large?); no state was "
                       "changed"));
    }
    o += n_out;
  }
  for (int64_t i = 0, o = 0; i < n_spans; ++i) {
    if (span_rows(i) == 0) continue;
    const int64_t n_out = wanted_rows(i);
    std::copy_n(outputs.data() + o * c.output_dim, n_out * c.output_dim, spans[i].outputs);
    o += n_out;
    *spans[i].position += span_rows(i);
  }
  for (int64_t i = 0; i < n_spans; ++i) {
    if (spans[i].mca_counts != nullptr) *spans[i].mca_counts = mca_counts[i];
  }
  return absl::OkStatus();
}

const McaTables& CpuBackend::Mca() {
  std::call_once(mca_once_, [this] { mca_ = std::make_unique<McaTables>(*model_); });
  return *mca_;
}

void CpuBackend::RunLayers(absl::Span<const Span> spans, const std::vector<int64_t>& first_row,
                           std::vector<float>& outputs, std::vector<McaCounts>& mca_counts) {
  const ModelConfig& c = model_->config();
  const int64_t d = c.d_model, n_heads = c.n_heads, dh = c.d_head();
  const int64_t n_spans = static_cast<int64_t>(spans.size());
  const float eps = static_cast<float>(c.norm_eps);
  const StateLayout layout = StateLayout::For(c);
  const int64_t rows = first_row[n_spans];
  const std::vector<RowRange> blocks = SplitRows(rows, num_threads_);

  // Rows whose outputs are wanted, in span order.
  std::vector<int64_t> out_rows;
  for (int64_t i = 0; i < n_spans; ++i) {
    const int64_t len = first_row[i + 1] - first_row[i];
    if (len == 0 || spans[i].output == OutputSelect::kNone) continue;
    for (int64_t j = spans[i].output == OutputSelect::kAll ? 0 : len - 1; j < len; ++j) {
      out_rows.push_back(first_row[i] + j);
    }
  }
  const int64_t n_out = static_cast<int64_t>(out_rows.size());
  const std::vector<RowRange> out_blocks = SplitRows(n_out, num_threads_);

  // Every buffer is allocated before the first state is written (see Forward's catch).
  int64_t block_rows = 0;
  for (const RowRange& b : blocks) block_rows = std::max(block_rows, b.size());
  for (const RowRange& b : out_blocks) block_rows = std::max(block_rows, b.size());
  std::vector<Scratch> scratch(static_cast<size_t>(num_threads_), Scratch(c, block_rows));
  AlignedFloats x(static_cast<size_t>(rows * d));
  HeadMajor scores(n_heads, rows, 1), values(n_heads, rows, dh), attn(n_heads, rows, dh);
  AlignedFloats xs(static_cast<size_t>(n_out * d));
  outputs.assign(static_cast<size_t>(n_out * c.output_dim), 0.0f);
  AlignedFloats features;
  if (c.input_kind == InputKind::kFeatures) features.resize(rows * c.n_features);
  std::vector<ScanSpan> scan_spans(n_spans);
  // Monte-Carlo Attention: the spans that use it, their rows' normalised inputs (the sampled
  // value projections read them after the block pass) and which row blocks need no exact values.
  std::vector<int64_t> mca_spans;
  for (int64_t i = 0; i < n_spans; ++i) {
    if (spans[i].mca.enabled && first_row[i + 1] > first_row[i]) mca_spans.push_back(i);
  }
  const McaTables* mca = mca_spans.empty() ? nullptr : &Mca();
  AlignedFloats mca_normed(mca != nullptr ? static_cast<size_t>(rows * d) : 0);
  std::vector<char> row_mca(mca != nullptr ? static_cast<size_t>(rows) : 0, 0);
  for (int64_t i : mca_spans) std::fill(&row_mca[first_row[i]], &row_mca[first_row[i + 1]], 1);
  auto needs_exact_values = [&](RowRange b) {
    return mca == nullptr || !std::all_of(row_mca.begin() + b.begin, row_mca.begin() + b.end,
                                          [](char m) { return m != 0; });
  };
  std::vector<std::pair<int64_t, int64_t>> mca_tasks;  // (span, head)
  for (int64_t i : mca_spans) {
    for (int64_t h = 0; h < n_heads; ++h) mca_tasks.emplace_back(i, h);
  }
  std::vector<McaCounts> task_counts(mca_tasks.size());

  // ---- Input rows (+ position encoding), row-major [rows, d]. ----
  if (c.input_kind == InputKind::kTokens) {
    const float* embed = model_->embed_weight()->ptr();
    for (int64_t i = 0; i < n_spans; ++i) {
      for (size_t j = 0; j < spans[i].tokens.size(); ++j) {
        std::copy_n(embed + int64_t{spans[i].tokens[j]} * d, d, &x[(first_row[i] + j) * d]);
      }
    }
  } else {
    for (int64_t i = 0; i < n_spans; ++i) {
      std::copy(spans[i].features.begin(), spans[i].features.end(),
                &features[first_row[i] * c.n_features]);
    }
    ForEachBlock(blocks, scratch, [&](RowRange b, Scratch&) {
      input_.Run(&features[b.begin * c.n_features], b.size(), c.n_features, &x[b.begin * d], d);
    });
  }
  if (c.position == PositionKind::kSinusoidal) {
    for (int64_t i = 0; i < n_spans; ++i) {
      const int64_t len = first_row[i + 1] - first_row[i];
      if (len > 0) AddSinusoidalPositions(&x[first_row[i] * d], len, d, d, *spans[i].position);
    }
  }

  // ---- Blocks. ----
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const LayerWeights& w = model_->layer(l);
    const PackedLayer& pw = layers_[l];
    // Scores and values of every row, into head-major buffers.
    ForEachBlock(blocks, scratch, [&](RowRange b, Scratch& s) {
      const int64_t n = b.size();
      LayerNormRows(&x[b.begin * d], n, d, *w.norm1_weight, *w.norm1_bias, eps, s.normed.data());
      pw.scores.Run(s.normed.data(), n, d, s.scores.data(), n_heads);
      ScatterToHeads(s.scores.data(), n, n_heads, scores, b.begin);
      if (mca != nullptr) std::copy_n(s.normed.data(), n * d, &mca_normed[b.begin * d]);
      // Exact values, unless every row of the block gets MCA's sampled ones.
      if (needs_exact_values(b)) {
        pw.values.Run(s.normed.data(), n, d, s.wide.data(), d);
        ScatterToHeads(s.wide.data(), n, n_heads, values, b.begin);
      }
    });
    if (mca != nullptr) {
      // Each MCA token's importance (its weight in its own prefix, from the running (m, u) of
      // its head, seeded with the span's state), then its sampled value projection.
      const float* value_bias = w.value_bias->ptr();
      const int64_t n_tasks = static_cast<int64_t>(mca_tasks.size());
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads_) if (n_tasks > 1)
      for (int64_t t = 0; t < n_tasks; ++t) {
        const auto [i, h] = mca_tasks[t];
        const Span& span = spans[i];
        const float* rec = span.state + layout.offset(l, h);
        float m = rec[0], u = rec[1];
        McaCounts counts;
        for (int64_t row = first_row[i]; row < first_row[i + 1]; ++row) {
          const float sc = *scores.at(row, h);
          if (sc > m) {
            u = u * std::exp(m - sc) + 1.0f;  // exp(-inf) = 0 for the identity state
            m = sc;
          } else {
            u += std::exp(sc - m);
          }
          const float importance = std::exp(sc - m) / u;
          const int64_t position = *span.position + (row - first_row[i]);
          const int64_t r = mca::SampleCount(importance, position, span.mca.alpha, d);
          float* v = values.at(row, h);
          McaValueProjection(*mca, l, h, &mca_normed[row * d], r,
                             mca::TokenKey(span.mca.seed, l, h, position), v);
          for (int64_t c = 0; c < dh; ++c) v[c] += value_bias[h * dh + c];
          counts.value_flops += 2 * dh * std::min(r, d);
          counts.value_flops_exact += 2 * dh * d;
        }
        task_counts[t] += counts;
      }
    }
    // Attention: the prefix scan, reading and advancing this layer's slice of each state.
    for (int64_t i = 0; i < n_spans; ++i) {
      scan_spans[i] = ScanSpan{first_row[i], first_row[i + 1] - first_row[i],
                               spans[i].state + layout.offset(l, 0)};
    }
    ScanParams sp;
    sp.scores = scores.data.data();
    sp.score_layout = scores.layout();
    sp.values = values.data.data();
    sp.value_layout = values.layout();
    sp.outputs = attn.data.data();
    sp.output_layout = attn.layout();
    sp.n_heads = n_heads;
    sp.d_head = dh;
    sp.spans = scan_spans;
    sp.num_threads = num_threads_;
    sp.min_chunk = min_scan_chunk_;
    AarenPrefixAttention(sp);

    if (l + 1 < c.n_layers) {
      ForEachBlock(blocks, scratch, [&](RowRange b, Scratch& s) {
        GatherFromHeads(
            attn, b.size(), n_heads, [&](int64_t r) { return b.begin + r; }, s.attn.data());
        ResidualRows(w, pw, c, s.attn.data(), &x[b.begin * d], b.size(), s);
      });
    } else {
      // Last layer: only rows whose outputs are wanted go on (the states are already final).
      for (int64_t k = 0; k < n_out; ++k) std::copy_n(&x[out_rows[k] * d], d, &xs[k * d]);
      ForEachBlock(out_blocks, scratch, [&](RowRange b, Scratch& s) {
        const int64_t n = b.size();
        GatherFromHeads(
            attn, n, n_heads, [&](int64_t r) { return out_rows[b.begin + r]; }, s.attn.data());
        float* xb = &xs[b.begin * d];
        ResidualRows(w, pw, c, s.attn.data(), xb, n, s);
        LayerNormRows(xb, n, d, model_->norm_f_weight(), model_->norm_f_bias(), eps,
                      s.normed.data());
        head_.Run(s.normed.data(), n, d, &outputs[b.begin * c.output_dim], c.output_dim);
      });
    }
  }
  for (int64_t i = 0; i < n_spans; ++i) {
    const int64_t exact = 2 * d * d * c.n_layers * (first_row[i + 1] - first_row[i]);
    mca_counts[i] = McaCounts{spans[i].mca.enabled ? 0 : exact, exact};
  }
  for (size_t t = 0; t < mca_tasks.size(); ++t) {
    mca_counts[mca_tasks[t].first].value_flops += task_counts[t].value_flops;
  }
}

}  // namespace aaren
