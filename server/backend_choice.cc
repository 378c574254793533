// SPDX-License-Identifier: Apache-2.0
#include "server/backend_choice.h"

#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

#if AAREN_HAVE_CUDA
#include "kernels/cuda_backend.h"
#include "kernels/cuda_device.h"
#endif

namespace aaren {

absl::StatusOr<BackendChoice> ChooseBackend(absl::string_view device, int cuda_device) {
  if (device != "auto" && device != "cpu" && device != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat("--device: '", device, "' is not one of auto, cpu, cuda"));
  }
  if (device == "cpu") return BackendChoice{"cpu", "--device=cpu", 0, ""};
#if AAREN_HAVE_CUDA
  auto devices = cuda::ListDevices();
  std::string why_not;
  if (!devices.ok()) {
    why_not = std::string(devices.status().message());
  } else if (devices->empty()) {
    why_not = "no CUDA GPU is visible";
  } else if (cuda_device < 0 || cuda_device >= static_cast<int>(devices->size())) {
    why_not = absl::StrCat("--cuda_device ", cuda_device, " is not one of the ", devices->size(),
                           " visible GPU(s)");
  } else {
    const cuda::DeviceInfo& d = (*devices)[cuda_device];
    return BackendChoice{"cuda", device == "auto" ? "a GPU is present" : "--device=cuda",
                         cuda_device,
                         absl::StrCat(d.name, " (sm_", d.compute_major, d.compute_minor, ")")};
  }
#else
  const std::string why_not = "this build has no CUDA backend (built without nvcc)";
#endif
  if (device == "cuda") {
    return absl::FailedPreconditionError(
        absl::StrCat("--device=cuda: ", why_not, "; use --device=cpu or auto"));
  }
  return BackendChoice{"cpu", why_not, 0, ""};
}

BackendFactory MakeBackendFactory(const BackendChoice& choice, CpuBackendOptions cpu_options) {
#if AAREN_HAVE_CUDA
  if (choice.device == "cuda") {
    const int ordinal = choice.cuda_device;
    return
        [ordinal](std::shared_ptr<const Model> model) -> absl::StatusOr<std::unique_ptr<Backend>> {
          auto backend = cuda::CudaBackend::Create(std::move(model), {ordinal});
          if (!backend.ok()) return backend.status();
          return std::unique_ptr<Backend>(std::move(*backend));
        };
  }
#endif
  return [cpu_options](
             std::shared_ptr<const Model> model) -> absl::StatusOr<std::unique_ptr<Backend>> {
    return std::make_unique<CpuBackend>(std::move(model), cpu_options);
  };
}

}  // namespace aaren
