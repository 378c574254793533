// SPDX-License-Identifier: Apache-2.0
// Helpers shared by the engine unit tests: registries of random models on a CpuBackend, a gate
// that holds the scheduler thread so that work can be queued deterministically, and a bounded
// wait on futures (a lost callback fails the test instead of hanging it).
#ifndef AAREN_TESTS_ENGINE_ENGINE_TEST_SUPPORT_H_
#define AAREN_TESTS_ENGINE_ENGINE_TEST_SUPPORT_H_

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "core/cpu_backend.h"
#include "core/model.h"
#include "engine/served_model.h"
#include "tests/test_models.h"

namespace aaren::testing {

// A random model served under `name` (ModelRegistry::FromModels uses Model::name()).
inline std::shared_ptr<const Model> NamedRandomModel(const std::string& name,
                                                     const ModelConfig& config, uint64_t seed) {
  auto model = Model::FromTensors(name, config, RandomTensors(config, seed));
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *model : nullptr;
}

inline CpuBackendOptions TestBackendOptions() {
  return CpuBackendOptions{.num_threads = 2, .min_scan_chunk = 32};
}

// Serves `models`, each on its own CpuBackend.
inline std::unique_ptr<ModelRegistry> MakeCpuRegistry(
    std::vector<std::shared_ptr<const Model>> models) {
  auto registry = ModelRegistry::FromModels(
      std::move(models),
      [](std::shared_ptr<const Model> m) -> absl::StatusOr<std::unique_ptr<Backend>> {
        return std::make_unique<CpuBackend>(std::move(m), TestBackendOptions());
      });
  EXPECT_TRUE(registry.ok()) << registry.status();
  return registry.ok() ? std::move(*registry) : nullptr;
}

// The value of `future`; aborts the test binary (with a message) after a minute rather than hang
// the suite when a callback never runs.
template <typename T>
T Await(std::future<T>& future) {
  if (future.wait_for(std::chrono::seconds(60)) != std::future_status::ready) {
    std::fprintf(stderr, "engine test: a callback did not run within 60 s\n");
    std::abort();
  }
  return future.get();
}

// Holds the engine's scheduler thread. A completion callback calls Enter(), which blocks (on the
// scheduler thread) until the test calls Open(); meanwhile everything the test submits is queued
// and none of it can start, so the next tick sees all of it at once. Test-only: the engine's
// contract says callbacks must not block; here that is the point.
class Gate {
 public:
  void Enter() {
    std::unique_lock<std::mutex> lock(mu_);
    entered_ = true;
    cv_.notify_all();
    cv_.wait(lock, [&] { return open_; });
  }
  // Returns once a callback is blocked in Enter().
  void WaitEntered() {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, std::chrono::seconds(60), [&] { return entered_; })) {
      std::fprintf(stderr, "engine test: the gate was never entered\n");
      std::abort();
    }
  }
  void Open() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool entered_ = false;
  bool open_ = false;
};

// Lowest index of the largest value.
inline int32_t ArgMax(const std::vector<float>& v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

// log softmax(v)[i], in double.
inline double LogSoftmax(const std::vector<float>& v, size_t i) {
  const double max_v = *std::max_element(v.begin(), v.end());
  double sum = 0.0;
  for (float x : v) sum += std::exp(static_cast<double>(x) - max_v);
  return static_cast<double>(v[i]) - max_v - std::log(sum);
}

}  // namespace aaren::testing

#endif  // AAREN_TESTS_ENGINE_ENGINE_TEST_SUPPORT_H_
