// SPDX-License-Identifier: Apache-2.0
// StatePool: capacity, reuse of released slots, and slot addresses that stay put while the pool
// grows by blocks.
#include "engine/state_pool.h"

#include <gtest/gtest.h>

#include <set>
#include <vector>

namespace aaren {
namespace {

TEST(StatePoolTest, AcquiresUpToCapacityThenNothing) {
  StatePool pool(/*slot_floats=*/8, /*capacity=*/3);
  EXPECT_EQ(pool.capacity(), 3);
  EXPECT_EQ(pool.used(), 0);
  std::set<int32_t> slots;
  for (int i = 0; i < 3; ++i) {
    std::optional<int32_t> slot = pool.Acquire();
    ASSERT_TRUE(slot.has_value()) << "acquire " << i;
    slots.insert(*slot);
  }
  EXPECT_EQ(slots.size(), 3u);
  EXPECT_EQ(pool.used(), 3);
  EXPECT_FALSE(pool.Acquire().has_value());
  EXPECT_EQ(pool.used(), 3);
}

TEST(StatePoolTest, ZeroCapacityGivesNothing) {
  StatePool pool(8, 0);
  EXPECT_FALSE(pool.Acquire().has_value());
  EXPECT_EQ(pool.used(), 0);
}

TEST(StatePoolTest, ReleasedSlotsAreReused) {
  StatePool pool(4, 3);
  const int32_t a = *pool.Acquire();
  const int32_t b = *pool.Acquire();
  const int32_t c = *pool.Acquire();
  ASSERT_FALSE(pool.Acquire().has_value());
  float* b_data = pool.data(b);

  pool.Release(b);
  EXPECT_EQ(pool.used(), 2);
  std::optional<int32_t> again = pool.Acquire();
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(*again, b);
  EXPECT_EQ(pool.data(*again), b_data);
  EXPECT_FALSE(pool.Acquire().has_value());

  // Releasing several: each comes back once, none is handed out twice.
  pool.Release(a);
  pool.Release(c);
  std::set<int32_t> back = {*pool.Acquire(), *pool.Acquire()};
  EXPECT_EQ(back, (std::set<int32_t>{a, c}));
  EXPECT_FALSE(pool.Acquire().has_value());
}

TEST(StatePoolTest, AddressesStayPutAcrossBlockGrowthAndSlotsDoNotOverlap) {
  constexpr int64_t kFloats = 5;
  constexpr int64_t kSlots = 1000;  // several blocks
  StatePool pool(kFloats, kSlots);
  std::vector<int32_t> slots;
  std::vector<float*> addresses;
  for (int64_t i = 0; i < kSlots; ++i) {
    std::optional<int32_t> slot = pool.Acquire();
    ASSERT_TRUE(slot.has_value()) << i;
    slots.push_back(*slot);
    float* p = pool.data(*slot);
    addresses.push_back(p);
    for (int64_t j = 0; j < kFloats; ++j) p[j] = static_cast<float>(i * kFloats + j);
  }
  EXPECT_FALSE(pool.Acquire().has_value());
  EXPECT_EQ(pool.used(), kSlots);
  for (int64_t i = 0; i < kSlots; ++i) {
    ASSERT_EQ(pool.data(slots[static_cast<size_t>(i)]), addresses[static_cast<size_t>(i)])
        << "slot " << slots[static_cast<size_t>(i)] << " moved";
    for (int64_t j = 0; j < kFloats; ++j) {
      // Every slot still holds exactly what was written to it: no two slots share memory.
      ASSERT_EQ(addresses[static_cast<size_t>(i)][j], static_cast<float>(i * kFloats + j))
          << "slot " << slots[static_cast<size_t>(i)] << " float " << j;
    }
  }
}

TEST(StatePoolTest, ReleaseAndReacquireAcrossBlocksKeepsAddresses) {
  StatePool pool(3, 600);
  std::vector<int32_t> first;
  for (int i = 0; i < 300; ++i) first.push_back(*pool.Acquire());
  float* p0 = pool.data(first[0]);
  float* p299 = pool.data(first[299]);
  for (int i = 0; i < 300; i += 2) pool.Release(first[static_cast<size_t>(i)]);
  EXPECT_EQ(pool.used(), 150);
  for (int i = 0; i < 450; ++i) ASSERT_TRUE(pool.Acquire().has_value()) << i;
  EXPECT_EQ(pool.used(), 600);
  EXPECT_FALSE(pool.Acquire().has_value());
  EXPECT_EQ(pool.data(first[0]), p0);
  EXPECT_EQ(pool.data(first[299]), p299);
}

}  // namespace
}  // namespace aaren
