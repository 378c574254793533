// SPDX-License-Identifier: Apache-2.0
// EngineTest: a registry of random models on CpuBackends and synchronous wrappers over the
// Engine's callback API, shared by engine_test.cc and engine_session_test.cc. Reference outputs
// come from a separate CpuBackend driven directly (tests/test_models.h RunSpan), so an engine
// result is checked against the Backend contract, not against the engine itself.
#ifndef AAREN_TESTS_ENGINE_ENGINE_FIXTURE_H_
#define AAREN_TESTS_ENGINE_ENGINE_FIXTURE_H_

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "engine/engine.h"
#include "tests/engine/engine_test_support.h"

namespace aaren::testing {

// Outputs of the engine vs the reference: float32 rounding of differently batched/chunked runs.
inline constexpr double kTolerance = 1e-5;

inline SequenceInput TokensInput(std::vector<int32_t> tokens) {
  SequenceInput in;
  in.tokens = std::move(tokens);
  return in;
}
inline SequenceInput FeaturesInput(std::vector<float> features) {
  SequenceInput in;
  in.features = std::move(features);
  return in;
}

struct GenerateResult {
  absl::Status status;
  std::vector<GeneratedToken> tokens;
};

class EngineTest : public ::testing::Test {
 public:
  void SetUp() override {
    // "tok": next-token logits (output_dim == vocab_size 37), so Generate works on it.
    // "feat": a features model. "cls": tokens in, 5 class scores out (no Generate).
    tok_config_ = MakeConfig(InputKind::kTokens, PositionKind::kSinusoidal, 2, 2, 16, 32, 37);
    feat_config_ = MakeConfig(InputKind::kFeatures, PositionKind::kSinusoidal, 2, 2, 16, 32, 5);
    const ModelConfig cls_config =
        MakeConfig(InputKind::kTokens, PositionKind::kNone, 4, 1, 16, 32, 5);
    tok_model_ = NamedRandomModel("tok", tok_config_, 11);
    feat_model_ = NamedRandomModel("feat", feat_config_, 12);
    registry_ = MakeCpuRegistry({tok_model_, feat_model_, NamedRandomModel("cls", cls_config, 13)});
    ASSERT_NE(registry_, nullptr);
  }

  std::unique_ptr<Engine> MakeEngine(EngineOptions options = {}) {
    return std::make_unique<Engine>(registry_.get(), options);
  }
  static EngineOptions MaxBatchTokens(int64_t max_batch_tokens) {
    EngineOptions options;
    options.max_batch_tokens = max_batch_tokens;
    return options;
  }

  const ModelConfig& ConfigOf(const std::string& model) const {
    return model == "tok" ? tok_config_ : feat_config_;
  }

  // A random input of `length` tokens for "tok" or "feat".
  SequenceInput RandomInput(const std::string& model, int64_t length, uint64_t seed) const {
    Sequence seq = RandomSequence(ConfigOf(model), length, seed);
    SequenceInput in;
    in.tokens = std::move(seq.tokens);
    in.features = std::move(seq.features);
    return in;
  }

  // Rows [begin, end) of `in`.
  static SequenceInput Slice(const SequenceInput& in, int64_t begin, int64_t end,
                             int64_t n_features) {
    SequenceInput out;
    if (!in.tokens.empty()) {
      out.tokens.assign(in.tokens.begin() + begin, in.tokens.begin() + end);
    } else {
      out.features.assign(in.features.begin() + begin * n_features,
                          in.features.begin() + end * n_features);
    }
    return out;
  }

  static void Concat(SequenceInput& to, const SequenceInput& more) {
    to.tokens.insert(to.tokens.end(), more.tokens.begin(), more.tokens.end());
    to.features.insert(to.features.end(), more.features.begin(), more.features.end());
  }

