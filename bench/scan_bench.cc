// SPDX-License-Identifier: Apache-2.0
// The scan path at N = 65536 tokens, D = 256, H = 8 (d_head = 32).
//
// Scores, values and outputs are head-major ([heads, tokens, d_head]), as in the CPU backend.
// BM_ScanParallel/T      the attention stage (core/aaren_scan.h) on T threads.
// BM_ScanSequential      baseline: the plain sequential recurrence (every head, rows in
//                        order) on one thread, without the task machinery.
// BM_Memcpy/T            baseline: memcpy of the bytes the scan reads (scores + values), which
//                        writes as many bytes as the scan writes (outputs), split over T threads.
// BM_ModelForward/T      the whole model (L = 4, d_ff = 1024, vocab 256, sinusoidal positions)
//                        on one span of N tokens, all outputs, T threads. bench/pytorch_forward.py
//                        times the PyTorch reference module on the same shape in the same run.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cstring>

#include "bench/bench_models.h"
#include "core/aaren_scan.h"
#include "core/aaren_state.h"
#include "core/cpu_backend.h"

namespace aaren::bench {
namespace {

constexpr int64_t kTokens = 65536;
constexpr int64_t kDModel = 256;
constexpr int64_t kHeads = 8;
constexpr int64_t kDHead = kDModel / kHeads;
// Head-major activations, as the CPU backend lays them out for the scan.
constexpr HeadLayout kScoreLayout{1, kTokens};
constexpr HeadLayout kValueLayout{kDHead, kTokens* kDHead};

struct ScanData {
  std::vector<float> scores = RandomFloats(kTokens * kHeads, 1, 3.0f);
  std::vector<float> values = RandomFloats(kTokens * kDModel, 2);
  std::vector<float> outputs = std::vector<float>(kTokens * kDModel);
  std::vector<float> state = std::vector<float>(kHeads * (2 + kDHead));
  void Reset() { ResetState(state.data(), StateLayout{1, kHeads, kDHead}); }
  int64_t bytes_read() const { return (kTokens * (kHeads + kDModel)) * 4; }
  int64_t bytes_written() const { return kTokens * kDModel * 4; }
};

ScanData& Data() {
  static ScanData* data = new ScanData();
  return *data;
}

void SetBytes(benchmark::State& st, const ScanData& d) {
  st.SetBytesProcessed(st.iterations() * (d.bytes_read() + d.bytes_written()));
  st.SetItemsProcessed(st.iterations() * kTokens);  // tokens/s
}

void BM_ScanParallel(benchmark::State& st) {
  ScanData& d = Data();
  const ScanSpan span{0, kTokens, d.state.data()};
  ScanParams p;
  p.scores = d.scores.data();
  p.score_layout = kScoreLayout;
  p.values = d.values.data();
  p.value_layout = kValueLayout;
  p.outputs = d.outputs.data();
  p.output_layout = kValueLayout;
  p.n_heads = kHeads;
  p.d_head = kDHead;
  p.spans = absl::MakeConstSpan(&span, 1);
  p.num_threads = static_cast<int>(st.range(0));
  for (auto _ : st) {
    d.Reset();
    AarenPrefixAttention(p);
    benchmark::DoNotOptimize(d.outputs.data());
  }
  SetBytes(st, d);
}
BENCHMARK(BM_ScanParallel)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_ScanSequential(benchmark::State& st) {
  ScanData& d = Data();
  for (auto _ : st) {
    d.Reset();
    AarenScanHeads(d.scores.data(), kScoreLayout, d.values.data(), kValueLayout, kTokens, kHeads,
                   kDHead, d.state.data(), d.outputs.data(), kValueLayout);
    benchmark::DoNotOptimize(d.outputs.data());
  }
  SetBytes(st, d);
}
BENCHMARK(BM_ScanSequential)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_Memcpy(benchmark::State& st) {
  ScanData& d = Data();
  const int threads = static_cast<int>(st.range(0));
  const int64_t bytes = d.bytes_read();
  std::vector<char> src(bytes, 1), dst(bytes);
  for (auto _ : st) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int t = 0; t < threads; ++t) {
      const int64_t begin = bytes * t / threads, end = bytes * (t + 1) / threads;
      std::memcpy(dst.data() + begin, src.data() + begin, end - begin);
    }
    benchmark::DoNotOptimize(dst.data());
  }
  st.SetBytesProcessed(st.iterations() * 2 * bytes);
  st.SetItemsProcessed(st.iterations() * kTokens);
}
BENCHMARK(BM_Memcpy)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_ModelForward(benchmark::State& st) {
  static const auto model = RandomBenchModel(BenchConfig());
  const ModelConfig& c = model->config();
  CpuBackend backend(model, {.num_threads = static_cast<int>(st.range(0))});
  const std::vector<int32_t> tokens = RandomTokens(kTokens, c.vocab_size);
  std::vector<float> out(kTokens * c.output_dim);
  std::vector<float> state(c.state_floats());
  for (auto _ : st) {
    ResetState(state.data(), StateLayout::For(c));
    int64_t position = 0;
    Span s;
    s.tokens = tokens;
    s.state = state.data();
    s.position = &position;
    s.outputs = out.data();
    if (!backend.Forward({s}).ok()) st.SkipWithError("forward failed");
    benchmark::DoNotOptimize(out.data());
  }
  st.SetItemsProcessed(st.iterations() * kTokens);
}
BENCHMARK(BM_ModelForward)
    ->Arg(1)
    ->Arg(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Iterations(3);

// Machine probe, not Aaren code: every thread runs the same dependent floating-point chain, so
// with T truly parallel cores the time equals the 1-thread time; on a host that time-slices its
// vCPUs it grows with T. Read the 2-thread figures above in its light.
void BM_ParallelismProbe(benchmark::State& st) {
  const int threads = static_cast<int>(st.range(0));
  for (auto _ : st) {
    double sink = 0.0;
#pragma omp parallel num_threads(threads) reduction(+ : sink)
    {
      double x = 1.0;
      for (int64_t k = 0; k < 50'000'000; ++k) x = x * 1.0000001 + 1e-9;
      sink += x;
    }
    benchmark::DoNotOptimize(sink);
  }
}
BENCHMARK(BM_ParallelismProbe)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace aaren::bench

BENCHMARK_MAIN();
