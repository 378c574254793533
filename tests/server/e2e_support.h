// SPDX-License-Identifier: Apache-2.0
// Helpers for the end-to-end tests of aaren-server: model directories (the demo models and random
// ones written to a temp dir), blocking calls that keep both the status and the response, a
// synchronous Stream client, inputs as protos, and output comparisons.
//
// Thread-safety: free functions may run on any thread; a StreamClient belongs to one thread.
#ifndef AAREN_TESTS_SERVER_E2E_SUPPORT_H_
#define AAREN_TESTS_SERVER_E2E_SUPPORT_H_

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "aaren/v1/aaren.grpc.pb.h"
#include "absl/status/statusor.h"
#include "core/model.h"
#include "core/model_config.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/status.h"
#include "tests/server/server_process.h"
#include "tests/test_models.h"

namespace aaren::testing {

namespace v1 = ::aaren::v1;
using AarenStub = v1::Aaren::Stub;

// ---- Paths and model directories ----

// The repository root: $AAREN_SOURCE_DIR (CTest sets it), else the configure-time source dir.
std::filesystem::path SourceDir();
// models/demo-lm and models/demo-ts of the repository.
std::filesystem::path DemoModelDir(const std::string& name);

// A temporary directory removed (recursively) by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Writes `parent`/`name`/{config.json, model.safetensors} with random weights for `config`
// (tests/test_models.h RandomTensors, deterministic in `seed`). Returns the directory.
absl::StatusOr<std::filesystem::path> WriteRandomModelDir(const std::filesystem::path& parent,
                                                          const std::string& name,
                                                          const ModelConfig& config, uint64_t seed,
                                                          RandomModelOptions options = {});

// Outputs [n, output_dim] of `input` run from a fresh state at `first_position`, by the float64
// oracle of tests/reference_oracle.h on `model` loaded in this process.
std::vector<double> OracleOutputs(const Model& model, const v1::Sequence& input,
                                  int64_t first_position = 0);

// ---- Calls ----

std::unique_ptr<AarenStub> NewAarenStub(const ServerProcess& server);

// A blocking call's outcome.
template <typename Response>
struct CallResult {
  grpc::Status status;
  Response response;
  bool ok() const { return status.ok(); }
};

inline constexpr std::chrono::seconds kCallTimeout{120};

// Calls a unary method of the stub with a deadline of `timeout`.
template <typename Request, typename Response>
CallResult<Response> Call(AarenStub& stub,
                          grpc::Status (AarenStub::*method)(grpc::ClientContext*, const Request&,
                                                            Response*),
                          const Request& request,
                          std::chrono::milliseconds timeout = kCallTimeout) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout);
  CallResult<Response> result;
  result.status = (stub.*method)(&context, request, &result.response);
  return result;
}

// "INVALID_ARGUMENT: input.tokens[2]: ..." for test messages.
std::string StatusString(const grpc::Status& status);
const char* CodeName(grpc::StatusCode code);

// gtest assertion: `status` has `code` and its message contains every one of `needles`.
::testing::AssertionResult HasStatus(const grpc::Status& status, grpc::StatusCode code,
                                     const std::vector<std::string>& needles = {});

// The model's entry from ListModels (fails the test and returns an empty one if absent).
v1::ModelInfo GetModelInfo(AarenStub& stub, const std::string& model);

// ---- Inputs ----

// `length` random tokens ids in [0, vocab_size) or `length` rows of N(0, 1) features.
v1::Sequence RandomInput(const v1::ModelInfo& model, int64_t length, std::mt19937_64& rng);
int64_t InputLength(const v1::ModelInfo& model, const v1::Sequence& sequence);
// Tokens/rows [begin, end) of `sequence`.
v1::Sequence SliceInput(const v1::ModelInfo& model, const v1::Sequence& sequence, int64_t begin,
                        int64_t end);
// `a` followed by `b`.
v1::Sequence ConcatInput(const v1::Sequence& a, const v1::Sequence& b);

// ---- Outputs ----

