// SPDX-License-Identifier: Apache-2.0
// Test support for the CUDA backend: a GPU check that skips with a clear message, and batches run
// on any Backend with their states in that backend's StateMemory (device memory for CUDA).
#ifndef AAREN_TESTS_CUDA_CUDA_TEST_SUPPORT_H_
#define AAREN_TESTS_CUDA_CUDA_TEST_SUPPORT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/backend.h"
#include "tests/test_models.h"

namespace aaren::testing {

// Empty when a CUDA GPU is visible; otherwise why not (for GTEST_SKIP).
std::string NoGpuReason();

// One piece of a batch: rows [begin, end) of `seq`, on state `state` (index into the batch's
// states), wanting `output` rows, with Monte-Carlo Attention options `mca` (off by default).
struct Piece {
  const Sequence* seq = nullptr;
  int64_t begin = 0;
  int64_t end = 0;
  int state = 0;
  OutputSelect output = OutputSelect::kAll;
  McaOptions mca = {};
};

// n session states in `backend`'s runnable state memory, starting from the identity at position
// 0, freed on destruction.
class BackendStates {
 public:
  BackendStates(Backend& backend, int n);
  ~BackendStates();
  BackendStates(const BackendStates&) = delete;
  BackendStates& operator=(const BackendStates&) = delete;

  // One Forward over `pieces`; returns its status. Outputs of piece i go to outputs()[i], its
  // value-projection FLOPs (Span::mca_counts) to counts()[i].
  absl::Status Run(const std::vector<Piece>& pieces);
  const std::vector<std::vector<float>>& outputs() const { return outputs_; }
  const std::vector<McaCounts>& counts() const { return counts_; }
  // Downloaded copy of state i.
  std::vector<float> State(int i) const;
  int64_t position(int i) const { return positions_[i]; }
  float* device_state(int i) { return block_ + i * state_floats_; }

 private:
  Backend& backend_;
  int64_t state_floats_;
  float* block_ = nullptr;
  std::vector<int64_t> positions_;
  std::vector<std::vector<float>> outputs_;
  std::vector<McaCounts> counts_;
};

}  // namespace aaren::testing

#endif  // AAREN_TESTS_CUDA_CUDA_TEST_SUPPORT_H_
