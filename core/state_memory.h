// SPDX-License-Identifier: Apache-2.0
// StateMemory: where a backend keeps session states, and the only way code outside the backend
// reads or writes them.
//
// A Span's `state` (core/backend.h) must point into "runnable" memory of its backend's
// StateMemory: host memory for the CPU backend, device memory for the CUDA backend (so that a
// streaming step reads and writes states in place, on the GPU). "Staging" memory is host memory
// that copies to and from runnable memory fast (page-locked for CUDA): the engine's host tier.
// Code that does not own the backend (the engine) never dereferences runnable or staging memory
// directly; it copies through Upload / Download / Move.
//
// Ordering: every copy and every Forward of one backend run in the order they were issued (for
// CUDA: one stream). Move is asynchronous (it may still be running when it returns); Upload returns
// once its host source may be reused; Download returns once its host destination holds the data
// (it waits for every earlier Forward and copy). So "Move a state to the host tier, then reuse its
// slot in the next Forward" and "Upload, then Forward" are correct without any other waiting.
//
// Thread-safety: every method may be called from any thread; calls are serialised per object.
#ifndef AAREN_CORE_STATE_MEMORY_H_
#define AAREN_CORE_STATE_MEMORY_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace aaren {

class StateMemory {
 public:
  enum class Kind : uint8_t {
    kRunnable,  // Span::state may point here (device memory for CUDA)
    kStaging,   // host memory for the host tier (page-locked for CUDA)
  };

  virtual ~StateMemory() = default;

  // "host" or "device": where runnable memory is (for logs, metrics and the tier labels).
  virtual absl::string_view runnable_location() const = 0;

  // Allocates `floats` floats of `kind` memory, uninitialised. RESOURCE_EXHAUSTED naming the size
  // when it cannot. The block stays valid until Free(block, kind); its address never changes.
  virtual absl::StatusOr<float*> Allocate(int64_t floats, Kind kind) = 0;
  // Frees a block from Allocate (null: no-op). Copies still in flight to or from it must have been
  // issued before (they complete first).
  virtual void Free(float* block, Kind kind) = 0;

  // `floats` floats from ordinary host memory `src` into runnable or staging memory `dst`.
  virtual absl::Status Upload(float* dst, const float* src, int64_t floats) = 0;
  // `floats` floats from runnable or staging memory `src` into ordinary host memory `dst`.
  virtual absl::Status Download(float* dst, const float* src, int64_t floats) = 0;
  // Between two blocks of this object (either kind, any direction); asynchronous.
  virtual absl::Status Move(float* dst, const float* src, int64_t floats) = 0;
};

// Plain host memory (the CPU backend's): every copy is a memcpy, done when the call returns.
class HostStateMemory final : public StateMemory {
 public:
  // One shared instance (it has no state of its own).
  static HostStateMemory& Get();

  absl::string_view runnable_location() const override { return "host"; }
  absl::StatusOr<float*> Allocate(int64_t floats, Kind kind) override;
  void Free(float* block, Kind kind) override;
  absl::Status Upload(float* dst, const float* src, int64_t floats) override;
  absl::Status Download(float* dst, const float* src, int64_t floats) override;
  absl::Status Move(float* dst, const float* src, int64_t floats) override;
};

}  // namespace aaren

#endif  // AAREN_CORE_STATE_MEMORY_H_
