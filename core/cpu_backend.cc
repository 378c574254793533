// SPDX-License-Identifier: Apache-2.0
#include "core/cpu_backend.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <thread>

#include <Eigen/Core>
#include <unsupported/Eigen/SpecialFunctions>

#include "core/aaren_scan.h"
#include "core/aaren_state.h"
#include "core/position_encoding.h"
#include "core/status_macros.h"

namespace aaren {
namespace {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMatrixMap = Eigen::Map<const RowMatrix>;
using ConstRowVectorMap = Eigen::Map<const Eigen::RowVectorXf>;
using RowsBlock = Eigen::Block<RowMatrix, Eigen::Dynamic, Eigen::Dynamic, true>;

// Rows per block of the row-parallel stages: large enough for efficient matrix products, small
// enough that a block's FFN activations stay in cache.
constexpr int64_t kMaxBlockRows = 256;
constexpr int64_t kMinBlockRows = 16;

ConstMatrixMap Matrix(const Tensor& t) { return ConstMatrixMap(t.ptr(), t.shape[0], t.shape[1]); }
ConstRowVectorMap RowVector(const Tensor& t) {
  return ConstRowVectorMap(t.ptr(), t.num_elements());
}

// y = LayerNorm(x) * gamma + beta, row by row (two-pass mean / variance, as PyTorch).
template <typename In, typename Out>
void LayerNormRows(const In& x, const Tensor& gamma, const Tensor& beta, float eps, Out&& y) {
  const auto g = RowVector(gamma).array();
  const auto b = RowVector(beta).array();
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    const auto row = x.row(r).array();
    const float mean = row.mean();
    const float var = (row - mean).square().mean();
    const float inv_std = 1.0f / std::sqrt(var + eps);
    y.row(r).array() = (row - mean) * inv_std * g + b;
  }
}

// Per-thread scratch reused across blocks and calls (OpenMP threads persist).
struct Scratch {
  RowMatrix normed;  // [kMaxBlockRows, d_model]
  RowMatrix hidden;  // [kMaxBlockRows, d_ff]
  void Reserve(int64_t d_model, int64_t d_ff) {
    if (normed.rows() < kMaxBlockRows || normed.cols() != d_model) {
      normed.resize(kMaxBlockRows, d_model);
    }
    if (hidden.rows() < kMaxBlockRows || hidden.cols() != d_ff) hidden.resize(kMaxBlockRows, d_ff);
  }
};
thread_local Scratch tls_scratch;

// x += W_o attn + b_o; x += W_2 gelu(W_1 LN_2(x) + b_1) + b_2, for a block of rows.
void ResidualRows(const LayerWeights& w, float eps, const RowsBlock& attn, RowsBlock x,
                  Scratch& scratch) {
  const Eigen::Index n = x.rows();
  x.noalias() += attn * Matrix(*w.out_weight).transpose();
  x.rowwise() += RowVector(*w.out_bias);
  auto normed = scratch.normed.topRows(n);
  LayerNormRows(x, *w.norm2_weight, *w.norm2_bias, eps, normed);
  auto hidden = scratch.hidden.topRows(n);
  hidden.noalias() = normed * Matrix(*w.ffn_up_weight).transpose();
  hidden.rowwise() += RowVector(*w.ffn_up_bias);
  // Exact GELU: 0.5 z (1 + erf(z / sqrt 2)), with Eigen's vectorised erf.
  hidden.array() = 0.5f * hidden.array() * (1.0f + (hidden.array() * float(M_SQRT1_2)).erf());
  x.noalias() += hidden * Matrix(*w.ffn_down_weight).transpose();
  x.rowwise() += RowVector(*w.ffn_down_bias);
}

struct RowRange {
  int64_t begin;
  int64_t end;
};

std::vector<RowRange> SplitRows(int64_t rows, int threads) {
  const int64_t per_block =
      std::clamp<int64_t>((rows + 4 * threads - 1) / (4 * threads), kMinBlockRows, kMaxBlockRows);
  std::vector<RowRange> blocks;
  for (int64_t b = 0; b < rows; b += per_block)
    blocks.push_back({b, std::min(rows, b + per_block)});
  return blocks;
}

// Runs fn(block, scratch) over blocks on up to `threads` OpenMP threads.
template <typename Fn>
void ForEachBlock(const std::vector<RowRange>& blocks, int threads, int64_t d_model, int64_t d_ff,
                  Fn&& fn) {
  const int64_t n = static_cast<int64_t>(blocks.size());
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (n > 1 && threads > 1)
  for (int64_t i = 0; i < n; ++i) {
    tls_scratch.Reserve(d_model, d_ff);
    fn(blocks[i], tls_scratch);
  }
}

}  // namespace

