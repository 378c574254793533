// SPDX-License-Identifier: Apache-2.0
// Which backend the server runs its models on (--device), and the factory that makes it.
//   auto: CUDA when this build has the CUDA backend and a GPU is visible, otherwise CPU;
//   cpu:  always the CPU backend;
//   cuda: the CUDA backend on --cuda_device, or a startup error saying why it cannot be had.
#ifndef AAREN_SERVER_BACKEND_CHOICE_H_
#define AAREN_SERVER_BACKEND_CHOICE_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/cpu_backend.h"
#include "engine/served_model.h"

namespace aaren {

struct BackendChoice {
  std::string device;  // "cpu" or "cuda" (also aaren_build_info's backend label)
  std::string reason;  // why, for the startup log
  int cuda_device = 0;
  std::string description;  // the GPU's name when CUDA
};

// Resolves the --device flag. INVALID_ARGUMENT for an unknown value; FAILED_PRECONDITION for
// "cuda" when the build has no CUDA backend or no GPU `cuda_device` is visible.
absl::StatusOr<BackendChoice> ChooseBackend(absl::string_view device, int cuda_device);

// Makes each model's backend as chosen.
BackendFactory MakeBackendFactory(const BackendChoice& choice, CpuBackendOptions cpu_options);

}  // namespace aaren

#endif  // AAREN_SERVER_BACKEND_CHOICE_H_
