// SPDX-License-Identifier: Apache-2.0
#include "core/state_memory.h"

#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"

namespace aaren {

HostStateMemory& HostStateMemory::Get() {
  static HostStateMemory* const memory = new HostStateMemory();
  return *memory;
}

absl::StatusOr<float*> HostStateMemory::Allocate(int64_t floats, Kind) {
  float* block = new (std::nothrow) float[static_cast<size_t>(floats)];
  if (block == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate ", floats * 4, " bytes of host memory for session states"));
  }
  return block;
}

void HostStateMemory::Free(float* block, Kind) { delete[] block; }

absl::Status HostStateMemory::Upload(float* dst, const float* src, int64_t floats) {
  std::memmove(dst, src, static_cast<size_t>(floats) * sizeof(float));
  return absl::OkStatus();
}

absl::Status HostStateMemory::Download(float* dst, const float* src, int64_t floats) {
  std::memmove(dst, src, static_cast<size_t>(floats) * sizeof(float));
  return absl::OkStatus();
}

absl::Status HostStateMemory::Move(float* dst, const float* src, int64_t floats) {
  std::memmove(dst, src, static_cast<size_t>(floats) * sizeof(float));
  return absl::OkStatus();
}

}  // namespace aaren