struct CpuBackend::LayerScoreWeights {
  RowMatrix query_key;      // [n_heads, d_model]: row h = q_h^T W_k[h] / sqrt(d_head)
  Eigen::RowVectorXf bias;  // [n_heads]: q_h . b_k[h] / sqrt(d_head)
};

CpuBackend::CpuBackend(std::shared_ptr<const Model> model, CpuBackendOptions options)
    : model_(std::move(model)),
      num_threads_(options.num_threads > 0
                       ? options.num_threads
                       : std::max(1, static_cast<int>(std::thread::hardware_concurrency()))),
      min_scan_chunk_(options.min_scan_chunk) {
  const ModelConfig& c = model_->config();
  const int64_t dh = c.d_head();
  // Folded in float64, rounded once.
  const double scale = 1.0 / std::sqrt(static_cast<double>(dh));
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const LayerWeights& w = model_->layer(l);
    LayerScoreWeights sw{RowMatrix(c.n_heads, c.d_model), Eigen::RowVectorXf(c.n_heads)};
    const float* q = w.query->ptr();
    const float* wk = w.key_weight->ptr();
    const float* bk = w.key_bias->ptr();
    for (int64_t h = 0; h < c.n_heads; ++h) {
      for (int64_t i = 0; i < c.d_model; ++i) {
        double acc = 0.0;
        for (int64_t j = 0; j < dh; ++j)
          acc += double(q[h * dh + j]) * wk[(h * dh + j) * c.d_model + i];
        sw.query_key(h, i) = static_cast<float>(acc * scale);
      }
      double b = 0.0;
      for (int64_t j = 0; j < dh; ++j) b += double(q[h * dh + j]) * bk[h * dh + j];
      sw.bias(h) = static_cast<float>(b * scale);
    }
    score_weights_.push_back(std::move(sw));
  }
}

CpuBackend::~CpuBackend() = default;

