// SPDX-License-Identifier: Apache-2.0
#include "tests/fuzz/fuzz_support.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <utility>

#include "core/cpu_backend.h"

namespace aaren::fuzz {

void Fail(const std::string& what) {
  std::fprintf(stderr, "aaren fuzz: %s\n", what.c_str());
  std::abort();
}

FuzzEngine& SharedEngine() {
  static FuzzEngine* shared = [] {
    const char* env = std::getenv("AAREN_SOURCE_DIR");
    const std::filesystem::path repo = env != nullptr ? env : AAREN_FUZZ_SOURCE_DIR;
    auto registry = ModelRegistry::Load(
        {repo / "models" / "demo-lm", repo / "models" / "demo-ts"},
        [](std::shared_ptr<const Model> m) -> absl::StatusOr<std::unique_ptr<Backend>> {
          CpuBackendOptions options;
          options.num_threads = 1;
          return std::make_unique<CpuBackend>(std::move(m), options);
        });
    if (!registry.ok()) Fail(std::string(registry.status().message()));
    auto* f = new FuzzEngine;
    f->registry = *std::move(registry);
    EngineOptions options;
    options.max_sequence_tokens = 512;
    options.max_request_tokens = 1024;
    options.max_reply_bytes = 1 << 20;
    options.max_generate_tokens = 8;
    options.memory_budget_bytes = 64 << 20;
    options.store.pool_sessions = 8;
    options.store.host_sessions = 64;
    f->engine = std::make_unique<Engine>(f->registry.get(), options);
    f->lm = f->registry->Find("demo-lm");
    f->ts = f->registry->Find("demo-ts");
    return f;
  }();
  return *shared;
}

bool SessionImage::operator==(const SessionImage& o) const {
  return status == o.status && position == o.position && state == o.state &&
         last_output == o.last_output;
}

SessionImage Capture(Engine& engine, const std::string& session_id) {
  std::promise<absl::StatusOr<SessionSnapshot>> promise;
  auto future = promise.get_future();
  engine.ExportSession(session_id,
                       [&](absl::StatusOr<SessionSnapshot> s) { promise.set_value(std::move(s)); });
  absl::StatusOr<SessionSnapshot> snap = future.get();
  SessionImage image;
  image.status = snap.status();
  if (snap.ok()) {
    image.position = snap->position;
    image.state = std::move(snap->state);
    image.last_output = std::move(snap->last_output);
  }
  return image;
}

absl::StatusOr<AppendResult> AppendSync(Engine& engine, Engine::AppendParams params) {
  std::promise<absl::StatusOr<AppendResult>> promise;
  auto future = promise.get_future();
  engine.Append(std::move(params),
                [&](absl::StatusOr<AppendResult> r) { promise.set_value(std::move(r)); });
  return future.get();
}

absl::StatusOr<std::vector<SequenceOutput>> ScoreSync(Engine& engine, Engine::ScoreParams params) {
  std::promise<absl::StatusOr<std::vector<SequenceOutput>>> promise;
  auto future = promise.get_future();
  engine.Score(std::move(params), [&](absl::StatusOr<std::vector<SequenceOutput>> r) {
    promise.set_value(std::move(r));
  });
  return future.get();
}

absl::StatusOr<SessionInfo> CreateSync(Engine& engine, Engine::CreateParams params) {
  std::promise<absl::StatusOr<SessionInfo>> promise;
  auto future = promise.get_future();
  engine.CreateSession(std::move(params),
                       [&](absl::StatusOr<SessionInfo> r) { promise.set_value(std::move(r)); });
  return future.get();
}

absl::Status DeleteSync(Engine& engine, const std::string& session_id) {
  std::promise<absl::Status> promise;
  auto future = promise.get_future();
  engine.DeleteSession(session_id, [&](absl::Status st) { promise.set_value(std::move(st)); });
  return future.get();
}

}  // namespace aaren::fuzz
