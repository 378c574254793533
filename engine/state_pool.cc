// SPDX-License-Identifier: Apache-2.0
#include "engine/state_pool.h"

#include <new>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace aaren {

StatePool::StatePool(StateMemory& memory, StateMemory::Kind kind, int64_t state_floats,
                     int64_t output_floats, int64_t capacity)
    : memory_(&memory),
      kind_(kind),
      state_floats_(state_floats),
      output_floats_(output_floats),
      capacity_(capacity) {}

StatePool::~StatePool() {
  for (Block& b : blocks_) memory_->Free(b.state, kind_);
}

absl::StatusOr<int32_t> StatePool::Acquire() {
  if (used_ >= capacity_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("state pool: all ", capacity_, " slots are in use"));
  }
  if (!free_.empty()) {
    const int32_t slot = free_.back();
    free_.pop_back();
    ++used_;
    return slot;
  }
  const int32_t slot = next_fresh_;
  if (slot % kBlockSlots == 0) {
    Block block;
    block.outputs.reset(
        new (std::nothrow) float[static_cast<size_t>(kBlockSlots * output_floats_)]);
    if (block.outputs == nullptr) {
      return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ",
                                                       kBlockSlots * output_floats_ * 4,
                                                       " bytes of host memory for "
                                                       "session outputs"));
    }
    absl::StatusOr<float*> state = memory_->Allocate(kBlockSlots * state_floats_, kind_);
    if (!state.ok()) return state.status();
    block.state = *state;
    blocks_.push_back(std::move(block));
  }
  ++next_fresh_;
  ++used_;
  return slot;
}

void StatePool::Release(int32_t slot) {
  free_.push_back(slot);
  --used_;
}

}  // namespace aaren
