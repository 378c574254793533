// SPDX-License-Identifier: Apache-2.0
// cuBLAS, loaded at run time (dlopen) the first time a CUDA backend is made, instead of linked.
//
// Why: linking libcublas puts libcublasLt (~94 KB of static thread-local storage) in every
// process that has the CUDA backend compiled in, even when it serves on the CPU; a thread created
// with a small fixed stack (civetweb's HTTP workers for /metrics use 100 KB) then fails to start.
// Loading it on demand also keeps CPU-only startup fast.
#ifndef AAREN_KERNELS_CUBLAS_LIBRARY_H_
#define AAREN_KERNELS_CUBLAS_LIBRARY_H_

#include <cublas_v2.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace aaren::cuda {

// The cuBLAS entry points the backend uses.
struct CublasLibrary {
  decltype(&cublasCreate_v2) create = nullptr;
  decltype(&cublasDestroy_v2) destroy = nullptr;
  decltype(&cublasSetStream_v2) set_stream = nullptr;
  decltype(&cublasSetMathMode) set_math_mode = nullptr;
  decltype(&cublasSgemm_v2) sgemm = nullptr;
  decltype(&cublasGetStatusName) status_name = nullptr;
  decltype(&cublasGetStatusString) status_string = nullptr;
};

// Loads libcublas.so.<major of the headers built against> (by the usual library search, then
// from the toolkit directory CMake found) once per process. UNAVAILABLE naming the library and
// dlerror() when it cannot. Thread-safe.
absl::StatusOr<const CublasLibrary*> LoadCublas();

// OK, or `what` failed with the cuBLAS status named: RESOURCE_EXHAUSTED for allocation failures,
// INTERNAL otherwise.
absl::Status CublasStatus(const CublasLibrary& lib, cublasStatus_t st, absl::string_view what);

}  // namespace aaren::cuda

#endif  // AAREN_KERNELS_CUBLAS_LIBRARY_H_
