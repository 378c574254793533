// SPDX-License-Identifier: Apache-2.0
// cuda_bench: the CUDA backend's benchmarks, each against a baseline measured in the same run.
//
//   scan     attention scan kernel (one layer, d_head 64, H 16) vs a device-to-device copy of the
//            same bytes (values and scores read + outputs written), for N x H = 1M .. 64M.
//   step     attention step kernel at 1k / 10k / 100k sessions (states at random pool slots) vs
//            its bytes-moved bound: (state in + out, score, value, output) / copy bandwidth.
//   forward  whole-model Forward, GPU backend vs CPU backend (all host cores), on demo-lm and a
//            D = 1024, H = 16, L = 12 model: scoring (B sequences x T tokens, every output) and a
//            streaming step (S sessions x 1 token). PyTorch eager on the GPU is timed by
//            bench/pytorch_forward.py in the same script (bench/run_cuda_benchmarks.sh).
//
// Prints a table and, per measurement, one JSON line ({"bench": ...}) for the summary.
// Exits 77 (skip) without a GPU. Times are medians over repeats after a warm-up; kernels are
// timed with CUDA events, Forward calls with the host clock (they end with their final copy).
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "bench/bench_models.h"
#include "core/aaren_state.h"
#include "core/cpu_backend.h"
#include "kernels/attention_kernels.h"
#include "kernels/cuda_backend.h"
#include "kernels/cuda_device.h"

ABSL_FLAG(std::string, sections, "scan,step,forward", "Which benchmarks to run");
ABSL_FLAG(std::string, demo_lm, "", "demo-lm model directory (forward section)");
ABSL_FLAG(int64_t, score_sequences, 8, "forward: sequences per scoring Forward");
ABSL_FLAG(int64_t, score_tokens, 4096, "forward: tokens per scored sequence");
ABSL_FLAG(int64_t, step_sessions, 10000, "forward: sessions per streaming-step Forward");
ABSL_FLAG(int, cpu_repeats, 2, "forward: repeats of the CPU backend (it is slow)");

namespace aaren::bench {
namespace {

#define CHECK_CUDA(expr)                                                                          \
  do {                                                                                            \
    const cudaError_t _e = (expr);                                                                \
    if (_e != cudaSuccess) {                                                                      \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(_e)); \
      std::exit(1);                                                                               \
    }                                                                                             \
  } while (0)

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median seconds of `repeats` runs of `enqueue` on the default stream, after one warm-up.
double TimeKernel(const std::function<void()>& enqueue, int repeats = 20) {
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  enqueue();
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) {
    CHECK_CUDA(cudaEventRecord(start));
    enqueue();
    CHECK_CUDA(cudaEventRecord(stop));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms / 1e3);
  }
  CHECK_CUDA(cudaEventDestroy(start));
  CHECK_CUDA(cudaEventDestroy(stop));
  return Median(times);
}

double TimeHost(const std::function<void()>& fn, int repeats) {
  fn();
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return Median(times);
}

