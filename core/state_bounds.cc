// SPDX-License-Identifier: Apache-2.0
#include "core/state_bounds.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/mca.h"

namespace aaren {
namespace {

// Relative slack on every bound: the backends compute in float32 (scores through a folded GEMM,
// values through SGEMM or MCA sums), which rounds differently from these float64 bounds.
constexpr double kSlack = 1e-3;

float RoundUp(double x) { return static_cast<float>(x * (1.0 + kSlack) + 1e-30); }

}  // namespace

StateBounds ComputeStateBounds(const Model& model) {
  const ModelConfig& c = model.config();
  const int64_t D = c.d_model, H = c.n_heads, dh = c.d_head(), L = c.n_layers;
  StateBounds b;
  b.layout = StateLayout::For(c);
  b.score.assign(static_cast<size_t>(L * H), 0.0f);
  b.value.assign(static_cast<size_t>(L * D), 0.0f);
  const McaTables tables(model);
  std::vector<double> hmax(static_cast<size_t>(D));
  for (int64_t l = 0; l < L; ++l) {
    const LayerWeights& w = model.layer(l);
    const float* gamma = w.norm1_weight->ptr();
    const float* beta = w.norm1_bias->ptr();
    const double xhat = std::sqrt(static_cast<double>(std::max<int64_t>(D - 1, 1)));
    for (int64_t i = 0; i < D; ++i) hmax[i] = std::fabs(gamma[i]) * xhat + std::fabs(beta[i]);
    const float* wk = w.key_weight->ptr();
    const float* bk = w.key_bias->ptr();
    const float* q = w.query->ptr();
    for (int64_t h = 0; h < H; ++h) {
      // Folded: s = (q_h^T W_k[h]) h / sqrt(dh) + q_h . b_k[h] / sqrt(dh).
      double bound = 0.0, bias = 0.0;
      for (int64_t i = 0; i < D; ++i) {
        double a = 0.0;
        for (int64_t j = 0; j < dh; ++j) a += double{q[h * dh + j]} * wk[(h * dh + j) * D + i];
        bound += std::fabs(a) * hmax[i];
      }
      for (int64_t j = 0; j < dh; ++j) bias += double{q[h * dh + j]} * bk[h * dh + j];
      b.score[l * H + h] = RoundUp((bound + std::fabs(bias)) / std::sqrt(double(dh)));
    }
    const float* wv = w.value_weight->ptr();
    const float* bv = w.value_bias->ptr();
    for (int64_t h = 0; h < H; ++h) {
      // MCA: one sampled term W_v[h][d, j] h_j / p_j, over the columns that can be drawn.
      const float* inv_p = tables.inv_p(l, h);
      const float* cols = tables.columns(l, h);  // [D, dh]: row j = column j of W_v[h]
      double mca = 0.0;
      for (int64_t j = 0; j < D; ++j) {
        double col_max = 0.0;
        for (int64_t d = 0; d < dh; ++d)
          col_max = std::max(col_max, double{std::fabs(cols[j * dh + d])});
        if (col_max == 0.0 || !std::isfinite(inv_p[j])) continue;  // never contributes
        mca = std::max(mca, col_max * hmax[j] * inv_p[j]);
      }
      for (int64_t d = 0; d < dh; ++d) {
        const int64_t row = h * dh + d;
        double exact = 0.0;
        for (int64_t i = 0; i < D; ++i) exact += std::fabs(wv[row * D + i]) * hmax[i];
        b.value[l * D + row] = RoundUp(std::max(exact, mca) + std::fabs(bv[row]));
      }
    }
  }
  return b;
}

absl::Status CheckReachableState(const float* state, int64_t position, const StateBounds& bounds,
                                 absl::string_view field) {
  const StateLayout& lay = bounds.layout;
  const int64_t D = lay.n_heads * lay.d_head;
  for (int64_t l = 0; l < lay.n_layers; ++l) {
    for (int64_t h = 0; h < lay.n_heads; ++h) {
      const int64_t off = lay.offset(l, h);
      const float* rec = state + off;
      const float m = rec[0], u = rec[1];
      auto bad = [&](int64_t index, const std::string& why) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, "[", off + index, "] (layer ", l, ", head ", h, ", ",
                         index == 0   ? "m"
                         : index == 1 ? "u"
                                      : absl::StrCat("w[", index - 2, "]"),
                         " = ", rec[index], "): ", why));
      };
      if (position == 0) {
        // No token yet: only the identity (-inf, 0, 0).
        if (m != kNegInf) return bad(0, "a session at position 0 has the identity state (m -inf)");
        if (u != 0.0f) return bad(1, "a session at position 0 has the identity state (u 0)");
        for (int64_t j = 0; j < lay.d_head; ++j) {
          if (rec[2 + j] != 0.0f) {
            return bad(2 + j, "a session at position 0 has the identity state (w 0)");
          }
        }
        continue;
      }
      const float smax = bounds.score[l * lay.n_heads + h];
      if (!(std::fabs(m) <= smax)) {
        return bad(0, absl::StrCat("after a token m is a score, within +-", smax,
                                   " for this model's weights"));
      }
      const double n = static_cast<double>(position);
      if (!(u >= 1.0f - 1e-6f && u <= n * (1.0 + kSlack) + 1e-3)) {
        return bad(1, absl::StrCat("after ", position, " tokens u lies in [1, ", position, "]"));
      }
      for (int64_t j = 0; j < lay.d_head; ++j) {
        const float vmax = bounds.value[l * D + h * lay.d_head + j];
        if (!(std::fabs(rec[2 + j]) <= static_cast<double>(u) * vmax)) {
          return bad(2 + j, absl::StrCat("|w| is at most u x ", vmax,
                                         " (the largest value this model's weights produce)"));
        }
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace aaren
