// SPDX-License-Identifier: Apache-2.0
// Streaming step cost versus history length.
//
// BM_AarenStep/H: one session appends one token (a length-1 Forward) after a history of H tokens.
//   The step reads and writes only the fixed-size state, so its cost must not depend on H. The
//   state is a real one (1024 tokens prefilled through the backend) with the position counter
//   set to H: the work of a step depends on the history only through the position, and
//   prefilling 1M tokens of real history would take minutes without changing what is measured.
// BM_KvCacheStep/H: the same model shape as a Transformer decoding one token with a KV cache of H
//   tokens (per layer: q/k/v projections, attention over the H cached keys and values, output
//   projection, FFN). Written here as the comparison; its cost grows linearly in H.
// Both on one thread, benchmark shape D = 256, H = 8, L = 4, d_ff = 1024.
#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <unsupported/Eigen/SpecialFunctions>

#include "bench/bench_models.h"
#include "core/aaren_state.h"
#include "core/cpu_backend.h"

namespace aaren::bench {
namespace {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMatrixMap = Eigen::Map<const RowMatrix>;
using ConstVectorMap = Eigen::Map<const Eigen::VectorXf>;

const std::shared_ptr<const Model>& BenchModel() {
  static const auto* model = new std::shared_ptr<const Model>(RandomBenchModel(BenchConfig()));
  return *model;
}

void BM_AarenStep(benchmark::State& st) {
  const int64_t history = st.range(0);
  const auto& model = BenchModel();
  const ModelConfig& c = model->config();
  CpuBackend backend(model, {.num_threads = 1});
  std::vector<float> state(c.state_floats());
  ResetState(state.data(), StateLayout::For(c));
  int64_t position = 0;
  const std::vector<int32_t> prefix = RandomTokens(std::min<int64_t>(history, 1024), c.vocab_size);
  Span prefill;
  prefill.tokens = prefix;
  prefill.state = state.data();
  prefill.position = &position;
  prefill.output = OutputSelect::kNone;
  if (!backend.Forward({prefill}).ok()) st.SkipWithError("prefill failed");
  position = history;

  const std::vector<int32_t> tokens = RandomTokens(4096, c.vocab_size, 9);
  std::vector<float> out(c.output_dim);
  size_t i = 0;
  for (auto _ : st) {
    Span s;
    s.tokens = absl::MakeConstSpan(&tokens[i++ % tokens.size()], 1);
    s.state = state.data();
    s.position = &position;
    s.outputs = out.data();
    if (!backend.Forward({s}).ok()) st.SkipWithError("step failed");
    benchmark::DoNotOptimize(out.data());
  }
  st.counters["state_bytes"] = static_cast<double>(c.state_bytes());
  st.counters["history"] = static_cast<double>(history);
}
BENCHMARK(BM_AarenStep)
    ->Arg(1)
    ->Arg(1000)
    ->Arg(100000)
    ->Arg(1000000)
    ->Unit(benchmark::kMicrosecond);

// Continuous batching: S sessions each append one token in one Forward (length-1 spans). The
// weights are read once per Forward instead of once per session; items/s = tokens/s.
void BM_AarenStepBatch(benchmark::State& st) {
  const int64_t sessions = st.range(0);
  const auto& model = BenchModel();
  const ModelConfig& c = model->config();
  CpuBackend backend(model, {.num_threads = static_cast<int>(st.range(1))});
  std::vector<std::vector<float>> states(sessions, std::vector<float>(c.state_floats()));
  std::vector<int64_t> positions(sessions);
  for (int64_t i = 0; i < sessions; ++i) {
    ResetState(states[i].data(), StateLayout::For(c));
    positions[i] = 1000 + i;
  }
  const std::vector<int32_t> tokens = RandomTokens(sessions, c.vocab_size, 9);
  std::vector<float> out(sessions * c.output_dim);
  std::vector<Span> spans(sessions);
  for (int64_t i = 0; i < sessions; ++i) {
    spans[i].tokens = absl::MakeConstSpan(&tokens[i], 1);
    spans[i].state = states[i].data();
    spans[i].position = &positions[i];
    spans[i].outputs = &out[i * c.output_dim];
  }
  for (auto _ : st) {
    if (!backend.Forward(spans).ok()) st.SkipWithError("step failed");
    benchmark::DoNotOptimize(out.data());
  }
  st.SetItemsProcessed(st.iterations() * sessions);
}
BENCHMARK(BM_AarenStepBatch)
    ->ArgsProduct({{1, 16, 256}, {1, 2}})
    ->ArgNames({"sessions", "threads"})
    ->Unit(benchmark::kMicrosecond);

void LayerNormInPlace(Eigen::Ref<Eigen::RowVectorXf> x, const Tensor& g, const Tensor& b) {
  const float mean = x.mean();
  const float var = (x.array() - mean).square().mean();
  x = ((x.array() - mean) / std::sqrt(var + 1e-5f)).matrix();
  x.array() = x.array() * Eigen::Map<const Eigen::ArrayXf>(g.ptr(), g.num_elements()).transpose() +
              Eigen::Map<const Eigen::ArrayXf>(b.ptr(), b.num_elements()).transpose();
}

void BM_KvCacheStep(benchmark::State& st) {
  const int64_t history = st.range(0);
  const auto& model = BenchModel();
  const ModelConfig& c = model->config();
  const int64_t d = c.d_model, dh = c.d_head();
  // Per layer K and V caches with room for the benchmark's own appends.
  const int64_t capacity = history + 1 + st.max_iterations;
  std::vector<RowMatrix> keys, values;
  for (int64_t l = 0; l < c.n_layers; ++l) {
    keys.emplace_back(RowMatrix::Constant(capacity, d, 0.01f));
    values.emplace_back(RowMatrix::Constant(capacity, d, 0.01f));
  }
  auto W = [](const Tensor& t) { return ConstMatrixMap(t.ptr(), t.shape[0], t.shape[1]); };
  auto B = [](const Tensor& t) {
    return Eigen::Map<const Eigen::RowVectorXf>(t.ptr(), t.num_elements());
  };
  int64_t n = history;
  Eigen::RowVectorXf x(d), h(d), q(d), k(d), v(d), o(d), ff(c.d_ff), y(c.output_dim);
  Eigen::VectorXf scores;
  for (auto _ : st) {
    x = B(*model->embed_weight()).segment(0, d);  // any embedding row
    for (int64_t l = 0; l < c.n_layers; ++l) {
      const LayerWeights& w = model->layer(l);
      h = x;
      LayerNormInPlace(h, *w.norm1_weight, *w.norm1_bias);
      q.noalias() = h * W(*w.key_weight).transpose();  // a query projection of the same shape
      k.noalias() = h * W(*w.key_weight).transpose();
      k += B(*w.key_bias);
      v.noalias() = h * W(*w.value_weight).transpose();
      v += B(*w.value_bias);
      keys[l].row(n) = k;
      values[l].row(n) = v;
      for (int64_t head = 0; head < c.n_heads; ++head) {
        const auto kh = keys[l].block(0, head * dh, n + 1, dh);
        const auto vh = values[l].block(0, head * dh, n + 1, dh);
        scores.noalias() = kh * q.segment(head * dh, dh).transpose();
        scores *= 1.0f / std::sqrt(float(dh));
        scores = (scores.array() - scores.maxCoeff()).exp().matrix();
        scores /= scores.sum();
        o.segment(head * dh, dh).noalias() = scores.transpose() * vh;
      }
      x.noalias() += o * W(*w.out_weight).transpose();
      x += B(*w.out_bias);
      h = x;
      LayerNormInPlace(h, *w.norm2_weight, *w.norm2_bias);
      ff.noalias() = h * W(*w.ffn_up_weight).transpose();
      ff += B(*w.ffn_up_bias);
      ff = (0.5f * ff.array() * (1.0f + (ff.array() * float(M_SQRT1_2)).erf())).matrix();
      x.noalias() += ff * W(*w.ffn_down_weight).transpose();
      x += B(*w.ffn_down_bias);
    }
    h = x;
    LayerNormInPlace(h, model->norm_f_weight(), model->norm_f_bias());
    y.noalias() = h * W(model->head_weight()).transpose();
    benchmark::DoNotOptimize(y.data());
    if (n + 2 < capacity) ++n;
  }
  st.counters["kv_cache_bytes"] = 2.0 * c.n_layers * d * 4 * static_cast<double>(history);
  st.counters["history"] = static_cast<double>(history);
}
BENCHMARK(BM_KvCacheStep)
    ->Arg(1)
    ->Arg(1000)
    ->Arg(100000)
    ->Arg(1000000)
    ->Unit(benchmark::kMicrosecond)
    ->Iterations(50);

}  // namespace
}  // namespace aaren::bench

BENCHMARK_MAIN();
