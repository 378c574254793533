// SPDX-License-Identifier: Apache-2.0
// StatePool: capacity, reuse of released slots, slot addresses that stay put while the pool
// grows by blocks, blocks allocated from (and freed to) its StateMemory, and allocation failures.
#include "engine/state_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <set>
#include <vector>

#include "absl/status/status.h"

namespace aaren {
namespace {

// Host memory that records its blocks and can be told to refuse allocations.
class CountingStateMemory final : public StateMemory {
 public:
  absl::string_view runnable_location() const override { return "host"; }
  absl::StatusOr<float*> Allocate(int64_t floats, Kind kind) override {
    if (refuse) return absl::ResourceExhaustedError("test: no memory");
    float* block = new float[static_cast<size_t>(floats)];
    blocks[block] = {floats, kind};
    return block;
  }
  void Free(float* block, Kind kind) override {
    if (block == nullptr) return;
    auto it = blocks.find(block);
    ASSERT_NE(it, blocks.end()) << "freeing a block that was not allocated here";
    EXPECT_EQ(it->second.kind, kind);
    blocks.erase(it);
    delete[] block;
  }
  absl::Status Upload(float* dst, const float* src, int64_t floats) override {
    std::copy(src, src + floats, dst);
    return absl::OkStatus();
  }
  absl::Status Download(float* dst, const float* src, int64_t floats) override {
    std::copy(src, src + floats, dst);
    return absl::OkStatus();
  }
  absl::Status Move(float* dst, const float* src, int64_t floats) override {
    std::copy(src, src + floats, dst);
    return absl::OkStatus();
  }

