// SPDX-License-Identifier: Apache-2.0
// CUDA runtime results as absl::Status, for the host side of kernels/.
#ifndef AAREN_KERNELS_CUDA_CHECK_H_
#define AAREN_KERNELS_CUDA_CHECK_H_

#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace aaren::cuda {

// OK, or the error named with what failed: RESOURCE_EXHAUSTED for out-of-memory, UNAVAILABLE
// when no usable device or driver is present, INTERNAL otherwise.
inline absl::Status CudaStatus(cudaError_t err, absl::string_view what) {
  if (err == cudaSuccess) return absl::OkStatus();
  const std::string msg =
      absl::StrCat(what, ": ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ")");
  switch (err) {
    case cudaErrorMemoryAllocation:
      return absl::ResourceExhaustedError(msg);
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
    case cudaErrorDevicesUnavailable:
      return absl::UnavailableError(msg);
    default:
      return absl::InternalError(msg);
  }
}

}  // namespace aaren::cuda

#define AAREN_CUDA_RETURN_IF_ERROR(expr, what)                                       \
  do {                                                                               \
    const ::absl::Status _aaren_cuda_st = ::aaren::cuda::CudaStatus((expr), (what)); \
    if (!_aaren_cuda_st.ok()) return _aaren_cuda_st;                                 \
  } while (0)

#endif  // AAREN_KERNELS_CUDA_CHECK_H_
