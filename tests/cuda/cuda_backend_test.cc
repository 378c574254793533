// SPDX-License-Identifier: Apache-2.0
// The CUDA backend against the CPU backend (DESIGN.md section 5: relative error < 1e-4) and the
// float64 oracle, on random models of every config variant and on the demo models; the
// streaming-equals-scan invariant on the GPU; extreme scores; spans of 1 to 100k tokens mixed in
// one Forward; all-or-nothing errors; state memory copies; concurrent Forwards; Monte-Carlo
// Attention against the CPU backend (same draws), its FLOP counts, alpha = 0 as the exact
// product, and streaming with MCA; reruns bit-identical; host state pointers refused. Every test
// skips, saying why, on a machine without a GPU.
#include "kernels/cuda_backend.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <random>
#include <thread>

#include "core/cpu_backend.h"
#include "tests/cuda/cuda_test_support.h"
#include "tests/reference_oracle.h"

namespace aaren::testing {
namespace {

constexpr double kCudaVsCpuTolerance = 1e-4;
constexpr double kInvariantTolerance = 1e-5;

class CudaBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const std::string why = NoGpuReason(); !why.empty()) GTEST_SKIP() << why;
  }

  static std::unique_ptr<cuda::CudaBackend> MakeCuda(std::shared_ptr<const Model> model) {
    auto backend = cuda::CudaBackend::Create(std::move(model));
    EXPECT_TRUE(backend.ok()) << backend.status();
    return backend.ok() ? std::move(*backend) : nullptr;
  }
};

// Runs the same pieces on the CPU and the GPU; expects equal outputs and states to `tolerance`.
void ExpectSameAsCpu(const std::shared_ptr<const Model>& model, const std::vector<Piece>& pieces,
                     int n_states, double tolerance, const std::string& what) {
  CpuBackend cpu(model, {.num_threads = 2, .min_scan_chunk = 64});
  auto gpu_or = cuda::CudaBackend::Create(model);
  ASSERT_TRUE(gpu_or.ok()) << gpu_or.status();
  BackendStates on_cpu(cpu, n_states), on_gpu(**gpu_or, n_states);
  ASSERT_TRUE(on_cpu.Run(pieces).ok());
  const absl::Status st = on_gpu.Run(pieces);
  ASSERT_TRUE(st.ok()) << what << ": " << st;
  for (size_t i = 0; i < pieces.size(); ++i) {
    EXPECT_LT(MaxRelativeError(on_gpu.outputs()[i], on_cpu.outputs()[i]), tolerance)
        << what << ": outputs of piece " << i << " (" << pieces[i].end - pieces[i].begin
        << " tokens)";
  }
  for (int k = 0; k < n_states; ++k) {
    EXPECT_LT(MaxRelativeError(on_gpu.State(k), on_cpu.State(k)), tolerance)
        << what << ": state " << k;
    EXPECT_EQ(on_gpu.position(k), on_cpu.position(k));
  }
}

TEST_F(CudaBackendTest, MatchesCpuOnEveryConfigVariant) {
  struct Shape {
    int64_t heads, layers, d_model, d_ff;
  };
  // d_head 32, 8, 9 (odd), 64, 128, 1024 (four columns per thread), and widths that are not
  // powers of two above a warp: 80, 96, 160, 200.
  const Shape shapes[] = {{1, 1, 32, 64},   {4, 2, 32, 64},    {4, 2, 36, 48},   {2, 3, 128, 96},
                          {2, 1, 256, 256}, {1, 1, 1024, 128}, {8, 1, 640, 128}, {2, 1, 192, 64},
                          {1, 1, 160, 64},  {4, 1, 800, 64}};
  uint64_t seed = ::testing::UnitTest::GetInstance()->random_seed();
  for (InputKind input : {InputKind::kTokens, InputKind::kFeatures}) {
    for (PositionKind position : {PositionKind::kNone, PositionKind::kSinusoidal}) {
      for (const Shape& s : shapes) {
        const ModelConfig config =
            MakeConfig(input, position, s.heads, s.layers, s.d_model, s.d_ff);
        auto model = RandomModel(config, ++seed);
        const Sequence a = RandomSequence(config, 700, ++seed);
        const Sequence b = RandomSequence(config, 3, ++seed);
        // A long span (many tiles), a streaming step, a continuation of a state, output modes.
        const std::vector<Piece> pieces = {{&a, 0, 650, 0, OutputSelect::kAll},
                                           {&b, 0, 1, 1, OutputSelect::kAll},
                                           {&b, 1, 3, 2, OutputSelect::kLast},
                                           {&a, 650, 700, 3, OutputSelect::kNone}};
        ExpectSameAsCpu(model, pieces, 4, kCudaVsCpuTolerance,
                        absl::StrCat(config.n_heads, " heads x d_model ", config.d_model, " x ",
                                     config.n_layers, " layers, input ", int(input), ", position ",
                                     int(position)));
      }
    }
  }
}

