// SPDX-License-Identifier: Apache-2.0
// The CUDA backend's session state memory (StateMemory) and the device-memory check of span
// states (CudaBackend::Impl::CheckDeviceState).
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "kernels/cuda_backend_impl.h"
#include "kernels/cuda_check.h"

namespace aaren::cuda {
namespace {

class CudaStateMemory final : public StateMemory {
 public:
  explicit CudaStateMemory(CudaBackend::Impl* impl) : impl_(impl) {}

  absl::string_view runnable_location() const override { return "device"; }

  absl::StatusOr<float*> Allocate(int64_t floats, Kind kind) override {
    std::lock_guard<std::mutex> lock(impl_->mu);
    AAREN_CUDA_RETURN_IF_ERROR(cudaSetDevice(impl_->device), "cudaSetDevice");
    void* p = nullptr;
    const size_t bytes = static_cast<size_t>(floats) * sizeof(float);
    const cudaError_t err = kind == Kind::kRunnable
                                ? cudaMalloc(&p, bytes)
                                : cudaHostAlloc(&p, bytes, cudaHostAllocDefault);
    if (err != cudaSuccess) {
      cudaGetLastError();
      return CudaStatus(err, absl::StrCat(kind == Kind::kRunnable ? "device" : "page-locked host",
                                          " memory for session states (", bytes, " bytes)"));
    }
    if (kind == Kind::kRunnable) impl_->state_blocks[reinterpret_cast<uintptr_t>(p)] = bytes;
    return static_cast<float*>(p);
  }

  void Free(float* block, Kind kind) override {
    if (block == nullptr) return;
    std::lock_guard<std::mutex> lock(impl_->mu);
    cudaSetDevice(impl_->device);
    // A Move (asynchronous, on the backend's non-blocking stream) may still read or write the
    // block: wait for the stream before handing the memory back.
    cudaStreamSynchronize(impl_->stream);
    if (kind == Kind::kRunnable) {
      impl_->state_blocks.erase(reinterpret_cast<uintptr_t>(block));
      cudaFree(block);
    } else {
      cudaFreeHost(block);
    }
  }

  absl::Status Upload(float* dst, const float* src, int64_t floats) override {
    return CopyAndWait(dst, src, floats, "upload of session state");
  }
  absl::Status Download(float* dst, const float* src, int64_t floats) override {
    return CopyAndWait(dst, src, floats, "download of session state");
  }
  absl::Status Move(float* dst, const float* src, int64_t floats) override {
    std::lock_guard<std::mutex> lock(impl_->mu);
    AAREN_CUDA_RETURN_IF_ERROR(cudaSetDevice(impl_->device), "cudaSetDevice");
    AAREN_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, static_cast<size_t>(floats) * 4,
                                               cudaMemcpyDefault, impl_->stream),
                               "move of session state");
    return absl::OkStatus();
  }

 private:
  absl::Status CopyAndWait(float* dst, const float* src, int64_t floats, absl::string_view what) {
    std::lock_guard<std::mutex> lock(impl_->mu);
    AAREN_CUDA_RETURN_IF_ERROR(cudaSetDevice(impl_->device), "cudaSetDevice");
    AAREN_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, static_cast<size_t>(floats) * 4,
                                               cudaMemcpyDefault, impl_->stream),
                               what);
    AAREN_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(impl_->stream), what);
    return absl::OkStatus();
  }

  CudaBackend::Impl* impl_;
};

}  // namespace

std::unique_ptr<StateMemory> MakeCudaStateMemory(CudaBackend::Impl* impl) {
  return std::make_unique<CudaStateMemory>(impl);
}

absl::Status CudaBackend::Impl::CheckDeviceState(const float* state, int64_t floats,
                                                 size_t span) const {
  const uintptr_t begin = reinterpret_cast<uintptr_t>(state);
  const size_t bytes = static_cast<size_t>(floats) * sizeof(float);
  auto it = state_blocks.upper_bound(begin);
  if (it != state_blocks.begin()) {
    --it;
    if (begin - it->first <= it->second && bytes <= it->second - (begin - it->first)) {
      return absl::OkStatus();
    }
  }
  cudaPointerAttributes attr{};
  const cudaError_t err = cudaPointerGetAttributes(&attr, state);
  if (err != cudaSuccess) cudaGetLastError();
  if (err == cudaSuccess && (attr.type == cudaMemoryTypeManaged ||
                             (attr.type == cudaMemoryTypeDevice && attr.device == device))) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "spans[", span, "].state: not device memory of CUDA device ", device,
      " (states of the CUDA backend come from its state_memory() with Kind::kRunnable); nothing "
      "was run"));
}

}  // namespace aaren::cuda
