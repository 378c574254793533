// SPDX-License-Identifier: Apache-2.0
// Monte-Carlo Attention (Kim & Ko, AAAI 2022, arXiv 2201.12854) for Aaren: each token's value
// projection v_h = W_v[h] x (head h's d_head rows of W_v) is computed by approximate matrix
// multiplication with r samples, r set by the token's attention importance, so that tokens that
// little attention reads are cheap and salient ones precise.
//
//   Sampling: r column indices j drawn with replacement with p_j = ||W_v[h][:, j]||^2 /
//   ||W_v[h]||_F^2, v_h ~= (1/r) sum_k W_v[h][:, j_k] x_{j_k} / p_{j_k} (+ b_v exactly). Unbiased;
//   exact (the plain product) when r >= d_model.
//   Samples per token: core/mca_sampling.h SampleCount: r = ceil(((t + 1) alpha_t / alpha)^2),
//   with alpha_t = exp(s_t - m_t) / u_t the token's weight in its own prefix (t its position);
//   alpha is the user's knob (0: exact).
//   Error bound (README, "Monte-Carlo Attention"): for each head's attention output o_k,
//   E ||o_k^MCA - o_k||^2 <= alpha^2 ||W_v[h]||_F^2 sum_{t <= k} ||x_t||^2 / (t + 1)^2.
//
// FLOPs are counted as 2 per multiply-add: a token's value projection costs 2 d_head min(r, D)
// per head with MCA, 2 D^2 over all heads exactly.
#ifndef AAREN_CORE_MCA_H_
#define AAREN_CORE_MCA_H_

#include <cstdint>
#include <vector>

#include "core/model.h"

namespace aaren {

// A request's MCA setting (DESIGN.md section 6, McaOptions).
struct McaOptions {
  bool enabled = false;
  float alpha = 0.0f;  // >= 0; 0 spends D samples (exact); larger: fewer samples, more error
  uint64_t seed = 0;   // same seed, same inputs: same result
};

// Value-projection FLOPs of a Forward's span.
struct McaCounts {
  int64_t value_flops = 0;        // spent
  int64_t value_flops_exact = 0;  // what the exact projection costs
  McaCounts& operator+=(const McaCounts& o) {
    value_flops += o.value_flops;
    value_flops_exact += o.value_flops_exact;
    return *this;
  }
};

// Per (layer, head): the alias table of p_j over the d_model input columns, 1 / p_j, and the
// head's W_v slice transposed ([d_model, d_head], so a sampled column is contiguous). Built once
// per model; immutable; thread-safe to read.
class McaTables {
 public:
  explicit McaTables(const Model& model);

  int64_t d_model() const { return d_model_; }
  int64_t d_head() const { return d_head_; }
  // [d_model] arrays of (layer, head).
  const float* prob(int64_t layer, int64_t head) const { return &prob_[Offset(layer, head)]; }
  const int32_t* alias(int64_t layer, int64_t head) const { return &alias_[Offset(layer, head)]; }
  const float* inv_p(int64_t layer, int64_t head) const { return &inv_p_[Offset(layer, head)]; }
  // [d_model, d_head]: row j = column j of W_v[h].
  const float* columns(int64_t layer, int64_t head) const {
    return &columns_[Offset(layer, head) * d_head_];
  }
  // The whole arrays (layer-major, then head), for upload to a device.
  const std::vector<float>& all_prob() const { return prob_; }
  const std::vector<int32_t>& all_alias() const { return alias_; }
  const std::vector<float>& all_inv_p() const { return inv_p_; }
  const std::vector<float>& all_columns() const { return columns_; }

 private:
  int64_t Offset(int64_t layer, int64_t head) const { return (layer * n_heads_ + head) * d_model_; }
  int64_t n_heads_, d_model_, d_head_;
  std::vector<float> prob_, inv_p_, columns_;
  std::vector<int32_t> alias_;
};

// Head `head`'s value projection of input row x ([d_model]) in layer `layer` with r samples
// (r >= d_model: the exact product), drawn from stream `token_key` (mca::TokenKey); writes
// d_head floats to out, without the bias. The samples are summed in order k = 0 .. r-1.
void McaValueProjection(const McaTables& tables, int64_t layer, int64_t head, const float* x,
                        int64_t r, uint64_t token_key, float* out);

}  // namespace aaren

#endif  // AAREN_CORE_MCA_H_