TEST_F(CudaBackendTest, MatchesCpuOnTheDemoModels) {
  const char* root = std::getenv("AAREN_SOURCE_DIR");
  ASSERT_NE(root, nullptr) << "AAREN_SOURCE_DIR not set (CTest sets it)";
  for (const char* name : {"demo-lm", "demo-ts"}) {
    auto model = Model::Load(std::filesystem::path(root) / "models" / name);
    ASSERT_TRUE(model.ok()) << model.status();
    const uint64_t seed = ::testing::UnitTest::GetInstance()->random_seed();
    const Sequence a = RandomSequence((*model)->config(), 2000, seed);
    const Sequence b = RandomSequence((*model)->config(), 1, seed + 1);
    ExpectSameAsCpu(*model, {{&a, 0, 2000, 0}, {&b, 0, 1, 1}}, 2, kCudaVsCpuTolerance, name);
  }
}

TEST_F(CudaBackendTest, MatchesTheFloat64OracleWithExtremeScores) {
  for (float query_scale : {0.01f, 2.0f, 60.0f, 5e3f}) {
    const ModelConfig config = MakeConfig(InputKind::kTokens, PositionKind::kSinusoidal, 4, 2, 64);
    auto model = RandomModel(config, 91, {.query_scale = query_scale});
    auto gpu = MakeCuda(model);
    ASSERT_NE(gpu, nullptr);
    const Sequence seq = RandomSequence(config, 1500, 92);
    BackendStates states(*gpu, 1);
    ASSERT_TRUE(states.Run({{&seq, 0, 1500, 0}}).ok());
    const std::vector<double> want = ReferenceForward(*model, seq);
    EXPECT_LT(MaxRelativeError(states.outputs()[0], want), kCudaVsCpuTolerance)
        << "query scale " << query_scale;
    for (float v : states.State(0)) ASSERT_TRUE(std::isfinite(v)) << "query scale " << query_scale;
  }
}

TEST_F(CudaBackendTest, StreamingEqualsScanOnTheGpu) {
  const ModelConfig config = MakeConfig(InputKind::kFeatures, PositionKind::kSinusoidal, 4, 2, 64);
  const uint64_t seed = ::testing::UnitTest::GetInstance()->random_seed();
  auto model = RandomModel(config, seed);
  auto gpu = MakeCuda(model);
  ASSERT_NE(gpu, nullptr);
  const int64_t n = 3000;
  const Sequence seq = RandomSequence(config, n, seed + 1);
  BackendStates whole(*gpu, 1), stream(*gpu, 1), chunked(*gpu, 1);
  ASSERT_TRUE(whole.Run({{&seq, 0, n, 0}}).ok());
  std::vector<float> out_stream, out_chunked;
  for (int64_t t = 0; t < n; ++t) {  // the step kernel
    ASSERT_TRUE(stream.Run({{&seq, t, t + 1, 0}}).ok());
    out_stream.insert(out_stream.end(), stream.outputs()[0].begin(), stream.outputs()[0].end());
  }
  std::mt19937_64 rng(seed + 2);
  std::uniform_int_distribution<int64_t> size(1, 700);
  for (int64_t t = 0; t < n;) {  // the scan kernel seeded with carried states
    const int64_t end = std::min(n, t + size(rng));
    ASSERT_TRUE(chunked.Run({{&seq, t, end, 0}}).ok());
    out_chunked.insert(out_chunked.end(), chunked.outputs()[0].begin(), chunked.outputs()[0].end());
    t = end;
  }
  EXPECT_LT(MaxRelativeError(out_stream, whole.outputs()[0]), kInvariantTolerance);
  EXPECT_LT(MaxRelativeError(out_chunked, whole.outputs()[0]), kInvariantTolerance);
  EXPECT_LT(MaxRelativeError(stream.State(0), whole.State(0)), kInvariantTolerance);
  EXPECT_LT(MaxRelativeError(chunked.State(0), whole.State(0)), kInvariantTolerance);
  EXPECT_EQ(stream.position(0), n);
}