std::vector<float> ToVector(const google::protobuf::RepeatedField<float>& values);
// Rows [begin, end) of a row-major [n, dim] matrix.
std::vector<float> Rows(const std::vector<float>& matrix, int64_t dim, int64_t begin, int64_t end);
// max_i |actual_i - expected_i| / max_i |expected_i|; +inf on a size mismatch.
double RelativeError(const std::vector<float>& actual, const std::vector<float>& expected);
double RelativeError(const std::vector<float>& actual, const std::vector<double>& expected);

// ---- Sessions ----

// Score ALL of one sequence (the single-request reference for every other path).
std::vector<float> ScoreAll(AarenStub& stub, const std::string& model, const v1::Sequence& input);

// Creates a session (server-made id unless `session_id`), optionally with a prefix. Fails the
// test and returns "" on error.
std::string CreateSession(AarenStub& stub, const std::string& model,
                          const v1::Sequence& prefix = {}, const std::string& session_id = "");

// The session's exported snapshot with its timestamp cleared, serialised: equal strings mean
// equal model, position, state and last output. Fails the test on error.
std::string SnapshotBytes(AarenStub& stub, const std::string& session_id);

// ---- The process from outside ----

// A loopback TCP port that was free a moment ago (bind to 0, read it, close).
int FreePort();
// GET http://127.0.0.1:`port`/metrics: the body, or "" (and a test failure) on error.
std::string ScrapeMetrics(int port);
// The value of the series `name{labels}` (labels exactly as exposed, e.g. `rpc="Score",code="OK"`)
// in a scrape; NaN when absent.
double MetricValue(const std::string& scrape, const std::string& name, const std::string& labels);
// The process's resident set size in bytes (/proc/PID/status VmRSS); -1 if unreadable.
int64_t ResidentBytes(pid_t pid);

// ---- A server per test suite ----

// Base fixture for tests that share one server per test suite. `Derived` provides
// `static ServerFlags Flags()` (called once, in SetUpTestSuite).
template <typename Derived>
class SharedServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto started = ServerProcess::Start(Derived::Flags());
    if (!started.ok()) {
      ADD_FAILURE() << "cannot start aaren-server: " << started.status();
      return;
    }
    server_ = started->release();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(server_, nullptr) << "aaren-server did not start (see above)";
    ASSERT_TRUE(server_->Running()) << "aaren-server is no longer running";
    stub_ = NewAarenStub(*server_);
  }
  void TearDown() override {
    if (server_ != nullptr) {
      EXPECT_TRUE(server_->Running()) << "aaren-server died during the test";
    }
  }
  AarenStub& stub() { return *stub_; }

  static inline ServerProcess* server_ = nullptr;
  std::unique_ptr<AarenStub> stub_;
};

// ---- Stream ----

// A synchronous bidirectional Stream: Open() first, then one Append() per message.
class StreamClient {
 public:
  // `session_id`: sent as metadata aaren-session-id (proxies hash on it) when not empty.
  explicit StreamClient(AarenStub& stub,
                        std::chrono::milliseconds timeout = std::chrono::seconds(300),
                        const std::string& session_id = "");
  ~StreamClient();  // cancels if not finished

  // Sends the open message and reads the Session reply; nullopt when the stream ended instead
  // (Finish() then has the status).
  std::optional<v1::Session> Open(const v1::OpenSession& open);
  // Sends an append and reads its reply; nullopt when the stream ended instead.
  std::optional<v1::AppendResponse> Append(const v1::AppendRequest& append);
  // Writes a message without reading (to test the server's handling of what follows).
  bool Write(const v1::StreamRequest& request);
  bool Read(v1::StreamResponse* response);
  // Half-closes and returns the final status.
  grpc::Status Finish();
  // The same for a stream that broke: replies still buffered are dropped, not test failures.
  grpc::Status FinishBroken();
  // Drops the stream as a crashing client would: cancels the call without finishing it.
  void Cancel();

  grpc::ClientContext& context() { return context_; }

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::StreamRequest, v1::StreamResponse>> stream_;
  bool finished_ = false;
  bool writes_done_ = false;
};

}  // namespace aaren::testing

#endif  // AAREN_TESTS_SERVER_E2E_SUPPORT_H_
