// SPDX-License-Identifier: Apache-2.0
// Exits 0 when a CUDA GPU is visible, else prints why not and exits 77 (CTest's skip code for
// the GPU-only test entries; see tests/cuda/gpu_only.sh).
#include <cstdio>

#include "kernels/cuda_device.h"

int main() {
  auto devices = aaren::cuda::ListDevices();
  if (!devices.ok()) {
    std::printf("SKIPPED: CUDA device discovery failed: %s\n",
                std::string(devices.status().message()).c_str());
    return 77;
  }
  if (devices->empty()) {
    std::printf("SKIPPED: no CUDA GPU on this machine\n");
    return 77;
  }
  for (const auto& d : *devices) std::printf("GPU %d: %s\n", d.ordinal, d.name.c_str());
  return 0;
}