TEST_F(CudaBackendTest, LongSpansMixedWithShortOnesInOneForward) {
  const ModelConfig config =
      MakeConfig(InputKind::kTokens, PositionKind::kSinusoidal, 2, 1, 128, 64);
  const uint64_t seed = ::testing::UnitTest::GetInstance()->random_seed();
  auto model = RandomModel(config, seed);
  const std::vector<int64_t> lengths = {1, 100000, 2, 127, 128, 129, 1, 1000, 4097, 1, 65536};
  std::vector<Sequence> seqs;
  for (size_t i = 0; i < lengths.size(); ++i)
    seqs.push_back(RandomSequence(config, lengths[i], seed + i));
  std::vector<Piece> pieces;
  for (size_t i = 0; i < lengths.size(); ++i) {
    pieces.push_back({&seqs[i], 0, lengths[i], static_cast<int>(i),
                      i % 3 == 2 ? OutputSelect::kLast : OutputSelect::kAll});
  }
  ExpectSameAsCpu(model, pieces, static_cast<int>(lengths.size()), kCudaVsCpuTolerance, "mixed");
}

TEST_F(CudaBackendTest, OverflowIsRejectedAndEveryStateKept) {
  const ModelConfig config = MakeConfig(InputKind::kFeatures, PositionKind::kNone, 2, 2);
  auto model = RandomModel(config, 5);
  auto gpu = MakeCuda(model);
  ASSERT_NE(gpu, nullptr);
  const Sequence good = RandomSequence(config, 50, 6);
  BackendStates states(*gpu, 2);
  ASSERT_TRUE(states.Run({{&good, 0, 20, 0}, {&good, 0, 30, 1}}).ok());
  const std::vector<float> before0 = states.State(0), before1 = states.State(1);
  Sequence huge = good;
  // Row 2 at the largest floats: its projection overflows to Inf (finite inputs, so the batch
  // passes validation and fails only after the work).
  std::fill(huge.features.begin() + 2 * config.n_features,
            huge.features.begin() + 3 * config.n_features, 3e38f);
  const absl::Status st = states.Run({{&good, 20, 50, 0}, {&huge, 0, 10, 1}});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("spans[1]"), std::string::npos) << st;
  EXPECT_EQ(states.State(0), before0);  // bit for bit: the whole batch was undone
  EXPECT_EQ(states.State(1), before1);
  EXPECT_EQ(states.position(0), 20);
  EXPECT_EQ(states.position(1), 30);
  for (const auto& out : states.outputs()) {
    for (float v : out) ASSERT_EQ(v, 0.0f) << "an output was written by a failed batch";
  }
}

TEST_F(CudaBackendTest, BadInputIsRejectedBeforeAnyWork) {
  const ModelConfig config = MakeConfig(InputKind::kTokens, PositionKind::kNone, 2, 1);
  auto model = RandomModel(config, 7);
  auto gpu = MakeCuda(model);
  ASSERT_NE(gpu, nullptr);
  const Sequence good = RandomSequence(config, 10, 8);
  Sequence bad = good;
  bad.tokens[4] = static_cast<int32_t>(config.vocab_size);
  BackendStates states(*gpu, 2);
  const std::vector<float> before = states.State(0);
  const absl::Status st = states.Run({{&good, 0, 10, 0}, {&bad, 0, 10, 1}});
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("spans[1].tokens[4]"), std::string::npos) << st;
  EXPECT_EQ(states.State(0), before);
  EXPECT_EQ(states.position(0), 0);
}

