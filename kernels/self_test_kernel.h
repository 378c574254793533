// SPDX-License-Identifier: Apache-2.0
// Launch declaration of the device self-test kernel (host-visible; no device code here).
#ifndef AAREN_KERNELS_SELF_TEST_KERNEL_H_
#define AAREN_KERNELS_SELF_TEST_KERNEL_H_

#include <cuda_runtime.h>

namespace aaren::cuda {

struct SelfTestParams {
  float* d_out;  // [n] device buffer, written
  int n;         // elements
  float scale;   // d_out[i] = scale * i + 1
};

// Enqueues the kernel on `stream`; returns the launch error (cudaGetLastError), if any.
cudaError_t LaunchSelfTest(const SelfTestParams& params, cudaStream_t stream);

}  // namespace aaren::cuda

#endif  // AAREN_KERNELS_SELF_TEST_KERNEL_H_
