// SPDX-License-Identifier: Apache-2.0
// In-process baselines for the server benchmarks (`aaren-cli bench`): scoring 64 sequences of
// 1k tokens on demo-lm (1) as one Backend::Forward call and (2) through the Engine's Score
// (scheduler, chunking, no gRPC). The gRPC figure over (1) is the server's overhead ratio.
// Tokens per second are reported as items_per_second.
#include <benchmark/benchmark.h>

#include <future>
#include <memory>
#include <vector>

#include "bench/bench_models.h"
#include "core/aaren_state.h"
#include "core/cpu_backend.h"
#include "engine/engine.h"

namespace aaren {
namespace {

constexpr int64_t kSequences = 64;
constexpr int64_t kLength = 1024;

std::shared_ptr<const Model> DemoLm() {
  static std::shared_ptr<const Model> model = [] {
    auto m = Model::Load(AAREN_DEMO_LM_DIR);
    if (!m.ok()) std::abort();
    return *m;
  }();
  return model;
}

std::vector<std::vector<int32_t>> Sequences(int64_t vocab) {
  std::vector<std::vector<int32_t>> seqs;
  for (int64_t i = 0; i < kSequences; ++i) {
    seqs.push_back(bench::RandomTokens(kLength, vocab, static_cast<uint64_t>(100 + i)));
  }
  return seqs;
}

void BM_BackendScore(benchmark::State& state) {
  auto model = DemoLm();
  CpuBackend backend(model);
  const ModelConfig& c = model->config();
  const StateLayout layout = StateLayout::For(c);
  auto seqs = Sequences(c.vocab_size);
  std::vector<float> states(static_cast<size_t>(kSequences * layout.total_floats()));
  std::vector<int64_t> positions(kSequences);
  std::vector<float> outputs(static_cast<size_t>(kSequences * kLength * c.output_dim));
  std::vector<Span> spans(kSequences);
  for (auto _ : state) {
    for (int64_t i = 0; i < kSequences; ++i) {
      float* st = states.data() + i * layout.total_floats();
      ResetState(st, layout);
      positions[static_cast<size_t>(i)] = 0;
      spans[static_cast<size_t>(i)] = Span{seqs[static_cast<size_t>(i)],
                                           {},
                                           st,
                                           &positions[static_cast<size_t>(i)],
                                           OutputSelect::kAll,
                                           outputs.data() + i * kLength * c.output_dim};
    }
    if (!backend.Forward(spans).ok()) state.SkipWithError("Forward failed");
  }
  state.SetItemsProcessed(state.iterations() * kSequences * kLength);
}
BENCHMARK(BM_BackendScore)->Unit(benchmark::kMillisecond)->UseRealTime();

// The streaming tick's arithmetic alone: S sessions of demo-lm each append one token in one
// Forward (what the scheduler runs per tick under `aaren-cli bench --mode stream --sessions S`),
// on one thread, without the engine or gRPC. Its CPU time per token is the floor a streamed token
// costs the server beyond its transport; run_server_benchmarks.sh turns it and the echo stream
// of the same run into the ceiling of stream / echo.
void BM_BackendStep(benchmark::State& state) {
  auto model = DemoLm();
  CpuBackend backend(model, {.num_threads = 1});
  const ModelConfig& c = model->config();
  const StateLayout layout = StateLayout::For(c);
  const int64_t sessions = state.range(0);
  std::vector<float> states(static_cast<size_t>(sessions * layout.total_floats()));
  std::vector<int64_t> positions(static_cast<size_t>(sessions));
  const std::vector<int32_t> tokens = bench::RandomTokens(sessions, c.vocab_size, 7);
  std::vector<float> outputs(static_cast<size_t>(sessions * c.output_dim));
  std::vector<Span> spans(static_cast<size_t>(sessions));
  for (int64_t i = 0; i < sessions; ++i) {
    const size_t k = static_cast<size_t>(i);
    ResetState(states.data() + i * layout.total_floats(), layout);
    positions[k] = 1000 + i;
    spans[k] = Span{absl::MakeConstSpan(&tokens[k], 1),
                    {},
                    states.data() + i * layout.total_floats(),
                    &positions[k],
                    OutputSelect::kAll,
                    outputs.data() + i * c.output_dim};
  }
  for (auto _ : state) {
    // The positions advance as a stream's do (the sinusoidal encoding is computed per position).
    if (!backend.Forward(spans).ok()) state.SkipWithError("Forward failed");
    benchmark::DoNotOptimize(outputs.data());
  }
  state.SetItemsProcessed(state.iterations() * sessions);
}
BENCHMARK(BM_BackendStep)
    ->Arg(1)
    ->Arg(16)
    ->Arg(64)
    ->Arg(256)
    ->ArgName("sessions")
    ->Unit(benchmark::kMicrosecond);

void BM_EngineScore(benchmark::State& state) {
  auto model = DemoLm();
  auto registry = ModelRegistry::FromModels(
      {model}, [](std::shared_ptr<const Model> m) -> absl::StatusOr<std::unique_ptr<Backend>> {
        return std::make_unique<CpuBackend>(std::move(m));
      });
  if (!registry.ok()) std::abort();
  Engine engine(registry->get(), EngineOptions{});
  auto seqs = Sequences(model->config().vocab_size);
  for (auto _ : state) {
    Engine::ScoreParams params;
    params.model = model->name();
    for (const auto& s : seqs) params.sequences.push_back(SequenceInput{s, {}});
    std::promise<bool> done;
    engine.Score(std::move(params),
                 [&](absl::StatusOr<std::vector<SequenceOutput>> r) { done.set_value(r.ok()); });
    if (!done.get_future().get()) state.SkipWithError("Score failed");
  }
  state.SetItemsProcessed(state.iterations() * kSequences * kLength);
}
BENCHMARK(BM_EngineScore)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace aaren

BENCHMARK_MAIN();
