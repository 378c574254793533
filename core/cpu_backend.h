// SPDX-License-Identifier: Apache-2.0
// CpuBackend: the Backend interface on the host CPU.
//
// Dense work (input projection, value projection, output projection, FFN, head) runs as OpenBLAS
// sgemm over all rows of a Forward at once (core/linear.h), so length-1 spans from many sessions
// share one matrix product; rows are processed in blocks on OpenMP threads, with LayerNorm and
// GELU fused per block (Eigen array code). Attention activations are kept head-major for the
// chunked parallel prefix scan of core/aaren_scan.h.
//
// The query is folded into the key projection at construction (core/score_weights.h): the key
// projection is never materialised.
#ifndef AAREN_CORE_CPU_BACKEND_H_
#define AAREN_CORE_CPU_BACKEND_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>
#include "absl/strings/string_view.h"

#include "core/backend.h"
#include "core/linear.h"
#include "core/mca.h"
#include "core/model.h"
#include "core/score_weights.h"

namespace aaren {

struct CpuBackendOptions {
  int num_threads = 0;            // 0: std::thread::hardware_concurrency()
  int64_t min_scan_chunk = 1024;  // see ScanParams::min_chunk
};

class CpuBackend final : public Backend {
 public:
  CpuBackend(std::shared_ptr<const Model> model, CpuBackendOptions options = {});
  ~CpuBackend() override;

  const Model& model() const override { return *model_; }
  absl::string_view name() const override { return "cpu"; }
  absl::Status Forward(absl::Span<const Span> spans) override;

  int num_threads() const { return num_threads_; }

 private:
  // The model over a validated batch: advances the states and fills `outputs` with the wanted
  // rows in span order. May throw std::bad_alloc, before any state is written or after (Forward
  // restores them); nothing inside its parallel regions allocates.
  void RunLayers(absl::Span<const Span> spans, const std::vector<int64_t>& first_row,
                 std::vector<float>& outputs, std::vector<McaCounts>& mca_counts);

  std::shared_ptr<const Model> model_;
  int num_threads_;
  int64_t min_scan_chunk_;
  // The dense layers with their weights packed once for the GEMM kernels (core/linear.h).
  struct PackedLayer {
    PackedLinear scores;  // the folded query-key product (FoldQueryKey): [n_heads, d_model]
    PackedLinear values;
    PackedLinear out;
    PackedLinear ffn_up;
    PackedLinear ffn_down;
  };
  std::vector<PackedLayer> layers_;
  PackedLinear input_;  // features models only
  PackedLinear head_;
  // Monte-Carlo Attention's tables, built on the first Forward that asks for MCA.
  const McaTables& Mca();
  std::once_flag mca_once_;
  std::unique_ptr<McaTables> mca_;
};

}  // namespace aaren

#endif  // AAREN_CORE_CPU_BACKEND_H_
