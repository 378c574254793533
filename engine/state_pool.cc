// SPDX-License-Identifier: Apache-2.0
#include "engine/state_pool.h"

namespace aaren {

StatePool::StatePool(int64_t slot_floats, int64_t capacity)
    : slot_floats_(slot_floats), capacity_(capacity) {}

std::optional<int32_t> StatePool::Acquire() {
  if (used_ >= capacity_) return std::nullopt;
  ++used_;
  if (!free_.empty()) {
    const int32_t slot = free_.back();
    free_.pop_back();
    return slot;
  }
  const int32_t slot = next_fresh_++;
  if (slot % kBlockSlots == 0) {
    blocks_.push_back(std::make_unique<float[]>(static_cast<size_t>(kBlockSlots * slot_floats_)));
  }
  return slot;
}

void StatePool::Release(int32_t slot) {
  free_.push_back(slot);
  --used_;
}

}  // namespace aaren