float* DeviceRandom(int64_t n, uint64_t seed) {
  std::vector<float> host = RandomFloats(n, seed);
  float* d = nullptr;
  CHECK_CUDA(cudaMalloc(&d, n * sizeof(float)));
  CHECK_CUDA(cudaMemcpy(d, host.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  return d;
}

template <typename T>
T* DeviceCopy(const std::vector<T>& host) {
  T* d = nullptr;
  CHECK_CUDA(cudaMalloc(&d, std::max<size_t>(1, host.size()) * sizeof(T)));
  CHECK_CUDA(cudaMemcpy(d, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

// Seconds of a device-to-device copy of `bytes` bytes (it reads and writes `bytes` each).
double CopySeconds(int64_t bytes) {
  void *a = nullptr, *b = nullptr;
  CHECK_CUDA(cudaMalloc(&a, bytes));
  CHECK_CUDA(cudaMalloc(&b, bytes));
  CHECK_CUDA(cudaMemset(a, 1, bytes));
  const double s =
      TimeKernel([&] { CHECK_CUDA(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice)); });
  CHECK_CUDA(cudaFree(a));
  CHECK_CUDA(cudaFree(b));
  return s;
}

constexpr int kHeads = 16, kHeadDim = 64, kModel = kHeads * kHeadDim, kWidth = kModel + kHeads;

cuda::AttentionIo MakeIo(float* sv, float* bias, float* out) {
  cuda::AttentionIo io;
  io.scores = sv + kModel;
  io.score_stride = kWidth;
  io.score_bias = bias + kModel;
  io.values = sv;
  io.value_stride = kWidth;
  io.value_bias = bias;
  io.outputs = out;
  io.output_stride = kModel;
  io.n_heads = kHeads;
  io.d_head = kHeadDim;
  return io;
}

void ScanSection() {
  std::printf("\n== scan kernel vs device-to-device copy of the same bytes (H=%d, d_head=%d) ==\n",
              kHeads, kHeadDim);
  std::printf("%12s %8s %10s %10s %10s %10s %8s\n", "N x H", "spans", "scan ms", "copy ms",
              "scan GB/s", "copy GB/s", "ratio");
  for (int64_t nh : {int64_t{1} << 20, int64_t{1} << 24, int64_t{1} << 26}) {
    const int64_t n = nh / kHeads;
    for (int64_t n_spans : {int64_t{1}, int64_t{1024}}) {
      float* sv = DeviceRandom(n * kWidth, 5);
      float* bias = DeviceRandom(kWidth, 6);
      float* out = nullptr;
      CHECK_CUDA(cudaMalloc(&out, n * kModel * sizeof(float)));
      const int64_t state_floats = kHeads * (2 + kHeadDim);
      std::vector<float> identity(n_spans * state_floats);
      StateLayout layout{1, kHeads, kHeadDim};
      for (int64_t i = 0; i < n_spans; ++i) ResetState(identity.data() + i * state_floats, layout);
      float* states = DeviceCopy(identity);
      const int tile_rows = cuda::AttentionScanTileRows(kHeadDim);
      std::vector<int64_t> first_row, length, first_tile;
      std::vector<float*> state_ptr;
      int64_t tiles = 0;
      for (int64_t i = 0; i < n_spans; ++i) {
        const int64_t len = n / n_spans;
        first_row.push_back(i * len);
        length.push_back(len);
        state_ptr.push_back(states + i * state_floats);
        first_tile.push_back(tiles);
        tiles += kHeads * ((len + tile_rows - 1) / tile_rows);
      }
      first_tile.push_back(tiles);
      void* scratch = nullptr;
      CHECK_CUDA(cudaMalloc(&scratch, cuda::AttentionScanScratchBytes(tiles, kHeadDim)));
      cuda::AttentionScanParams p;
      p.io = MakeIo(sv, bias, out);
      p.n_spans = static_cast<int>(n_spans);
      p.span_first_row = DeviceCopy(first_row);
      p.span_length = DeviceCopy(length);
      p.span_state = DeviceCopy(state_ptr);
      p.span_first_tile = DeviceCopy(first_tile);
      p.total_tiles = tiles;
      p.tile_rows = tile_rows;
      p.scratch = scratch;
      const double scan = TimeKernel([&] { CHECK_CUDA(cuda::LaunchAttentionScan(p, nullptr)); });
      // Bytes the scan must move: values + scores read, outputs written (states are noise).
      const int64_t bytes = n * (kModel + kHeads) * 4 + n * kModel * 4;
      const double copy = CopySeconds(bytes / 2);
      std::printf("%12lld %8lld %10.3f %10.3f %10.1f %10.1f %8.2f\n", (long long)nh,
                  (long long)n_spans, scan * 1e3, copy * 1e3, bytes / scan / 1e9,
                  bytes / copy / 1e9, copy / scan);
      std::printf(
          "{\"bench\":\"scan\",\"n_x_h\":%lld,\"spans\":%lld,\"scan_s\":%.6g,\"copy_s\":%.6g,"
          "\"bytes\":%lld,\"ratio\":%.4f}\n",
          (long long)nh, (long long)n_spans, scan, copy, (long long)bytes, copy / scan);
      for (const void* ptr :
           {(const void*)sv, (const void*)bias, (const void*)out, (const void*)states,
            (const void*)scratch, (const void*)p.span_first_row, (const void*)p.span_length,
            (const void*)p.span_state, (const void*)p.span_first_tile}) {
        CHECK_CUDA(cudaFree(const_cast<void*>(ptr)));
      }
    }
  }
}

void StepSection() {
  std::printf("\n== step kernel vs its bytes-moved bound (H=%d, d_head=%d, one layer) ==\n", kHeads,
              kHeadDim);
  std::printf("%10s %10s %10s %10s %8s\n", "sessions", "step us", "bound us", "GB/s", "ratio");
  const double copy_bw = 2.0 * (int64_t{1} << 30) / CopySeconds(int64_t{1} << 30);  // bytes/s
  for (int64_t sessions : {1000, 10000, 100000}) {
    const int64_t slot_floats = kHeads * (2 + kHeadDim);
    std::vector<float> identity(sessions * slot_floats);
    StateLayout layout{1, kHeads, kHeadDim};
    for (int64_t i = 0; i < sessions; ++i) ResetState(identity.data() + i * slot_floats, layout);
    float* pool = DeviceCopy(identity);
    std::vector<int64_t> slots(sessions);
    std::iota(slots.begin(), slots.end(), 0);
    std::shuffle(slots.begin(), slots.end(), std::mt19937_64(7));
    std::vector<float*> state_ptr;
    std::vector<int64_t> rows(sessions);
    std::iota(rows.begin(), rows.end(), 0);
    for (int64_t s : slots) state_ptr.push_back(pool + s * slot_floats);
    float* sv = DeviceRandom(sessions * kWidth, 8);
    float* bias = DeviceRandom(kWidth, 9);
    float* out = nullptr;
    CHECK_CUDA(cudaMalloc(&out, sessions * kModel * sizeof(float)));
    cuda::AttentionStepParams p;
    p.io = MakeIo(sv, bias, out);
    p.n_spans = static_cast<int>(sessions);
    p.span_row = DeviceCopy(rows);
    p.span_state = DeviceCopy(state_ptr);
    const double step = TimeKernel([&] { CHECK_CUDA(cuda::LaunchAttentionStep(p, nullptr)); }, 50);
    const int64_t bytes =
        sessions * kHeads * (2 * (2 + kHeadDim) * 4 + 4 + kHeadDim * 4 + kHeadDim * 4);
    const double bound = bytes / copy_bw;
    std::printf("%10lld %10.2f %10.2f %10.1f %8.2f\n", (long long)sessions, step * 1e6, bound * 1e6,
                bytes / step / 1e9, bound / step);
    std::printf(
        "{\"bench\":\"step\",\"sessions\":%lld,\"step_s\":%.6g,\"bound_s\":%.6g,"
        "\"bytes\":%lld,\"ratio\":%.4f}\n",
        (long long)sessions, step, bound, (long long)bytes, bound / step);
    for (void* ptr : {(void*)pool, (void*)sv, (void*)bias, (void*)out, (void*)p.span_row,
                      (void*)p.span_state}) {
      CHECK_CUDA(cudaFree(ptr));
    }
  }
}

// Times Forward over `n_seq` sequences of `len` tokens (fresh states each run) on `backend`.
double TimeForward(Backend& backend, int64_t n_seq, int64_t len, int repeats) {
  const ModelConfig& c = backend.model().config();
  StateMemory& memory = backend.state_memory();
  const int64_t sf = c.state_floats();
  float* states = memory.Allocate(n_seq * sf, StateMemory::Kind::kRunnable).value();
  std::vector<float> identity(n_seq * sf);
  for (int64_t i = 0; i < n_seq; ++i) ResetState(identity.data() + i * sf, StateLayout::For(c));
  std::vector<int32_t> tokens = RandomTokens(n_seq * len, c.vocab_size);
  std::vector<float> features = c.input_kind == InputKind::kFeatures
                                    ? RandomFloats(n_seq * len * c.n_features)
                                    : std::vector<float>();
  std::vector<float> outputs(n_seq * len * c.output_dim);
  std::vector<int64_t> positions(n_seq);
  std::vector<Span> spans(n_seq);
  const double s = TimeHost(
      [&] {
        if (!memory.Upload(states, identity.data(), n_seq * sf).ok()) std::exit(1);
        for (int64_t i = 0; i < n_seq; ++i) {
          Span& sp = spans[i];
          if (c.input_kind == InputKind::kTokens) {
            sp.tokens = absl::MakeConstSpan(tokens.data() + i * len, len);
          } else {
            sp.features =
                absl::MakeConstSpan(features.data() + i * len * c.n_features, len * c.n_features);
          }
          positions[i] = 0;
          sp.state = states + i * sf;
          sp.position = &positions[i];
          sp.outputs = outputs.data() + i * len * c.output_dim;
        }
        const absl::Status st = backend.Forward(spans);
        if (!st.ok()) {
          std::fprintf(stderr, "Forward: %s\n", std::string(st.message()).c_str());
          std::exit(1);
        }
      },
      repeats);
  memory.Free(states, StateMemory::Kind::kRunnable);
  return s;
}

void ForwardSection() {
  std::vector<std::pair<std::string, std::shared_ptr<const Model>>> models;
  if (const std::string dir = absl::GetFlag(FLAGS_demo_lm); !dir.empty()) {
    auto m = Model::Load(dir);
    if (!m.ok()) {
      std::fprintf(stderr, "%s\n", std::string(m.status().message()).c_str());
      std::exit(1);
    }
    models.emplace_back("demo-lm", *m);
  }
  ModelConfig big = BenchConfig(12);
  big.d_model = 1024;
  big.n_heads = 16;
  big.d_ff = 4096;
  big.vocab_size = 32000;
  big.output_dim = 1000;
  models.emplace_back("d1024-h16-l12", RandomBenchModel(big));
  const int threads = static_cast<int>(std::thread::hardware_concurrency());
  std::printf("\n== whole-model Forward: GPU backend vs CPU backend (%d threads) ==\n", threads);
  std::printf("%16s %24s %12s %12s %12s %8s\n", "model", "workload", "gpu ms", "cpu ms",
              "gpu tok/s", "cpu/gpu");
  for (const auto& [name, model] : models) {
    auto gpu = cuda::CudaBackend::Create(model);
    if (!gpu.ok()) {
      std::fprintf(stderr, "%s\n", std::string(gpu.status().message()).c_str());
      std::exit(1);
    }
    CpuBackend cpu(model, {.num_threads = threads});
    struct Workload {
      std::string label;
      int64_t n_seq, len;
    };
    const std::vector<Workload> workloads = {
        {absl::StrCat("score ", absl::GetFlag(FLAGS_score_sequences), "x",
                      absl::GetFlag(FLAGS_score_tokens)),
         absl::GetFlag(FLAGS_score_sequences), absl::GetFlag(FLAGS_score_tokens)},
        {absl::StrCat("step ", absl::GetFlag(FLAGS_step_sessions), " sessions"),
         absl::GetFlag(FLAGS_step_sessions), 1}};
    for (const Workload& w : workloads) {
      const double g = TimeForward(**gpu, w.n_seq, w.len, 10);
      const double c = TimeForward(cpu, w.n_seq, w.len, absl::GetFlag(FLAGS_cpu_repeats));
      const double tokens = static_cast<double>(w.n_seq * w.len);
      std::printf("%16s %24s %12.2f %12.2f %12.0f %8.1f\n", name.c_str(), w.label.c_str(), g * 1e3,
                  c * 1e3, tokens / g, c / g);
      std::printf(
          "{\"bench\":\"forward\",\"model\":\"%s\",\"workload\":\"%s\",\"gpu_s\":%.6g,"
          "\"cpu_s\":%.6g,\"tokens\":%.0f,\"cpu_threads\":%d}\n",
          name.c_str(), w.label.c_str(), g, c, tokens, threads);
    }
  }
}

}  // namespace
}  // namespace aaren::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  auto devices = aaren::cuda::ListDevices();
  if (!devices.ok() || devices->empty()) {
    std::printf("SKIPPED: no CUDA GPU on this machine\n");
    return 77;
  }
  std::printf("device: %s (sm_%d%d, %.1f GiB)\n", (*devices)[0].name.c_str(),
              (*devices)[0].compute_major, (*devices)[0].compute_minor,
              (*devices)[0].total_memory_bytes / double(1 << 30));
  for (absl::string_view s : absl::StrSplit(absl::GetFlag(FLAGS_sections), ',')) {
    if (s == "scan") aaren::bench::ScanSection();
    if (s == "step") aaren::bench::StepSection();
    if (s == "forward") aaren::bench::ForwardSection();
  }
  return 0;
}