// The scan's look-back combines a fixed set of tile records in a fixed order (kCheckpointTiles in
// kernels/attention_kernels.cu), so reruns of one Forward agree bit for bit: spans long enough for
// hundreds of tiles per head (many checkpoints), short ones beside them, with and without MCA.
TEST_F(CudaBackendTest, TheSameForwardIsBitIdenticalRunToRun) {
  const ModelConfig config = MakeConfig(InputKind::kTokens, PositionKind::kSinusoidal, 4, 2, 64);
  const uint64_t seed = ::testing::UnitTest::GetInstance()->random_seed();
  auto gpu = MakeCuda(RandomModel(config, seed));
  ASSERT_NE(gpu, nullptr);
  const std::vector<int64_t> lengths = {100000, 3, 40000, 1, 9000};
  std::vector<Sequence> seqs;
  for (size_t i = 0; i < lengths.size(); ++i)
    seqs.push_back(RandomSequence(config, lengths[i], seed + 1 + i));
  for (const bool mca : {false, true}) {
    std::vector<Piece> pieces;
    for (size_t i = 0; i < lengths.size(); ++i) {
      Piece p{&seqs[i], 0, lengths[i], static_cast<int>(i)};
      if (mca) p.mca = McaOptions{true, 0.5f, 7};
      pieces.push_back(p);
    }
    std::vector<std::vector<float>> first_outputs, first_states;
    std::vector<McaCounts> first_counts;
    for (int run = 0; run < 12; ++run) {
      BackendStates states(*gpu, static_cast<int>(lengths.size()));
      ASSERT_TRUE(states.Run(pieces).ok());
      std::vector<std::vector<float>> st;
      for (size_t i = 0; i < lengths.size(); ++i) st.push_back(states.State(static_cast<int>(i)));
      if (run == 0) {
        first_outputs = states.outputs();
        first_states = st;
        first_counts = states.counts();
        continue;
      }
      for (size_t i = 0; i < lengths.size(); ++i) {
        EXPECT_EQ(states.outputs()[i], first_outputs[i])
            << "mca " << mca << " run " << run << ": outputs of span " << i;
        EXPECT_EQ(st[i], first_states[i]) << "mca " << mca << " run " << run << ": state " << i;
        EXPECT_EQ(states.counts()[i].value_flops, first_counts[i].value_flops) << "span " << i;
      }
    }
  }
}

// A span whose state is host memory is refused before any kernel could fault on it (which would
// lose the CUDA context and every device-resident session with it); the backend works on.
TEST_F(CudaBackendTest, AHostStatePointerIsRefusedAndTheDeviceSurvives) {
  const ModelConfig config = MakeConfig(InputKind::kTokens, PositionKind::kNone, 2, 1);
  auto gpu = MakeCuda(RandomModel(config, 11));
  ASSERT_NE(gpu, nullptr);
  const Sequence seq = RandomSequence(config, 300, 12);
  BackendStates states(*gpu, 1);
  std::vector<float> host_state(static_cast<size_t>(config.state_floats()), 0.0f);
  std::vector<float> outputs(static_cast<size_t>(300 * config.output_dim));
  int64_t position = 0;
  for (int64_t length : {1, 300}) {  // the step kernel and the scan kernel
    Span good = seq.Slice(0, length, config.n_features);
    good.state = states.device_state(0);
    int64_t good_position = 0;
    good.position = &good_position;
    good.outputs = outputs.data();
    Span bad = seq.Slice(0, length, config.n_features);
    bad.state = host_state.data();
    bad.position = &position;
    bad.outputs = outputs.data();
    const std::vector<Span> spans = {good, bad};
    const absl::Status st = gpu->Forward(spans);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    EXPECT_NE(st.message().find("spans[1].state"), std::string::npos) << st;
    EXPECT_EQ(position, 0);
    EXPECT_EQ(good_position, 0) << "a refused batch advanced a span";
  }
  ASSERT_TRUE(states.Run({{&seq, 0, 300, 0}}).ok());
  EXPECT_EQ(states.position(0), 300);
}

