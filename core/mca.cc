// SPDX-License-Identifier: Apache-2.0
#include "core/mca.h"

#include <algorithm>
#include <cstring>

#include <Eigen/Core>

#include "core/mca_sampling.h"

namespace aaren {

McaTables::McaTables(const Model& model)
    : n_heads_(model.config().n_heads),
      d_model_(model.config().d_model),
      d_head_(model.config().d_head()) {
  const ModelConfig& c = model.config();
  const size_t per_head = static_cast<size_t>(d_model_);
  prob_.resize(c.n_layers * n_heads_ * per_head);
  inv_p_.resize(prob_.size());
  alias_.resize(prob_.size());
  columns_.resize(prob_.size() * d_head_);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const float* w = model.layer(l).value_weight->ptr();  // [d_model out, d_model in]
    for (int64_t h = 0; h < n_heads_; ++h) {
      const int64_t off = Offset(l, h);
      // Squared column norms of the head's slice (float64), and the slice transposed.
      std::vector<double> weight(per_head, 0.0);
      double total = 0.0;
      for (int64_t j = 0; j < d_model_; ++j) {
        for (int64_t c2 = 0; c2 < d_head_; ++c2) {
          const float v = w[(h * d_head_ + c2) * d_model_ + j];
          weight[j] += double(v) * v;
          columns_[(off + j) * d_head_ + c2] = v;
        }
        total += weight[j];
      }
      // Walker's alias table over p_j = weight_j / total (uniform when the slice is all zero:
      // every estimate is then 0, which is exact).
      std::vector<double> scaled(per_head);
      std::vector<int32_t> small, large;
      for (int64_t j = 0; j < d_model_; ++j) {
        const double p = total > 0 ? weight[j] / total : 1.0 / d_model_;
        inv_p_[off + j] = p > 0 ? static_cast<float>(1.0 / p) : 0.0f;
        scaled[j] = p * d_model_;
        (scaled[j] < 1.0 ? small : large).push_back(static_cast<int32_t>(j));
      }
      while (!small.empty() && !large.empty()) {
        const int32_t s = small.back(), g = large.back();
        small.pop_back();
        prob_[off + s] = static_cast<float>(scaled[s]);
        alias_[off + s] = g;
        scaled[g] -= 1.0 - scaled[s];
        if (scaled[g] < 1.0) {
          large.pop_back();
          small.push_back(g);
        }
      }
      for (int32_t j : large) prob_[off + j] = 1.0f, alias_[off + j] = j;
      for (int32_t j : small) prob_[off + j] = 1.0f, alias_[off + j] = j;  // rounding leftovers
    }
  }
}

namespace {

// The sampled product for a head width known at compile time: the same sums, in the same order
// (k = 0 .. r-1, each out[c] += col[c] * scale), as the generic loop, so the results are the
// same bits; the d_head sums stay in registers instead of a load and a store per sample, and
// each block's draws (independent hashes) are made before its columns are summed.
template <int kDh>
void SampledColumns(const float* columns, const float* prob, const int32_t* alias,
                    const float* inv_p, const float* x, int32_t d, int64_t r, float inv_r,
                    uint64_t token_key, float* out) {
  // Eight-float vectors (GCC's vector extension, one AVX register each), fully unrolled so that
  // the compiler keeps the kDh / 8 sums in registers.
  typedef float Vec __attribute__((vector_size(32)));
  constexpr int kVecs = kDh / 8;
  constexpr int64_t kBlock = 16;
  Vec acc[kVecs];
#pragma GCC unroll 16
  for (int v = 0; v < kVecs; ++v) acc[v] = Vec{};
  int32_t picked[kBlock];
  float scale[kBlock];
  for (int64_t k0 = 0; k0 < r; k0 += kBlock) {
    const int64_t n = std::min(kBlock, r - k0);
    for (int64_t i = 0; i < n; ++i) {
      const int32_t j = mca::DrawColumn(mca::SampleBits(token_key, k0 + i), prob, alias, d);
      picked[i] = j;
      scale[i] = x[j] * inv_p[j] * inv_r;
    }
    for (int64_t i = 0; i < n; ++i) {
      const float* col = columns + static_cast<int64_t>(picked[i]) * kDh;
      const Vec sc = Vec{} + scale[i];
#pragma GCC unroll 16
      for (int v = 0; v < kVecs; ++v) {
        Vec c;
        std::memcpy(&c, col + 8 * v, sizeof(c));
        acc[v] += c * sc;
      }
    }
  }
#pragma GCC unroll 16
  for (int v = 0; v < kVecs; ++v) std::memcpy(out + 8 * v, &acc[v], sizeof(Vec));
}

}  // namespace

void McaValueProjection(const McaTables& tables, int64_t layer, int64_t head, const float* x,
                        int64_t r, uint64_t token_key, float* out) {
  const int64_t d = tables.d_model(), dh = tables.d_head();
  const float* columns = tables.columns(layer, head);
  std::fill(out, out + dh, 0.0f);
  if (r >= d) {  // the exact product: columns^T x, as one vectorised matrix-vector product
    using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    Eigen::Map<Eigen::VectorXf>(out, dh).noalias() =
        Eigen::Map<const RowMajor>(columns, d, dh).transpose() *
        Eigen::Map<const Eigen::VectorXf>(x, d);
    return;
  }
  const float* prob = tables.prob(layer, head);
  const int32_t* alias = tables.alias(layer, head);
  const float* inv_p = tables.inv_p(layer, head);
  const float inv_r = 1.0f / static_cast<float>(r);
  const auto d32 = static_cast<int32_t>(d);
  switch (dh) {  // the common head widths with the sums held in registers
    case 16:
      return SampledColumns<16>(columns, prob, alias, inv_p, x, d32, r, inv_r, token_key, out);
    case 32:
      return SampledColumns<32>(columns, prob, alias, inv_p, x, d32, r, inv_r, token_key, out);
    case 64:
      return SampledColumns<64>(columns, prob, alias, inv_p, x, d32, r, inv_r, token_key, out);
    case 128:
      return SampledColumns<128>(columns, prob, alias, inv_p, x, d32, r, inv_r, token_key, out);
    default:
      break;
  }
  for (int64_t k = 0; k < r; ++k) {
    const int32_t j = mca::DrawColumn(mca::SampleBits(token_key, k), prob, alias, d32);
    const float scale = x[j] * inv_p[j] * inv_r;
    const float* col = columns + static_cast<int64_t>(j) * dh;
    for (int64_t c = 0; c < dh; ++c) out[c] += col[c] * scale;
  }
}

}  // namespace aaren
