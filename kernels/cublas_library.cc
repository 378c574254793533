// SPDX-License-Identifier: Apache-2.0
#include "kernels/cublas_library.h"

#include <dlfcn.h>

#include <string>
#include <type_traits>

#include "absl/strings/str_cat.h"

namespace aaren::cuda {
namespace {

absl::StatusOr<CublasLibrary> Open() {
  const std::string soname = absl::StrCat("libcublas.so.", CUBLAS_VER_MAJOR);
  std::string errors;
  void* handle = nullptr;
  for (const std::string& name : {soname, absl::StrCat(AAREN_CUDA_LIBRARY_DIR, "/", soname)}) {
    handle = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle != nullptr) break;
    absl::StrAppend(&errors, errors.empty() ? "" : "; ", dlerror());
  }
  if (handle == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot load cuBLAS (", soname, "): ", errors));
  }
  CublasLibrary lib;
  std::string missing;
  auto get = [&](auto& fn, const char* symbol) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(handle, symbol));
    if (fn == nullptr) absl::StrAppend(&missing, missing.empty() ? "" : ", ", symbol);
  };
  get(lib.create, "cublasCreate_v2");
  get(lib.destroy, "cublasDestroy_v2");
  get(lib.set_stream, "cublasSetStream_v2");
  get(lib.set_math_mode, "cublasSetMathMode");
  get(lib.sgemm, "cublasSgemm_v2");
  get(lib.status_name, "cublasGetStatusName");
  get(lib.status_string, "cublasGetStatusString");
  if (!missing.empty()) {
    return absl::UnavailableError(absl::StrCat(soname, " lacks ", missing));
  }
  return lib;  // the handle stays open for the life of the process
}

}  // namespace

absl::StatusOr<const CublasLibrary*> LoadCublas() {
  static const absl::StatusOr<CublasLibrary>* const lib = new absl::StatusOr<CublasLibrary>(Open());
  if (!lib->ok()) return lib->status();
  return &**lib;
}

absl::Status CublasStatus(const CublasLibrary& lib, cublasStatus_t st, absl::string_view what) {
  if (st == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  const std::string msg =
      absl::StrCat(what, ": ", lib.status_name(st), " (", lib.status_string(st), ")");
  if (st == CUBLAS_STATUS_ALLOC_FAILED) return absl::ResourceExhaustedError(msg);
  return absl::InternalError(msg);
}

}  // namespace aaren::cuda
