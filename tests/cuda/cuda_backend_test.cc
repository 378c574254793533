// SPDX-License-Identifier: Apache-2.0
// The CUDA backend against the CPU backend (DESIGN.md section 5: relative error < 1e-4) and the
// float64 oracle, on random models of every config variant and on the demo models; the
// streaming-equals-scan invariant on the GPU; extreme scores; spans of 1 to 100k tokens mixed in
// one Forward; all-or-nothing errors; state memory copies; concurrent Forwards. Every test skips,
// saying why, on a machine without a GPU.
#include "kernels/cuda_backend.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
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

TEST(CudaBackendWithoutGpuTest, CreateFailsCleanlyWhenNoGpu) {
  if (NoGpuReason().empty()) GTEST_SKIP() << "a GPU is present: nothing to check here";
  const ModelConfig config = MakeConfig(InputKind::kTokens, PositionKind::kNone, 2, 1);
  auto backend = cuda::CudaBackend::Create(RandomModel(config, 1));
  ASSERT_FALSE(backend.ok());
  EXPECT_EQ(backend.status().code(), absl::StatusCode::kUnavailable) << backend.status();
}

}  // namespace
}  // namespace aaren::testing
