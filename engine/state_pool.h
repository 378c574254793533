// SPDX-License-Identifier: Apache-2.0
// StatePool: fixed-capacity slots of one model's per-session buffers (recurrent state followed
// by the last output row), the tier a session must be in to run. Slot memory is reserved in
// blocks as slots are first used, so a large capacity costs nothing until it is needed; a slot's
// address never changes. Not thread-safe: the engine calls it under its lock.
#ifndef AAREN_ENGINE_STATE_POOL_H_
#define AAREN_ENGINE_STATE_POOL_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

namespace aaren {

class StatePool {
 public:
  // `slot_floats` floats per slot, at most `capacity` slots.
  StatePool(int64_t slot_floats, int64_t capacity);

  // A free slot, or nullopt when all `capacity` slots are in use.
  std::optional<int32_t> Acquire();
  void Release(int32_t slot);
  float* data(int32_t slot) {
    return blocks_[static_cast<size_t>(slot / kBlockSlots)].get() +
           static_cast<int64_t>(slot % kBlockSlots) * slot_floats_;
  }

  int64_t capacity() const { return capacity_; }
  int64_t used() const { return used_; }

 private:
  static constexpr int32_t kBlockSlots = 256;
  int64_t slot_floats_;
  int64_t capacity_;
  int64_t used_ = 0;
  int32_t next_fresh_ = 0;     // slots below this have memory
  std::vector<int32_t> free_;  // released slots, reused first
  std::vector<std::unique_ptr<float[]>> blocks_;
};

}  // namespace aaren

#endif  // AAREN_ENGINE_STATE_POOL_H_
