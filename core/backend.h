// SPDX-License-Identifier: Apache-2.0
// Backend: the one compute primitive of Aaren Serve (DESIGN.md section 1).
//
//   Forward(spans): a ragged batch of chunks; each chunk is a run of consecutive tokens of one
//   sequence, seeded with that sequence's recurrent state and position. Forward writes every
//   requested token output and advances each chunk's state and position in place.
//
// Every serving path is a Forward call: a streaming append is a span of length 1, appending many
// tokens / prefilling a session / scoring a batch are longer spans (scoring uses scratch states).
// Streaming token by token and scoring at once give the same outputs to float32 rounding.
//
// Implementations: CpuBackend (core/cpu_backend.h); CudaBackend (kernels/cuda_backend.h).
#ifndef AAREN_CORE_BACKEND_H_
#define AAREN_CORE_BACKEND_H_

#include <algorithm>
#include <cstdint>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "core/mca.h"
#include "core/model.h"
#include "core/state_memory.h"

namespace aaren {

// Which token outputs a span wants written.
enum class OutputSelect : uint8_t {
  kAll,   // every token: outputs is [length, output_dim]
  kLast,  // the last token only: outputs is [output_dim] (nothing written for length 0)
  kNone,  // none (state update only, e.g. prefill): outputs is ignored and may be null
};

// One chunk of one sequence. All pointers are borrowed from the caller and must stay valid (and
// not be touched by anyone else) until Forward returns.
struct Span {
  // Inputs, by the model's input kind (exactly one is used):
  //   tokens:   [length] token ids in [0, vocab_size)
  //   features: [length * n_features] finite floats, row-major
  absl::Span<const int32_t> tokens;
  absl::Span<const float> features;
  // Recurrent state, read then overwritten: n_layers x n_heads x (m, u, w[d_head]) floats in the
  // layout of core/aaren_state.h (StateLayout), in runnable memory of the backend's
  // state_memory() (host memory for the CPU backend, device memory for CUDA). A fresh sequence
  // starts from ResetState() (uploaded).
  // No two spans of one Forward may share (or overlap in) a state buffer or a position counter.
  float* state = nullptr;
  // Position (token index in the sequence) of the span's first token; advanced by length.
  int64_t* position = nullptr;
  OutputSelect output = OutputSelect::kAll;
  float* outputs = nullptr;  // see OutputSelect; row-major, output_dim floats per row
  // Monte-Carlo Attention for this span's value projections (core/mca.h); off by default.
  McaOptions mca;
  // If set, receives the span's value-projection FLOPs (spent and exact), on success only.
  McaCounts* mca_counts = nullptr;

  // Tokens in the span, from whichever input field the model uses.
  int64_t length(int64_t n_features) const {
    return tokens.empty() ? static_cast<int64_t>(features.size()) / std::max<int64_t>(1, n_features)
                          : static_cast<int64_t>(tokens.size());
  }
};

class Backend {
 public:
  virtual ~Backend() = default;

  // The model this backend serves (immutable, shared).
  virtual const Model& model() const = 0;
  // Short name for logs and metrics: "cpu", "cuda".
  virtual absl::string_view name() const = 0;
  // Where this backend wants Span::state (core/state_memory.h); lives as long as the backend.
  // Default: plain host memory.
  virtual StateMemory& state_memory() { return HostStateMemory::Get(); }

  // Runs the batch, all or nothing: on any error no state, position or output has been modified.
  // Errors:
  //  - INVALID_ARGUMENT naming the span and field ("spans[2].tokens[5]: token id 99 out of range
  //    [0, 65)"), found before any work: an out-of-range token, a non-finite feature, a feature
  //    count that is not a multiple of n_features, the input field the model does not take, a
  //    null state/position/outputs, two spans sharing a state or position, a position overflow;
  //  - INVALID_ARGUMENT naming the span when its activations overflow float32 (finite but huge
  //    features), found after the work and undone: the state never becomes NaN or Inf;
  //  - RESOURCE_EXHAUSTED when the batch's working memory cannot be allocated (undone likewise).
  // Empty spans are no-ops.
  //
  // Thread-safety: Forward may be called concurrently from several threads on disjoint spans;
  // each call uses its own scratch memory and the backend's thread budget.
  virtual absl::Status Forward(absl::Span<const Span> spans) = 0;
};

// Validates a batch against `config` without touching it (the checks Backend::Forward documents).
// Every backend calls it first, so all backends reject exactly the same inputs with the same
// messages. Thread-safe.
absl::Status ValidateSpans(const ModelConfig& config, absl::Span<const Span> spans);

}  // namespace aaren

#endif  // AAREN_CORE_BACKEND_H_
