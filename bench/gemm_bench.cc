// SPDX-License-Identifier: Apache-2.0
// The dense layers' GEMM, y[rows, n] = x[rows, k] W^T (W row-major [n, k], PyTorch nn.Linear), on
// one thread, by three libraries at the shapes the CPU backend runs (issue: OpenBLAS re-packs the
// weights on every call; libraries that keep packed weights might not):
//   OpenBLAS  cblas_sgemm as core/linear.cc calls it (what the server uses today);
//   oneDNN    a matmul primitive per row count, its weights reordered once into the primitive's
//             preferred (blocked) layout and kept, as a server would keep them;
//   libxsmm   aaren::PackedLinear (core/linear.h, what the CPU backend uses): a JIT kernel per
//             (rows, n, k), on W transposed once at load.
// Every library's result is checked against OpenBLAS' (max relative error < 1e-5) before timing.
// Counters: GFLOP/s (2 rows n k per call).
//
//   build/bench/gemm_bench --benchmark_min_time=0.2
#include <benchmark/benchmark.h>
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <oneapi/dnnl/dnnl.hpp>
#include <random>
#include <tuple>
#include <vector>

#include "core/linear.h"

namespace {

struct Shape {
  const char* name;
  int k;
  int n;
};
// demo-lm (D=128, d_ff=512, 4 heads: fused value + score width 132) and D=1024 (d_ff 4096).
constexpr Shape kShapes[] = {
    {"lm.attn_fused", 128, 132}, {"lm.out", 128, 128},       {"lm.ffn_up", 128, 512},
    {"lm.ffn_down", 512, 128},   {"d1024.attn", 1024, 1040}, {"d1024.ffn_up", 1024, 4096},
};
constexpr int kRows[] = {1, 4, 16, 64, 256};

std::vector<float> Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

void OpenBlas(const float* x, int rows, int k, const float* w, int n, float* y) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, n, k, 1.0f, x, k, w, k, 0.0f, y, n);
}

// oneDNN matmul with the weights in the layout the primitive prefers, reordered once.
class OneDnnLinear {
 public:
  OneDnnLinear(const float* w, int n, int k, int rows)
      : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {
    using tag = dnnl::memory::format_tag;
    using dt = dnnl::memory::data_type;
    const dnnl::memory::desc src({rows, k}, dt::f32, tag::ab);
    const dnnl::memory::desc wei_any({k, n}, dt::f32, tag::any);
    const dnnl::memory::desc dst({rows, n}, dt::f32, tag::ab);
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, wei_any, dst), engine_);
    // W row-major [n, k] is the [k, n] matrix W^T in format "ba".
    dnnl::memory plain({{k, n}, dt::f32, tag::ba}, engine_, const_cast<float*>(w));
    weights_ = dnnl::memory(pd.weights_desc(), engine_);
    dnnl::reorder(plain, weights_).execute(stream_, plain, weights_);
    stream_.wait();
    src_desc_ = src;
    dst_desc_ = dst;
    matmul_ = dnnl::matmul(pd);
  }
  void Run(const float* x, float* y) {
    dnnl::memory src(src_desc_, engine_, const_cast<float*>(x));
    dnnl::memory dst(dst_desc_, engine_, y);
    matmul_.execute(stream_,
                    {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights_}, {DNNL_ARG_DST, dst}});
    stream_.wait();
  }

 private:
  dnnl::engine engine_;
  dnnl::stream stream_;
  dnnl::memory weights_;
  dnnl::memory::desc src_desc_, dst_desc_;
  dnnl::matmul matmul_;
};

double MaxRelativeError(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::fabs(double(a[i]) - b[i]));
    scale = std::max(scale, std::fabs(double(b[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

enum class Lib { kOpenBlas, kOneDnn, kXsmm };

void BM_Linear(benchmark::State& state, Lib lib, Shape shape, int rows) {
  const int k = shape.k, n = shape.n;
  const std::vector<float> w = Random(size_t(n) * k, 1), x = Random(size_t(rows) * k, 2);
  std::vector<float> y(size_t(rows) * n), want(size_t(rows) * n);
  OpenBlas(x.data(), rows, k, w.data(), n, want.data());
  std::unique_ptr<OneDnnLinear> dnnl;
  std::unique_ptr<aaren::PackedLinear> xsmm;
  auto run = [&] {
    switch (lib) {
      case Lib::kOpenBlas:
        OpenBlas(x.data(), rows, k, w.data(), n, y.data());
        break;
      case Lib::kOneDnn:
        dnnl->Run(x.data(), y.data());
        break;
      case Lib::kXsmm:
        xsmm->Run(x.data(), rows, k, y.data(), n);
        break;
    }
  };
  if (lib == Lib::kOneDnn) dnnl = std::make_unique<OneDnnLinear>(w.data(), n, k, rows);
  if (lib == Lib::kXsmm) xsmm = std::make_unique<aaren::PackedLinear>(w.data(), n, k, nullptr);
  run();
  if (const double err = MaxRelativeError(y, want); err > 1e-5) {
    state.SkipWithError(("result differs from OpenBLAS: " + std::to_string(err)).c_str());
    return;
  }
  for (auto _ : state) {
    run();
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * rows * n * k * state.iterations() / 1e9,
                                                 benchmark::Counter::kIsRate);
}

const int kRegistered = [] {
  openblas_set_num_threads(1);
  omp_set_num_threads(1);
  for (const Shape& s : kShapes) {
    for (int rows : kRows) {
      for (auto [lib, name] :
           {std::pair{Lib::kOpenBlas, "openblas"}, std::pair{Lib::kOneDnn, "onednn"},
            std::pair{Lib::kXsmm, "libxsmm"}}) {
        benchmark::RegisterBenchmark(
            (std::string("BM_Linear/") + s.name + "/rows:" + std::to_string(rows) + "/" + name)
                .c_str(),
            BM_Linear, lib, s, rows);
      }
    }
  }
  return 0;
}();

}  // namespace

BENCHMARK_MAIN();