TEST_F(CudaBackendTest, StateMemoryCopiesAreExact) {
  const ModelConfig config = MakeConfig(InputKind::kTokens, PositionKind::kNone, 4, 2);
  auto gpu = MakeCuda(RandomModel(config, 9));
  ASSERT_NE(gpu, nullptr);
  StateMemory& memory = gpu->state_memory();
  EXPECT_EQ(memory.runnable_location(), "device");
  const int64_t n = 4096;
  std::vector<float> data(n);
  std::mt19937 rng(10);
  for (float& v : data) v = std::normal_distribution<float>()(rng);
  auto device_a = memory.Allocate(n, StateMemory::Kind::kRunnable);
  auto device_b = memory.Allocate(n, StateMemory::Kind::kRunnable);
  auto staging = memory.Allocate(n, StateMemory::Kind::kStaging);
  ASSERT_TRUE(device_a.ok() && device_b.ok() && staging.ok());
  ASSERT_TRUE(memory.Upload(*device_a, data.data(), n).ok());
  ASSERT_TRUE(memory.Move(*staging, *device_a, n).ok());  // evict (asynchronous)
  ASSERT_TRUE(memory.Move(*device_b, *staging, n).ok());  // resume (ordered after it)
  std::vector<float> back(n);
  ASSERT_TRUE(memory.Download(back.data(), *device_b, n).ok());
  EXPECT_EQ(back, data);
  memory.Free(*device_a, StateMemory::Kind::kRunnable);
  memory.Free(*device_b, StateMemory::Kind::kRunnable);
  memory.Free(*staging, StateMemory::Kind::kStaging);
}

TEST_F(CudaBackendTest, ConcurrentForwardsGiveTheSequentialResults) {
  const ModelConfig config = MakeConfig(InputKind::kTokens, PositionKind::kSinusoidal, 4, 2, 64);
  auto model = RandomModel(config, 11);
  auto gpu = MakeCuda(model);
  ASSERT_NE(gpu, nullptr);
  constexpr int kThreads = 4;
  std::vector<Sequence> seqs;
  for (int i = 0; i < kThreads; ++i) seqs.push_back(RandomSequence(config, 400, 12 + i));
  BackendStates sequential(*gpu, kThreads), concurrent(*gpu, kThreads);
  std::vector<std::vector<float>> want;
  for (int i = 0; i < kThreads; ++i) {
    ASSERT_TRUE(sequential.Run({{&seqs[i], 0, 400, i}}).ok());
    want.push_back(sequential.outputs()[0]);
  }
  std::vector<std::vector<float>> got(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      // Each thread its own BackendStates view would allocate; run on disjoint states instead.
      std::vector<float> out(400 * config.output_dim);
      int64_t position = 0;
      Span s = seqs[i].Slice(0, 400, config.n_features);
      s.state = concurrent.device_state(i);
      s.position = &position;
      s.outputs = out.data();
      EXPECT_TRUE(gpu->Forward({s}).ok());
      got[i] = std::move(out);
    });
  }
  for (auto& t : threads) t.join();
  // Not bit for bit: which earlier tiles' records a scan tile combines depends on timing.
  for (int i = 0; i < kThreads; ++i) EXPECT_LT(MaxRelativeError(got[i], want[i]), 1e-6) << i;
}

// ---- Monte-Carlo Attention (core/mca.h, kernels/mca_kernels.h). ----

// The tests' MCA setting: on these models alpha 0.3 spends from one to d_model samples per token
// and head, so both the sampled and the exact paths run.
constexpr McaOptions kMca = {.enabled = true, .alpha = 0.3f, .seed = 7};

// Spent FLOPs may differ by this fraction (see ExpectMcaSameAsCpu).
constexpr double kMcaFlopsTolerance = 1e-3;

std::vector<Piece> WithMca(std::vector<Piece> pieces, const McaOptions& mca) {
  for (Piece& p : pieces) p.mca = mca;
  return pieces;
}

bool FlopsClose(int64_t a, int64_t b) {
  return std::abs(static_cast<double>(a - b)) <=
         kMcaFlopsTolerance * static_cast<double>(std::max(a, b));
}

