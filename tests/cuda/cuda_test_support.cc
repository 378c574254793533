// SPDX-License-Identifier: Apache-2.0
#include "tests/cuda/cuda_test_support.h"

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "core/aaren_state.h"
#include "kernels/cuda_device.h"

namespace aaren::testing {

std::string NoGpuReason() {
  auto devices = cuda::ListDevices();
  if (!devices.ok())
    return absl::StrCat("CUDA device discovery failed: ", devices.status().message());
  if (devices->empty()) return "no CUDA GPU on this machine: the CUDA backend was not run";
  return "";
}

BackendStates::BackendStates(Backend& backend, int n)
    : backend_(backend), state_floats_(backend.model().config().state_floats()), positions_(n, 0) {
  StateMemory& memory = backend_.state_memory();
  auto block = memory.Allocate(n * state_floats_, StateMemory::Kind::kRunnable);
  EXPECT_TRUE(block.ok()) << block.status();
  if (!block.ok()) return;
  block_ = *block;
  std::vector<float> identity(static_cast<size_t>(n * state_floats_));
  const StateLayout layout = StateLayout::For(backend_.model().config());
  for (int i = 0; i < n; ++i) ResetState(identity.data() + i * state_floats_, layout);
  EXPECT_TRUE(memory.Upload(block_, identity.data(), n * state_floats_).ok());
}

BackendStates::~BackendStates() {
  backend_.state_memory().Free(block_, StateMemory::Kind::kRunnable);
}

absl::Status BackendStates::Run(const std::vector<Piece>& pieces) {
  const ModelConfig& c = backend_.model().config();
  std::vector<Span> spans;
  outputs_.assign(pieces.size(), {});
  counts_.assign(pieces.size(), McaCounts{-1, -1});  // -1: not written by the backend
  for (size_t i = 0; i < pieces.size(); ++i) {
    const Piece& p = pieces[i];
    Span s = p.seq->Slice(p.begin, p.end, c.n_features);
    s.state = device_state(p.state);
    s.position = &positions_[p.state];
    s.output = p.output;
    s.mca = p.mca;
    s.mca_counts = &counts_[i];
    const int64_t n = p.end - p.begin;
    const int64_t rows = p.output == OutputSelect::kAll    ? n
                         : p.output == OutputSelect::kLast ? 1
                                                           : 0;
    outputs_[i].assign(static_cast<size_t>(rows * c.output_dim), 0.0f);
    s.outputs = outputs_[i].data();
    spans.push_back(s);
  }
  return backend_.Forward(spans);
}

std::vector<float> BackendStates::State(int i) const {
  std::vector<float> host(static_cast<size_t>(state_floats_));
  EXPECT_TRUE(backend_.state_memory()
                  .Download(host.data(), block_ + i * state_floats_, state_floats_)
                  .ok());
  return host;
}

}  // namespace aaren::testing
