// SPDX-License-Identifier: Apache-2.0
// Private to kernels/: the CUDA backend's resources (CudaBackend::Impl), shared by
// cuda_backend.cc (initialisation and Forward) and cuda_state_memory.cc (session state memory and
// the check that a span's state is device memory). Nothing outside kernels/ includes it.
#ifndef AAREN_KERNELS_CUDA_BACKEND_IMPL_H_
#define AAREN_KERNELS_CUDA_BACKEND_IMPL_H_

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "kernels/cublas_library.h"
#include "kernels/cuda_backend.h"

namespace aaren::cuda {

struct CudaBackend::Impl {
  struct Layer {
    const float* norm1_weight;
    const float* norm1_bias;
    const float* fused_weight;  // [fused_width, d_model]: W_v rows, then the folded score rows
    const float* fused_bias;    // [fused_width]
    const float* out_weight;
    const float* out_bias;
    const float* norm2_weight;
    const float* norm2_bias;
    const float* up_weight;
    const float* up_bias;
    const float* down_weight;
    const float* down_bias;
  };

  std::shared_ptr<const Model> model;
  int device = 0;
  std::string description;
  cudaStream_t stream = nullptr;
  const CublasLibrary* blas = nullptr;  // loaded at Init
  cublasHandle_t cublas = nullptr;
  std::mutex mu;  // serialises Forward and state-memory calls (one stream)
  std::vector<void*> weight_blocks;
  // Device blocks CudaStateMemory handed out (start address -> bytes), under `mu`: Forward checks
  // each span's state against them before any kernel can touch it.
  std::map<uintptr_t, size_t> state_blocks;
  const float* embed = nullptr;
  const float* input_weight = nullptr;
  const float* input_bias = nullptr;
  std::vector<Layer> layers;
  const float* norm_f_weight = nullptr;
  const float* norm_f_bias = nullptr;
  const float* head_weight = nullptr;
  const float* head_bias = nullptr;
  const double* frequencies = nullptr;
  // Width of the fused value + score projection: d_model values, n_heads scores, padded to a
  // multiple of 4 floats so that rows stay 16-byte aligned for vector loads.
  int fused_width = 0;
  void* pinned = nullptr;  // page-locked staging for a Forward's tables and results
  size_t pinned_bytes = 0;
  std::unique_ptr<StateMemory> memory;  // MakeCudaStateMemory(this)
  // McaTables (core/mca.h) on the device, uploaded by the first Forward with an MCA span (null
  // until then); the blocks are owned by weight_blocks.
  struct McaDeviceTables {
    const float* prob = nullptr;
    const int32_t* alias = nullptr;
    const float* inv_p = nullptr;
    const float* columns = nullptr;
  } mca;

  ~Impl();
  absl::Status Init();
  template <typename T>
  absl::StatusOr<const T*> UploadWeights(const T* host, size_t n, absl::string_view what);
  absl::Status ReservePinned(size_t bytes);
  absl::Status UploadMcaTables();
  // OK when [state, state + floats) is device memory this device's kernels may write: inside a
  // block of state_blocks (no driver call), else what cudaPointerGetAttributes says (device or
  // managed memory). A host pointer would fault in the kernels and lose the CUDA context, and
  // with it every device-resident session.
  absl::Status CheckDeviceState(const float* state, int64_t floats, size_t span) const;
  absl::Status Run(absl::Span<const Span> spans, const std::vector<int32_t>& live,
                   const std::vector<int64_t>& length, int64_t rows);
  // y = LayerNorm(x (+= add_bias, the previous projection's pending bias)) * gamma + beta over
  // `rows` rows of d_model.
  absl::Status LayerNorm(int64_t rows, float* x, const float* add_bias, const float* gamma,
                         const float* beta, float* y);
  absl::Status Residual(const Layer& w, float* x, const float* attn, int64_t n, float* normed,
                        float* hidden);
};

// The backend's StateMemory: device memory for states, page-locked host memory for the host tier;
// copies on the backend's stream under impl->mu, so they are ordered with every Forward.
std::unique_ptr<StateMemory> MakeCudaStateMemory(CudaBackend::Impl* impl);

}  // namespace aaren::cuda

#endif  // AAREN_KERNELS_CUDA_BACKEND_IMPL_H_
