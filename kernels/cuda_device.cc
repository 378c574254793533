// SPDX-License-Identifier: Apache-2.0
#include "kernels/cuda_device.h"

#include <cuda_runtime.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/self_test_kernel.h"

namespace aaren::cuda {
namespace {

absl::Status CudaError(cudaError_t err, absl::string_view what) {
  return absl::UnavailableError(
      absl::StrCat(what, " failed: ", cudaGetErrorName(err), ": ", cudaGetErrorString(err)));
}

}  // namespace

absl::StatusOr<std::vector<DeviceInfo>> ListDevices() {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) {
    cudaGetLastError();  // not sticky: clear it so later calls start clean
    return std::vector<DeviceInfo>{};
  }
  if (err != cudaSuccess) return CudaError(err, "cudaGetDeviceCount");
  std::vector<DeviceInfo> devices;
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    err = cudaGetDeviceProperties(&prop, i);
    if (err != cudaSuccess) return CudaError(err, absl::StrCat("cudaGetDeviceProperties(", i, ")"));
    devices.push_back(DeviceInfo{i, prop.name, prop.major, prop.minor, prop.totalGlobalMem});
  }
  return devices;
}

absl::Status RunSelfTest(int ordinal) {
  cudaError_t err = cudaSetDevice(ordinal);
  if (err != cudaSuccess) return CudaError(err, absl::StrCat("cudaSetDevice(", ordinal, ")"));
  constexpr int kN = 1 << 20;
  float* d_out = nullptr;
  if ((err = cudaMalloc(&d_out, kN * sizeof(float))) != cudaSuccess) {
    return CudaError(err, "cudaMalloc");
  }
  std::vector<float> host(kN);
  err = LaunchSelfTest({d_out, kN, 2.0f}, nullptr);
  if (err == cudaSuccess) {
    err = cudaMemcpy(host.data(), d_out, kN * sizeof(float), cudaMemcpyDeviceToHost);
  }
  cudaFree(d_out);
  if (err != cudaSuccess) return CudaError(err, "self-test kernel");
  for (int i = 0; i < kN; ++i) {
    if (host[i] != 2.0f * static_cast<float>(i) + 1.0f) {
      return absl::InternalError(absl::StrCat("self-test kernel wrote ", host[i], " at ", i));
    }
  }
  return absl::OkStatus();
}

}  // namespace aaren::cuda