absl::Status CpuBackend::Forward(absl::Span<const Span> spans) {
  const ModelConfig& c = model_->config();
  RETURN_IF_ERROR(ValidateSpans(c, spans));

  const int64_t d = c.d_model;
  const int64_t n_spans = static_cast<int64_t>(spans.size());
  const float eps = static_cast<float>(c.norm_eps);
  const StateLayout layout = StateLayout::For(c);

  // Row r of every activation matrix is one token; spans are laid out back to back.
  std::vector<int64_t> first_row(n_spans + 1, 0);
  for (int64_t i = 0; i < n_spans; ++i)
    first_row[i + 1] = first_row[i] + spans[i].length(c.n_features);
  const int64_t rows = first_row[n_spans];
  if (rows == 0) return absl::OkStatus();
  const std::vector<RowRange> blocks = SplitRows(rows, num_threads_);
  const int threads = num_threads_;

  // ---- Input rows (+ position encoding). ----
  RowMatrix x(rows, d);
  if (c.input_kind == InputKind::kTokens) {
    const float* embed = model_->embed_weight()->ptr();
    for (int64_t i = 0; i < n_spans; ++i) {
      for (size_t j = 0; j < spans[i].tokens.size(); ++j) {
        std::copy_n(embed + int64_t{spans[i].tokens[j]} * d, d, x.row(first_row[i] + j).data());
      }
    }
  } else {
    RowMatrix features(rows, c.n_features);
    for (int64_t i = 0; i < n_spans; ++i) {
      std::copy(spans[i].features.begin(), spans[i].features.end(),
                features.row(first_row[i]).data());
    }
    ForEachBlock(blocks, threads, d, c.d_ff, [&](RowRange b, Scratch&) {
      auto xb = x.middleRows(b.begin, b.end - b.begin);
      xb.noalias() = features.middleRows(b.begin, b.end - b.begin) *
                     Matrix(*model_->input_weight()).transpose();
      xb.rowwise() += RowVector(*model_->input_bias());
    });
  }
  if (c.position == PositionKind::kSinusoidal) {
    for (int64_t i = 0; i < n_spans; ++i) {
      const int64_t len = first_row[i + 1] - first_row[i];
      if (len > 0)
        AddSinusoidalPositions(x.row(first_row[i]).data(), len, d, d, *spans[i].position);
    }
  }

  // Rows whose outputs are wanted, and where they go.
  std::vector<int64_t> out_rows;
  std::vector<float*> out_ptrs;
  for (int64_t i = 0; i < n_spans; ++i) {
    const int64_t len = first_row[i + 1] - first_row[i];
    if (len == 0 || spans[i].output == OutputSelect::kNone) continue;
    const int64_t from = spans[i].output == OutputSelect::kAll ? 0 : len - 1;
    for (int64_t j = from; j < len; ++j) {
      out_rows.push_back(first_row[i] + j);
      out_ptrs.push_back(spans[i].outputs + (j - from) * c.output_dim);
    }
  }

  // ---- Blocks. ----
  RowMatrix scores(rows, c.n_heads), values(rows, d), attn(rows, d);
  std::vector<ScanSpan> scan_spans(n_spans);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const LayerWeights& w = model_->layer(l);
    const LayerScoreWeights& sw = score_weights_[l];
    // Scores and values of every row.
    ForEachBlock(blocks, threads, d, c.d_ff, [&](RowRange b, Scratch& scratch) {
      const int64_t n = b.end - b.begin;
      auto normed = scratch.normed.topRows(n);
      LayerNormRows(x.middleRows(b.begin, n), *w.norm1_weight, *w.norm1_bias, eps, normed);
      auto sb = scores.middleRows(b.begin, n);
      sb.noalias() = normed * sw.query_key.transpose();
      sb.rowwise() += sw.bias;
      auto vb = values.middleRows(b.begin, n);
      vb.noalias() = normed * Matrix(*w.value_weight).transpose();
      vb.rowwise() += RowVector(*w.value_bias);
    });
    // Attention: the prefix scan, reading and advancing this layer's slice of each state.
    for (int64_t i = 0; i < n_spans; ++i) {
      scan_spans[i] = ScanSpan{first_row[i], first_row[i + 1] - first_row[i],
                               spans[i].state + layout.offset(l, 0)};
    }
    ScanParams sp;
    sp.scores = scores.data();
    sp.score_stride = c.n_heads;
    sp.values = values.data();
    sp.value_stride = d;
    sp.outputs = attn.data();
    sp.output_stride = d;
    sp.n_heads = c.n_heads;
    sp.d_head = c.d_head();
    sp.spans = scan_spans;
    sp.num_threads = threads;
    sp.min_chunk = min_scan_chunk_;
    AarenPrefixAttention(sp);

    if (l + 1 < c.n_layers) {
      ForEachBlock(blocks, threads, d, c.d_ff, [&](RowRange b, Scratch& scratch) {
        const int64_t n = b.end - b.begin;
        ResidualRows(w, eps, attn.middleRows(b.begin, n), x.middleRows(b.begin, n), scratch);
      });
    } else {
      // Last layer: only rows whose outputs are wanted go on (the states are already final).
      const int64_t n_out = static_cast<int64_t>(out_rows.size());
      if (n_out == 0) break;
      RowMatrix xs(n_out, d), as(n_out, d), ys(n_out, c.output_dim);
      for (int64_t k = 0; k < n_out; ++k) {
        xs.row(k) = x.row(out_rows[k]);
        as.row(k) = attn.row(out_rows[k]);
      }
      ForEachBlock(SplitRows(n_out, threads), threads, d, c.d_ff,
                   [&](RowRange b, Scratch& scratch) {
                     const int64_t n = b.end - b.begin;
                     auto xb = xs.middleRows(b.begin, n);
                     ResidualRows(w, eps, as.middleRows(b.begin, n), xb, scratch);
                     auto normed = scratch.normed.topRows(n);
                     LayerNormRows(xb, model_->norm_f_weight(), model_->norm_f_bias(), eps, normed);
                     auto yb = ys.middleRows(b.begin, n);
                     yb.noalias() = normed * Matrix(model_->head_weight()).transpose();
                     yb.rowwise() += RowVector(model_->head_bias());
                   });
      for (int64_t k = 0; k < n_out; ++k) std::copy_n(ys.row(k).data(), c.output_dim, out_ptrs[k]);
    }
  }

  for (int64_t i = 0; i < n_spans; ++i) {
    if (first_row[i + 1] > first_row[i]) *spans[i].position += first_row[i + 1] - first_row[i];
  }
  return absl::OkStatus();
}

}  // namespace aaren