  // Every output row of `in` run from the empty state, by a CpuBackend of its own: [n, od].
  std::vector<float> Reference(const std::string& model, const SequenceInput& in,
                               std::vector<float>* final_state = nullptr) const {
    const std::shared_ptr<const Model>& m = model == "tok" ? tok_model_ : feat_model_;
    CpuBackend backend(m, TestBackendOptions());
    Sequence seq;
    seq.tokens = in.tokens;
    seq.features = in.features;
    seq.length = in.length(m->config().n_features);
    SessionState state(m->config());
    std::vector<float> out = RunSpan(backend, seq, 0, seq.length, state);
    if (final_state != nullptr) *final_state = state.state;
    return out;
  }

  static std::vector<float> Rows(const std::vector<float>& all, int64_t begin, int64_t end,
                                 int64_t od) {
    return std::vector<float>(all.begin() + begin * od, all.begin() + end * od);
  }

  // Polls `done` every 5 ms until it holds (true) or `timeout` passes (false).
  template <typename Fn>
  static bool WaitFor(Fn done, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (!done()) {
      if (std::chrono::steady_clock::now() >= until) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
  }

  // ---- Synchronous wrappers ----

  static SessionInfo Open(Engine& e, const std::string& model, const std::string& id = "") {
    absl::StatusOr<SessionInfo> info = e.OpenSession(id, model, /*create_if_missing=*/true, 0);
    EXPECT_TRUE(info.ok()) << info.status();
    return info.ok() ? *info : SessionInfo{};
  }

  static std::future<absl::StatusOr<AppendResult>> AppendAsync(
      Engine& e, const std::string& id, SequenceInput input,
      std::optional<int64_t> expected_position = std::nullopt, OutputMode mode = OutputMode::kAll,
      std::shared_ptr<CancelFlag> cancel = nullptr) {
    auto promise = std::make_shared<std::promise<absl::StatusOr<AppendResult>>>();
    auto future = promise->get_future();
    Engine::AppendParams p;
    p.session_id = id;
    p.input = std::move(input);
    p.expected_position = expected_position;
    p.mode = mode;
    p.cancel = std::move(cancel);
    e.Append(std::move(p),
             [promise](absl::StatusOr<AppendResult> r) { promise->set_value(std::move(r)); });
    return future;
  }

  static absl::StatusOr<AppendResult> Append(
      Engine& e, const std::string& id, SequenceInput input,
      std::optional<int64_t> expected_position = std::nullopt, OutputMode mode = OutputMode::kAll) {
    auto f = AppendAsync(e, id, std::move(input), expected_position, mode);
    return Await(f);
  }

  static std::future<absl::StatusOr<std::vector<SequenceOutput>>> ScoreAsync(
      Engine& e, Engine::ScoreParams params) {
    auto promise = std::make_shared<std::promise<absl::StatusOr<std::vector<SequenceOutput>>>>();
    auto future = promise->get_future();
    e.Score(std::move(params), [promise](absl::StatusOr<std::vector<SequenceOutput>> r) {
      promise->set_value(std::move(r));
    });
    return future;
  }

  static absl::StatusOr<std::vector<SequenceOutput>> Score(Engine& e, const std::string& model,
                                                           std::vector<SequenceInput> sequences,
                                                           OutputMode mode = OutputMode::kAll,
                                                           bool prefill = false) {
    Engine::ScoreParams p;
    p.model = model;
    p.sequences = std::move(sequences);
    p.mode = mode;
    p.prefill = prefill;
    auto f = ScoreAsync(e, std::move(p));
    return Await(f);
  }

  static absl::StatusOr<SessionInfo> Create(Engine& e, const std::string& model,
                                            SequenceInput prefix, const std::string& id = "") {
    std::promise<absl::StatusOr<SessionInfo>> promise;
    auto f = promise.get_future();
    Engine::CreateParams p;
    p.model = model;
    p.session_id = id;
    p.prefix = std::move(prefix);
    e.CreateSession(std::move(p),
                    [&promise](absl::StatusOr<SessionInfo> r) { promise.set_value(std::move(r)); });
    return Await(f);
  }

  static std::future<absl::Status> DeleteAsync(Engine& e, const std::string& id) {
    auto promise = std::make_shared<std::promise<absl::Status>>();
    auto f = promise->get_future();
    e.DeleteSession(id, [promise](absl::Status st) { promise->set_value(std::move(st)); });
    return f;
  }

  static std::future<absl::StatusOr<SessionInfo>> ForkAsync(Engine& e, const std::string& id,
                                                            const std::string& new_id,
                                                            uint32_t idle_ttl_s = 0) {
    auto promise = std::make_shared<std::promise<absl::StatusOr<SessionInfo>>>();
    auto f = promise->get_future();
    e.ForkSession(id, new_id, idle_ttl_s,
                  [promise](absl::StatusOr<SessionInfo> r) { promise->set_value(std::move(r)); });
    return f;
  }

  static absl::StatusOr<SessionInfo> Fork(Engine& e, const std::string& id,
                                          const std::string& new_id, uint32_t idle_ttl_s = 0) {
    auto f = ForkAsync(e, id, new_id, idle_ttl_s);
    return Await(f);
  }

  static std::future<absl::StatusOr<SessionSnapshot>> ExportAsync(Engine& e,
                                                                  const std::string& id) {
    auto promise = std::make_shared<std::promise<absl::StatusOr<SessionSnapshot>>>();
    auto f = promise->get_future();
    e.ExportSession(
        id, [promise](absl::StatusOr<SessionSnapshot> r) { promise->set_value(std::move(r)); });
    return f;
  }

  static absl::StatusOr<SessionSnapshot> Export(Engine& e, const std::string& id) {
    auto f = ExportAsync(e, id);
    return Await(f);
  }

  static std::future<GenerateResult> GenerateAsync(Engine& e, Engine::GenerateParams params) {
    auto result = std::make_shared<GenerateResult>();
    auto promise = std::make_shared<std::promise<GenerateResult>>();
    auto f = promise->get_future();
    e.Generate(
        std::move(params), [result](const GeneratedToken& t) { result->tokens.push_back(t); },
        [result, promise](absl::Status st) {
          result->status = std::move(st);
          promise->set_value(std::move(*result));
        });
    return f;
  }

  static GenerateResult Generate(Engine& e, const std::string& id, uint32_t max_tokens,
                                 SampleOptions sampling, uint64_t seed, SequenceInput prompt = {},
                                 std::vector<int32_t> stop_tokens = {}) {
    Engine::GenerateParams p;
    p.session_id = id;
    p.max_tokens = max_tokens;
    p.sampling = sampling;
    p.seed = seed;
    p.prompt = std::move(prompt);
    p.stop_tokens = std::move(stop_tokens);
    auto f = GenerateAsync(e, std::move(p));
    return Await(f);
  }

  // Holds the scheduler thread (see Gate) until Release() or destruction. Declare it after the
  // engine so that it lets go before the engine's destructor joins the scheduler.
  class HeldScheduler {
   public:
    explicit HeldScheduler(std::shared_ptr<Gate> gate) : gate_(std::move(gate)) {}
    ~HeldScheduler() { gate_->Open(); }
    void Release() { gate_->Open(); }

   private:
    std::shared_ptr<Gate> gate_;
  };

  // Appends one token to a session of its own ("tok" model) whose completion blocks the
  // scheduler thread; returns once the scheduler is held.
  std::unique_ptr<HeldScheduler> HoldScheduler(Engine& e) {
    const std::string id = "gate-" + std::to_string(next_gate_++);
    Open(e, "tok", id);
    auto gate = std::make_shared<Gate>();
    Engine::AppendParams p;
    p.session_id = id;
    p.input = TokensInput({1});
    e.Append(std::move(p), [gate](absl::StatusOr<AppendResult> r) {
      EXPECT_TRUE(r.ok()) << r.status();
      gate->Enter();
    });
    gate->WaitEntered();
    return std::make_unique<HeldScheduler>(gate);
  }

  ModelConfig tok_config_;
  ModelConfig feat_config_;
  std::shared_ptr<const Model> tok_model_;
  std::shared_ptr<const Model> feat_model_;
  std::unique_ptr<ModelRegistry> registry_;
  int next_gate_ = 0;
};

}  // namespace aaren::testing

#endif  // AAREN_TESTS_ENGINE_ENGINE_FIXTURE_H_
