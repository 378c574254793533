// SPDX-License-Identifier: Apache-2.0
// StatePool: fixed-capacity slots of one model's per-session buffers in one tier. A slot has two
// parts:
//   - the recurrent state (state_floats floats) in memory of one Kind of a backend's StateMemory
//     (core/state_memory.h): runnable memory for the pool tier and Score's scratch states (what
//     Span::state points at; device memory for CUDA), staging memory for the host tier. Callers
//     never dereference it: they copy through that StateMemory (Upload / Download / Move);
//   - the session's last output row (output_floats floats) in ordinary host memory, which the
//     engine reads and writes directly (Generate samples from it, a one-token retry replays it).
// Memory is reserved in blocks of kBlockSlots slots as slots are first used, so a large capacity
// costs nothing until it is needed; blocks are kept until the pool is destroyed, and a slot's
// addresses never change. Not thread-safe: the engine calls it under its lock. The StateMemory
// must outlive the pool.
#ifndef AAREN_ENGINE_STATE_POOL_H_
#define AAREN_ENGINE_STATE_POOL_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "core/state_memory.h"

namespace aaren {

class StatePool {
 public:
  static constexpr int32_t kBlockSlots = 256;

  // At most `capacity` slots of `state_floats` floats of `kind` memory of `memory` plus
  // `output_floats` host floats each. Allocates nothing yet.
  StatePool(StateMemory& memory, StateMemory::Kind kind, int64_t state_floats,
            int64_t output_floats, int64_t capacity);
  ~StatePool();  // frees every block (copies to or from them must have been issued before)
  StatePool(const StatePool&) = delete;
  StatePool& operator=(const StatePool&) = delete;

  // A free slot (its contents are whatever the last holder left, or uninitialised).
  // RESOURCE_EXHAUSTED when all `capacity` slots are in use, or when a new block of memory
  // cannot be allocated (then nothing changed).
  absl::StatusOr<int32_t> Acquire();
  void Release(int32_t slot);

  // The slot's recurrent state, in `kind` memory of memory(): pass it to Span::state (runnable)
  // or to memory()'s copies; never dereference it.
  float* state(int32_t slot) const {
    return blocks_[static_cast<size_t>(slot / kBlockSlots)].state +
           static_cast<int64_t>(slot % kBlockSlots) * state_floats_;
  }
  // The slot's last output row: ordinary host memory, read and written directly.
  float* last_output(int32_t slot) const {
    return blocks_[static_cast<size_t>(slot / kBlockSlots)].outputs.get() +
           static_cast<int64_t>(slot % kBlockSlots) * output_floats_;
  }

  StateMemory& memory() const { return *memory_; }
  StateMemory::Kind kind() const { return kind_; }
  int64_t state_floats() const { return state_floats_; }
  int64_t output_floats() const { return output_floats_; }
  int64_t capacity() const { return capacity_; }
  int64_t used() const { return used_; }

 private:
  struct Block {
    float* state = nullptr;            // kBlockSlots * state_floats, from memory_->Allocate
    std::unique_ptr<float[]> outputs;  // kBlockSlots * output_floats, host
  };

  StateMemory* memory_;
  StateMemory::Kind kind_;
  int64_t state_floats_;
  int64_t output_floats_;
  int64_t capacity_;
  int64_t used_ = 0;
  int32_t next_fresh_ = 0;     // slots below this have memory
  std::vector<int32_t> free_;  // released slots, reused first
  std::vector<Block> blocks_;
};

}  // namespace aaren

#endif  // AAREN_ENGINE_STATE_POOL_H_
