// SPDX-License-Identifier: Apache-2.0
// What the libFuzzer harnesses share: the bundled demo models (demo-lm, a tokens model, and
// demo-ts, a features model) served by an in-process Engine on one CPU thread, and synchronous
// wrappers over the engine's callback API. The repository is found through AAREN_SOURCE_DIR
// (scripts/fuzz.sh sets it) or the source directory compiled in.
#ifndef AAREN_TESTS_FUZZ_FUZZ_SUPPORT_H_
#define AAREN_TESTS_FUZZ_FUZZ_SUPPORT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/engine.h"

namespace aaren::fuzz {

struct FuzzEngine {
  std::unique_ptr<ModelRegistry> registry;
  std::unique_ptr<Engine> engine;
  const ServedModel* lm = nullptr;  // demo-lm
  const ServedModel* ts = nullptr;  // demo-ts
};

// Loads the demo models and starts the engine once per process (aborts with a message when the
// models cannot be loaded: the harness cannot run without them).
FuzzEngine& SharedEngine();

// The session's position, state and last output, or the lookup's error: two calls return
// equal values iff the session is unchanged.
struct SessionImage {
  absl::Status status;
  int64_t position = 0;
  std::vector<float> state;
  std::vector<float> last_output;
  bool operator==(const SessionImage& o) const;
};
SessionImage Capture(Engine& engine, const std::string& session_id);

absl::StatusOr<AppendResult> AppendSync(Engine& engine, Engine::AppendParams params);
absl::StatusOr<std::vector<SequenceOutput>> ScoreSync(Engine& engine, Engine::ScoreParams params);
absl::StatusOr<SessionInfo> CreateSync(Engine& engine, Engine::CreateParams params);
absl::Status DeleteSync(Engine& engine, const std::string& session_id);

// Aborts the process with `what` (libFuzzer reports the input that got there).
[[noreturn]] void Fail(const std::string& what);

}  // namespace aaren::fuzz

#endif  // AAREN_TESTS_FUZZ_FUZZ_SUPPORT_H_