// Runs `batches` one after another (one Forward each) on the CPU and the GPU, with each piece's
// MCA options. Per piece: the exact FLOPs agree, and the spent FLOPs agree to 0.1%. Where they
// agree exactly (every token drew as many samples on both, barring differences that cancel) the
// piece's outputs agree to kCudaVsCpuTolerance, and a state is compared when all its pieces
// agreed. A sample count may legitimately differ: r = ceil(((t + 1) alpha_t / alpha)^2), and a
// token whose squared ratio lies within float rounding of an integer can round to either side
// with the GPU's scores; such a piece is reported and its outputs are not compared. Returns how
// many compared pieces drew fewer samples than the exact product would (the sampled path ran).
int ExpectMcaSameAsCpu(const std::shared_ptr<const Model>& model,
                       const std::vector<std::vector<Piece>>& batches, int n_states,
                       const std::string& what) {
  CpuBackend cpu(model, {.num_threads = 2, .min_scan_chunk = 64});
  auto gpu_or = cuda::CudaBackend::Create(model);
  EXPECT_TRUE(gpu_or.ok()) << gpu_or.status();
  if (!gpu_or.ok()) return 0;
  const ModelConfig& c = model->config();
  BackendStates on_cpu(cpu, n_states), on_gpu(**gpu_or, n_states);
  std::vector<bool> state_comparable(n_states, true);
  int sampled_and_compared = 0;
  for (size_t b = 0; b < batches.size(); ++b) {
    const std::vector<Piece>& pieces = batches[b];
    const absl::Status cpu_st = on_cpu.Run(pieces);
    EXPECT_TRUE(cpu_st.ok()) << what << ": " << cpu_st;
    const absl::Status gpu_st = on_gpu.Run(pieces);
    EXPECT_TRUE(gpu_st.ok()) << what << ": " << gpu_st;
    if (!cpu_st.ok() || !gpu_st.ok()) return 0;
    for (size_t i = 0; i < pieces.size(); ++i) {
      const std::string where = absl::StrCat(what, ": batch ", b, ", piece ", i, " (",
                                             pieces[i].end - pieces[i].begin, " tokens)");
      const McaCounts& want = on_cpu.counts()[i];
      const McaCounts& got = on_gpu.counts()[i];
      const int64_t exact =
          2 * c.d_model * c.d_model * c.n_layers * (pieces[i].end - pieces[i].begin);
      EXPECT_EQ(want.value_flops_exact, exact) << where;
      EXPECT_EQ(got.value_flops_exact, exact) << where;
      if (!pieces[i].mca.enabled) {
        EXPECT_EQ(got.value_flops, exact) << where;
      }
      // After a differing count the state's (m, u, w) differ too: later pieces on it may draw
      // differently; nothing more to compare.
      if (!state_comparable[pieces[i].state]) continue;
      EXPECT_TRUE(FlopsClose(got.value_flops, want.value_flops))
          << where << ": value FLOPs " << got.value_flops << " on the GPU, " << want.value_flops
          << " on the CPU";
      if (got.value_flops != want.value_flops) {
        std::cout << where << ": a sample count differs (" << got.value_flops << " vs "
                  << want.value_flops << " FLOPs; a ceil at a float-rounding boundary); outputs "
                  << "not compared\n";
        state_comparable[pieces[i].state] = false;
        continue;
      }
      EXPECT_LT(MaxRelativeError(on_gpu.outputs()[i], on_cpu.outputs()[i]), kCudaVsCpuTolerance)
          << where << ": outputs";
      if (got.value_flops < got.value_flops_exact) ++sampled_and_compared;
    }
  }
  for (int k = 0; k < n_states; ++k) {
    EXPECT_EQ(on_gpu.position(k), on_cpu.position(k));
    if (!state_comparable[k]) continue;
    EXPECT_LT(MaxRelativeError(on_gpu.State(k), on_cpu.State(k)), kCudaVsCpuTolerance)
        << what << ": state " << k;
  }
  return sampled_and_compared;
}

