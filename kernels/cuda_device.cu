// SPDX-License-Identifier: Apache-2.0
#include "kernels/cuda_device.h"

#include <cuda_runtime.h>

#include "absl/strings/str_cat.h"

namespace aaren::cuda {

absl::StatusOr<std::vector<DeviceInfo>> ListDevices() {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) {
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return std::vector<DeviceInfo>{};
  }
  if (err != cudaSuccess) {
    return absl::UnavailableError(
        absl::StrCat("cudaGetDeviceCount failed: ", cudaGetErrorString(err)));
  }
  std::vector<DeviceInfo> devices;
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    err = cudaGetDeviceProperties(&prop, i);
    if (err != cudaSuccess) {
      return absl::UnavailableError(absl::StrCat("cudaGetDeviceProperties(", i,
                                                 ") failed: ", cudaGetErrorString(err)));
    }
    devices.push_back(DeviceInfo{i, prop.name, prop.major, prop.minor, prop.totalGlobalMem});
  }
  return devices;
}

}  // namespace aaren::cuda