  struct BlockInfo {
    int64_t floats;
    Kind kind;
  };
  std::map<float*, BlockInfo> blocks;
  bool refuse = false;
};

// A pool on plain host memory with `output_floats` = 2.
StatePool HostPool(int64_t state_floats, int64_t capacity) {
  return StatePool(HostStateMemory::Get(), StateMemory::Kind::kRunnable, state_floats, 2, capacity);
}

TEST(StatePoolTest, AcquiresUpToCapacityThenNothing) {
  StatePool pool = HostPool(/*state_floats=*/8, /*capacity=*/3);
  EXPECT_EQ(pool.capacity(), 3);
  EXPECT_EQ(pool.used(), 0);
  EXPECT_EQ(pool.state_floats(), 8);
  EXPECT_EQ(pool.output_floats(), 2);
  EXPECT_EQ(pool.kind(), StateMemory::Kind::kRunnable);
  EXPECT_EQ(&pool.memory(), &HostStateMemory::Get());
  std::set<int32_t> slots;
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<int32_t> slot = pool.Acquire();
    ASSERT_TRUE(slot.ok()) << "acquire " << i << ": " << slot.status();
    slots.insert(*slot);
  }
  EXPECT_EQ(slots.size(), 3u);
  EXPECT_EQ(pool.used(), 3);
  absl::StatusOr<int32_t> full = pool.Acquire();
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(pool.used(), 3);
}

TEST(StatePoolTest, ZeroCapacityGivesNothing) {
  StatePool pool = HostPool(8, 0);
  EXPECT_EQ(pool.Acquire().status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(pool.used(), 0);
}

TEST(StatePoolTest, ReleasedSlotsAreReused) {
  StatePool pool = HostPool(4, 3);
  const int32_t a = *pool.Acquire();
  const int32_t b = *pool.Acquire();
  const int32_t c = *pool.Acquire();
  ASSERT_FALSE(pool.Acquire().ok());
  float* b_state = pool.state(b);
  float* b_output = pool.last_output(b);

  pool.Release(b);
  EXPECT_EQ(pool.used(), 2);
  absl::StatusOr<int32_t> again = pool.Acquire();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, b);
  EXPECT_EQ(pool.state(*again), b_state);
  EXPECT_EQ(pool.last_output(*again), b_output);
  EXPECT_FALSE(pool.Acquire().ok());

  // Releasing several: each comes back once, none is handed out twice.
  pool.Release(a);
  pool.Release(c);
  std::set<int32_t> back = {*pool.Acquire(), *pool.Acquire()};
  EXPECT_EQ(back, (std::set<int32_t>{a, c}));
  EXPECT_FALSE(pool.Acquire().ok());
}

TEST(StatePoolTest, AddressesStayPutAcrossBlockGrowthAndSlotsDoNotOverlap) {
  constexpr int64_t kFloats = 5;
  constexpr int64_t kOutputs = 2;
  constexpr int64_t kSlots = 1000;  // several blocks
  StatePool pool = HostPool(kFloats, kSlots);
  std::vector<int32_t> slots;
  std::vector<float*> states, outputs;
  for (int64_t i = 0; i < kSlots; ++i) {
    absl::StatusOr<int32_t> slot = pool.Acquire();
    ASSERT_TRUE(slot.ok()) << i;
    slots.push_back(*slot);
    float* p = pool.state(*slot);
    float* o = pool.last_output(*slot);
    states.push_back(p);
    outputs.push_back(o);
    // Host memory: the test may write it directly.
    for (int64_t j = 0; j < kFloats; ++j) p[j] = static_cast<float>(i * kFloats + j);
    for (int64_t j = 0; j < kOutputs; ++j) o[j] = static_cast<float>(-i * kOutputs - j);
  }
  EXPECT_FALSE(pool.Acquire().ok());
  EXPECT_EQ(pool.used(), kSlots);
  for (int64_t i = 0; i < kSlots; ++i) {
    const size_t k = static_cast<size_t>(i);
    ASSERT_EQ(pool.state(slots[k]), states[k]) << "slot " << slots[k] << " moved";
    ASSERT_EQ(pool.last_output(slots[k]), outputs[k]) << "slot " << slots[k] << " moved";
    // Every slot still holds exactly what was written to it: no two slots share memory.
    for (int64_t j = 0; j < kFloats; ++j) {
      ASSERT_EQ(states[k][j], static_cast<float>(i * kFloats + j))
          << "slot " << slots[k] << " float " << j;
    }
    for (int64_t j = 0; j < kOutputs; ++j) {
      ASSERT_EQ(outputs[k][j], static_cast<float>(-i * kOutputs - j))
          << "slot " << slots[k] << " output " << j;
    }
  }
}

TEST(StatePoolTest, ReleaseAndReacquireAcrossBlocksKeepsAddresses) {
  StatePool pool = HostPool(3, 600);
  std::vector<int32_t> first;
  for (int i = 0; i < 300; ++i) first.push_back(*pool.Acquire());
  float* p0 = pool.state(first[0]);
  float* p299 = pool.state(first[299]);
  for (int i = 0; i < 300; i += 2) pool.Release(first[static_cast<size_t>(i)]);
  EXPECT_EQ(pool.used(), 150);
  for (int i = 0; i < 450; ++i) ASSERT_TRUE(pool.Acquire().ok()) << i;
  EXPECT_EQ(pool.used(), 600);
  EXPECT_FALSE(pool.Acquire().ok());
  EXPECT_EQ(pool.state(first[0]), p0);
  EXPECT_EQ(pool.state(first[299]), p299);
}

TEST(StatePoolTest, BlocksComeFromItsStateMemoryInItsKindAndAreFreedWithThePool) {
  CountingStateMemory memory;
  {
    StatePool pool(memory, StateMemory::Kind::kStaging, /*state_floats=*/7,
                   /*output_floats=*/3, /*capacity=*/600);
    EXPECT_TRUE(memory.blocks.empty()) << "nothing is allocated before the first slot";
    std::vector<int32_t> slots;
    for (int i = 0; i < 300; ++i) slots.push_back(*pool.Acquire());
    ASSERT_EQ(memory.blocks.size(), 2u);  // 256 slots per block
    for (const auto& [block, info] : memory.blocks) {
      EXPECT_EQ(info.floats, StatePool::kBlockSlots * 7);
      EXPECT_EQ(info.kind, StateMemory::Kind::kStaging);
    }
    // Every slot's state lies inside one of the blocks; outputs are not in state memory.
    for (int32_t slot : slots) {
      float* p = pool.state(slot);
      auto it = memory.blocks.upper_bound(p);
      ASSERT_NE(it, memory.blocks.begin());
      --it;
      EXPECT_LE(p + 7, it->first + it->second.floats) << slot;
      float* o = pool.last_output(slot);
      auto ot = memory.blocks.upper_bound(o);
      if (ot != memory.blocks.begin()) {
        --ot;
        EXPECT_GE(o, ot->first + ot->second.floats) << "last output in state memory: " << slot;
      }
    }
    // Reusing released slots allocates nothing.
    pool.Release(slots[5]);
    ASSERT_TRUE(pool.Acquire().ok());
    EXPECT_EQ(memory.blocks.size(), 2u);
  }
  EXPECT_TRUE(memory.blocks.empty()) << "the pool's destructor must free its blocks";
}

TEST(StatePoolTest, AllocationFailureIsResourceExhaustedAndChangesNothing) {
  CountingStateMemory memory;
  StatePool pool(memory, StateMemory::Kind::kRunnable, 4, 2, 1000);
  memory.refuse = true;
  absl::StatusOr<int32_t> slot = pool.Acquire();
  EXPECT_EQ(slot.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(pool.used(), 0);
  memory.refuse = false;
  std::vector<int32_t> slots;
  for (int i = 0; i < StatePool::kBlockSlots; ++i) slots.push_back(*pool.Acquire());
  EXPECT_EQ(slots.front(), 0) << "the failed acquire must not have used up a slot";
  // The next block cannot be had; released slots of the first block still can.
  memory.refuse = true;
  EXPECT_EQ(pool.Acquire().status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(pool.used(), StatePool::kBlockSlots);
  pool.Release(slots[3]);
  absl::StatusOr<int32_t> again = pool.Acquire();
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, slots[3]);
  memory.refuse = false;
  absl::StatusOr<int32_t> fresh = pool.Acquire();
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(*fresh, StatePool::kBlockSlots);
  EXPECT_EQ(memory.blocks.size(), 2u);
}

}  // namespace
}  // namespace aaren