TEST_F(CudaBackendTest, McaMatchesCpu) {
  struct Case {
    InputKind input;
    PositionKind position;
    int64_t heads, layers, d_model, d_ff;
  };
  // d_head 64, 9 (odd: partial warps, unaligned rows) and 80 (a 128-thread value block).
  const Case cases[] = {{InputKind::kTokens, PositionKind::kSinusoidal, 4, 2, 256, 128},
                        {InputKind::kFeatures, PositionKind::kNone, 4, 2, 36, 48},
                        {InputKind::kTokens, PositionKind::kNone, 2, 1, 160, 64}};
  uint64_t seed = ::testing::UnitTest::GetInstance()->random_seed();
  for (const Case& k : cases) {
    const ModelConfig config =
        MakeConfig(k.input, k.position, k.heads, k.layers, k.d_model, k.d_ff);
    auto model = RandomModel(config, ++seed);
    const Sequence a = RandomSequence(config, 400, ++seed);
    const Sequence b = RandomSequence(config, 3, ++seed);
    const Sequence e = RandomSequence(config, 60, ++seed);
    McaOptions other = kMca;
    other.alpha = 1.0f;
    other.seed = 8;
    // A long span (scan kernel), a streaming step (step kernel), a short span wanting its last
    // output, a span without MCA and one with other options in the same Forward; then MCA
    // spans continuing the states (their (m, u) seed the importances).
    std::vector<Piece> first = WithMca({{&a, 0, 300, 0, OutputSelect::kAll},
                                        {&b, 0, 1, 1, OutputSelect::kAll},
                                        {&b, 1, 3, 2, OutputSelect::kLast}},
                                       kMca);
    first.push_back({&a, 0, 200, 3, OutputSelect::kAll});
    first.push_back({&e, 0, 60, 4, OutputSelect::kAll, other});
    const std::vector<Piece> second = WithMca({{&a, 300, 400, 0, OutputSelect::kAll},
                                               {&b, 1, 2, 1, OutputSelect::kAll},
                                               {&a, 200, 201, 3, OutputSelect::kAll}},
                                              kMca);
    const std::string what = absl::StrCat(config.n_heads, " heads x d_model ", config.d_model,
                                          " x ", config.n_layers, " layers");
    EXPECT_GT(ExpectMcaSameAsCpu(model, {first, second}, 5, what), 0)
        << what << ": no piece that drew samples was compared";
  }
}

TEST_F(CudaBackendTest, McaMatchesCpuOnDemoLm) {
  const char* root = std::getenv("AAREN_SOURCE_DIR");
  ASSERT_NE(root, nullptr) << "AAREN_SOURCE_DIR not set (CTest sets it)";
  auto model = Model::Load(std::filesystem::path(root) / "models" / "demo-lm");
  ASSERT_TRUE(model.ok()) << model.status();
  const uint64_t seed = ::testing::UnitTest::GetInstance()->random_seed();
  const Sequence a = RandomSequence((*model)->config(), 500, seed);
  const Sequence b = RandomSequence((*model)->config(), 1, seed + 1);
  EXPECT_GT(ExpectMcaSameAsCpu(*model,
                               {WithMca({{&a, 0, 400, 0}, {&b, 0, 1, 1}}, kMca),
                                WithMca({{&a, 400, 500, 0}}, kMca)},
                               2, "demo-lm"),
            0);
}

TEST_F(CudaBackendTest, McaWithAlphaZeroIsTheExactProduct) {
  const ModelConfig config = MakeConfig(InputKind::kTokens, PositionKind::kSinusoidal, 4, 2, 64);
  const uint64_t seed = ::testing::UnitTest::GetInstance()->random_seed();
  auto model = RandomModel(config, seed);
  auto gpu = MakeCuda(model);
  ASSERT_NE(gpu, nullptr);
  const Sequence seq = RandomSequence(config, 300, seed + 1);
  McaOptions zero = kMca;
  zero.alpha = 0.0f;
  BackendStates exact(*gpu, 2), mca(*gpu, 2);
  const std::vector<Piece> pieces = {{&seq, 0, 250, 0}, {&seq, 0, 1, 1}};
  ASSERT_TRUE(exact.Run(pieces).ok());
  ASSERT_TRUE(mca.Run(WithMca(pieces, zero)).ok());
  for (size_t i = 0; i < pieces.size(); ++i) {
    EXPECT_LT(MaxRelativeError(mca.outputs()[i], exact.outputs()[i]), kInvariantTolerance) << i;
    const int64_t want =
        2 * config.d_model * config.d_model * config.n_layers * (pieces[i].end - pieces[i].begin);
    for (const BackendStates* run : {&exact, &mca}) {
      EXPECT_EQ(run->counts()[i].value_flops, want) << i;
      EXPECT_EQ(run->counts()[i].value_flops_exact, want) << i;
    }
  }
  for (int k = 0; k < 2; ++k) {
    EXPECT_LT(MaxRelativeError(mca.State(k), exact.State(k)), kInvariantTolerance) << k;
  }
}

