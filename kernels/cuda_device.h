// SPDX-License-Identifier: Apache-2.0
// CUDA device discovery for `--device=auto`. Host-only header: no CUDA types leak out, so code
// that includes it compiles without nvcc.
#ifndef AAREN_KERNELS_CUDA_DEVICE_H_
#define AAREN_KERNELS_CUDA_DEVICE_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace aaren::cuda {

struct DeviceInfo {
  int ordinal = 0;
  std::string name;
  int compute_major = 0;
  int compute_minor = 0;
  size_t total_memory_bytes = 0;
};

// Lists visible CUDA devices. An empty list (not an error) when the driver reports no device or
// no driver is installed; other CUDA failures are UNAVAILABLE with the CUDA error string.
// Thread-safe.
absl::StatusOr<std::vector<DeviceInfo>> ListDevices();

// Runs a kernel on device `ordinal` and checks what it wrote: proves that the driver, the
// runtime and this build's device code (sm_80 / sm_90) work together. UNAVAILABLE with the CUDA
// error on failure. Not for concurrent use with other work on the same device.
absl::Status RunSelfTest(int ordinal);

}  // namespace aaren::cuda

#endif  // AAREN_KERNELS_CUDA_DEVICE_H_
