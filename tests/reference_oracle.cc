// SPDX-License-Identifier: Apache-2.0
#include "tests/reference_oracle.h"

#include <algorithm>
#include <cmath>

namespace aaren::testing {
namespace {

using Rows = std::vector<std::vector<double>>;  // [n][width]

// y = x W^T + b, W row-major [out, in] (nn.Linear). Each y[r][o] is b[o] + sum_i w[o][i] x[r][i]
// summed in i order; the loop runs over o innermost (W transposed once) so that it vectorizes:
// the durability tests run this over thousands of rows hundreds of times.
Rows Linear(const Rows& x, const Tensor& w, const Tensor& b) {
  const int64_t out = w.shape[0], in = w.shape[1];
  std::vector<double> wt(in * out);  // [in][out]
  for (int64_t o = 0; o < out; ++o) {
    for (int64_t i = 0; i < in; ++i) wt[i * out + o] = w.data[o * in + i];
  }
  Rows y(x.size(), std::vector<double>(out));
  for (size_t r = 0; r < x.size(); ++r) {
    double* yr = y[r].data();
    for (int64_t o = 0; o < out; ++o) yr[o] = b.data[o];
    for (int64_t i = 0; i < in; ++i) {
      const double xi = x[r][i];
      const double* wi = wt.data() + i * out;
      for (int64_t o = 0; o < out; ++o) yr[o] += wi[o] * xi;
    }
  }
  return y;
}

Rows LayerNorm(const Rows& x, const Tensor& g, const Tensor& b, double eps) {
  Rows y = x;
  for (auto& row : y) {
    double mean = 0, var = 0;
    for (double v : row) mean += v;
    mean /= row.size();
    for (double v : row) var += (v - mean) * (v - mean);
    var /= row.size();
    for (size_t i = 0; i < row.size(); ++i) {
      row[i] = (row[i] - mean) / std::sqrt(var + eps) * g.data[i] + b.data[i];
    }
  }
  return y;
}

}  // namespace

std::vector<double> ReferenceForward(const Model& model, const Sequence& seq,
                                     int64_t first_position) {
  const ModelConfig& c = model.config();
  const int64_t n = seq.length, d = c.d_model, H = c.n_heads, dh = c.d_head();
  Rows x(n, std::vector<double>(d));
  if (c.input_kind == InputKind::kTokens) {
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t i = 0; i < d; ++i) x[t][i] = model.embed_weight()->data[seq.tokens[t] * d + i];
    }
  } else {
    Rows f(n, std::vector<double>(c.n_features));
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t i = 0; i < c.n_features; ++i) f[t][i] = seq.features[t * c.n_features + i];
    }
    x = Linear(f, *model.input_weight(), *model.input_bias());
  }
  if (c.position == PositionKind::kSinusoidal) {
    for (int64_t t = 0; t < n; ++t) {
      const double pos = static_cast<double>(first_position + t);
      for (int64_t i = 0; i < d; ++i) {
        const double angle = pos / std::pow(10000.0, double(i - i % 2) / double(d));
        x[t][i] += (i % 2 == 0) ? std::sin(angle) : std::cos(angle);
      }
    }
  }
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const LayerWeights& w = model.layer(l);
    const Rows h = LayerNorm(x, *w.norm1_weight, *w.norm1_bias, c.norm_eps);
    const Rows k = Linear(h, *w.key_weight, *w.key_bias);
    const Rows v = Linear(h, *w.value_weight, *w.value_bias);
    Rows o(n, std::vector<double>(d, 0.0));
    std::vector<double> s(n), weight(n);
    for (int64_t head = 0; head < H; ++head) {
      for (int64_t t = 0; t < n; ++t) {
        double dot = 0;
        for (int64_t j = 0; j < dh; ++j)
          dot += double(w.query->data[head * dh + j]) * k[t][head * dh + j];
        s[t] = dot / std::sqrt(double(dh));
      }
      // Output k: softmax over the prefix 0..k, computed from scratch for every k.
      for (int64_t t = 0; t < n; ++t) {
        const double m = *std::max_element(s.begin(), s.begin() + t + 1);
        double denom = 0;
        for (int64_t i = 0; i <= t; ++i) denom += (weight[i] = std::exp(s[i] - m));
        std::vector<double> acc(dh, 0.0);
        for (int64_t i = 0; i <= t; ++i) {
          for (int64_t j = 0; j < dh; ++j) acc[j] += weight[i] * v[i][head * dh + j];
        }
        for (int64_t j = 0; j < dh; ++j) o[t][head * dh + j] = acc[j] / denom;
      }
    }
    const Rows proj = Linear(o, *w.out_weight, *w.out_bias);
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t i = 0; i < d; ++i) x[t][i] += proj[t][i];
    }
    Rows ff = Linear(LayerNorm(x, *w.norm2_weight, *w.norm2_bias, c.norm_eps), *w.ffn_up_weight,
                     *w.ffn_up_bias);
    for (auto& row : ff) {
      for (double& z : row) z = 0.5 * z * (1.0 + std::erf(z / std::sqrt(2.0)));
    }
    const Rows down = Linear(ff, *w.ffn_down_weight, *w.ffn_down_bias);
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t i = 0; i < d; ++i) x[t][i] += down[t][i];
    }
  }
  const Rows y = Linear(LayerNorm(x, model.norm_f_weight(), model.norm_f_bias(), c.norm_eps),
                        model.head_weight(), model.head_bias());
  std::vector<double> out;
  out.reserve(n * c.output_dim);
  for (const auto& row : y) out.insert(out.end(), row.begin(), row.end());
  return out;
}

}  // namespace aaren::testing