TEST_F(CudaBackendTest, McaStreamingEqualsOneSpanOnTheGpu) {
  const ModelConfig config = MakeConfig(InputKind::kFeatures, PositionKind::kSinusoidal, 4, 2, 64);
  const uint64_t seed = ::testing::UnitTest::GetInstance()->random_seed();
  auto model = RandomModel(config, seed);
  auto gpu = MakeCuda(model);
  ASSERT_NE(gpu, nullptr);
  const int64_t n = 400;
  const Sequence seq = RandomSequence(config, n, seed + 1);
  BackendStates whole(*gpu, 1), stream(*gpu, 1), chunked(*gpu, 1);
  ASSERT_TRUE(whole.Run(WithMca({{&seq, 0, n, 0}}, kMca)).ok());
  const McaCounts want = whole.counts()[0];
  EXPECT_LT(want.value_flops, want.value_flops_exact) << "no token was sampled";
  std::vector<float> out_stream, out_chunked;
  McaCounts got_stream, got_chunked;
  for (int64_t t = 0; t < n; ++t) {  // the step kernel, (m, u) carried in the state
    ASSERT_TRUE(stream.Run(WithMca({{&seq, t, t + 1, 0}}, kMca)).ok());
    out_stream.insert(out_stream.end(), stream.outputs()[0].begin(), stream.outputs()[0].end());
    got_stream += stream.counts()[0];
  }
  std::mt19937_64 rng(seed + 2);
  std::uniform_int_distribution<int64_t> size(1, 150);
  for (int64_t t = 0; t < n;) {  // the scan kernel seeded with carried states
    const int64_t end = std::min(n, t + size(rng));
    ASSERT_TRUE(chunked.Run(WithMca({{&seq, t, end, 0}}, kMca)).ok());
    out_chunked.insert(out_chunked.end(), chunked.outputs()[0].begin(), chunked.outputs()[0].end());
    got_chunked += chunked.counts()[0];
    t = end;
  }
  struct Run {
    const char* name;
    const McaCounts& counts;
    const std::vector<float>& outputs;
    const BackendStates& states;
  };
  for (const Run& run : {Run{"token by token", got_stream, out_stream, stream},
                         Run{"chunked", got_chunked, out_chunked, chunked}}) {
    EXPECT_EQ(run.counts.value_flops_exact, want.value_flops_exact) << run.name;
    EXPECT_TRUE(FlopsClose(run.counts.value_flops, want.value_flops))
        << run.name << ": " << run.counts.value_flops << " vs " << want.value_flops;
    if (run.counts.value_flops != want.value_flops) {
      // See ExpectMcaSameAsCpu: a count at a rounding boundary; the outputs then differ.
      std::cout << run.name << ": a sample count differs from the one span's; outputs not "
                << "compared\n";
      continue;
    }
    EXPECT_LT(MaxRelativeError(run.outputs, whole.outputs()[0]), kInvariantTolerance) << run.name;
    EXPECT_LT(MaxRelativeError(run.states.State(0), whole.State(0)), kInvariantTolerance)
        << run.name;
    EXPECT_EQ(run.states.position(0), n) << run.name;
  }
}

TEST(CudaBackendWithoutGpuTest, CreateFailsCleanlyWhenNoGpu) {
  if (NoGpuReason().empty()) GTEST_SKIP() << "a GPU is present: nothing to check here";
  const ModelConfig config = MakeConfig(InputKind::kTokens, PositionKind::kNone, 2, 1);
  auto backend = cuda::CudaBackend::Create(RandomModel(config, 1));
  ASSERT_FALSE(backend.ok());
  EXPECT_EQ(backend.status().code(), absl::StatusCode::kUnavailable) << backend.status();
}

}  // namespace
}  // namespace aaren::testing
