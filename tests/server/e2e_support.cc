// SPDX-License-Identifier: Apache-2.0
#include "tests/server/e2e_support.h"

#include "client/session_routing.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>

#include "absl/strings/str_cat.h"
#include "core/model.h"
#include "core/safetensors.h"
#include "tests/reference_oracle.h"
#include "tests/test_models.h"

namespace aaren::testing {

std::filesystem::path SourceDir() {
  const char* env = std::getenv("AAREN_SOURCE_DIR");
  if (env != nullptr && *env != '\0') return env;
  return AAREN_TEST_SOURCE_DIR;  // compile definition from tests/server/CMakeLists.txt
}

std::filesystem::path DemoModelDir(const std::string& name) {
  return SourceDir() / "models" / name;
}

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "aaren-e2e-XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp failed";
    return;
  }
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  if (!path_.empty()) std::filesystem::remove_all(path_, ec);
}

absl::StatusOr<std::filesystem::path> WriteRandomModelDir(const std::filesystem::path& parent,
                                                          const std::string& name,
                                                          const ModelConfig& config, uint64_t seed,
                                                          RandomModelOptions options) {
  const std::filesystem::path dir = parent / name;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("mkdir ", dir.string(), ": ", ec.message()));
  {
    std::ofstream out(dir / "config.json");
    out << ModelConfigToJson(config);
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", dir.string()));
  }
  const std::map<std::string, Tensor> tensors = RandomTensors(config, seed, options);
  std::vector<NamedTensor> named;
  for (const auto& [tensor_name, shape] : ExpectedTensors(config)) {
    named.push_back({tensor_name, &tensors.at(tensor_name)});
  }
  absl::Status written = WriteSafetensors(dir / "model.safetensors", named);
  if (!written.ok()) return written;
  return dir;
}

std::vector<double> OracleOutputs(const Model& model, const v1::Sequence& input,
                                  int64_t first_position) {
  Sequence sequence;
  sequence.tokens.assign(input.tokens().begin(), input.tokens().end());
  sequence.features.assign(input.features().begin(), input.features().end());
  const ModelConfig& config = model.config();
  sequence.length = config.input_kind == InputKind::kTokens
                        ? static_cast<int64_t>(sequence.tokens.size())
                        : static_cast<int64_t>(sequence.features.size()) / config.n_features;
  return ReferenceForward(model, sequence, first_position);
}

std::unique_ptr<AarenStub> NewAarenStub(const ServerProcess& server) {
  return v1::Aaren::NewStub(server.NewChannel());
}

const char* CodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "?";
  }
}

std::string StatusString(const grpc::Status& status) {
  return absl::StrCat(CodeName(status.error_code()), ": ", status.error_message());
}

::testing::AssertionResult HasStatus(const grpc::Status& status, grpc::StatusCode code,
                                     const std::vector<std::string>& needles) {
  if (status.error_code() != code) {
    return ::testing::AssertionFailure()
           << "expected " << CodeName(code) << ", got " << StatusString(status);
  }
  for (const std::string& needle : needles) {
    if (status.error_message().find(needle) == std::string::npos) {
      return ::testing::AssertionFailure()
             << "status " << StatusString(status) << " has the right code but its message lacks \""
             << needle << "\"";
    }
  }
  return ::testing::AssertionSuccess();
}

v1::ModelInfo GetModelInfo(AarenStub& stub, const std::string& model) {
  auto listed = Call(stub, &AarenStub::ListModels, v1::ListModelsRequest());
  EXPECT_TRUE(listed.ok()) << StatusString(listed.status);
  for (const v1::ModelInfo& info : listed.response.models()) {
    if (info.name() == model) return info;
  }
  ADD_FAILURE() << "ListModels has no model " << model;
  return v1::ModelInfo();
}

v1::Sequence RandomInput(const v1::ModelInfo& model, int64_t length, std::mt19937_64& rng) {
  v1::Sequence sequence;
  if (model.input_kind() == "tokens") {
    std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(model.vocab_size()) - 1);
    for (int64_t i = 0; i < length; ++i) sequence.add_tokens(token(rng));
  } else {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (int64_t i = 0; i < length * model.n_features(); ++i) sequence.add_features(normal(rng));
  }
  return sequence;
}

int64_t InputLength(const v1::ModelInfo& model, const v1::Sequence& sequence) {
  if (model.input_kind() == "tokens") return sequence.tokens_size();
  return model.n_features() == 0 ? 0 : sequence.features_size() / model.n_features();
}

v1::Sequence SliceInput(const v1::ModelInfo& model, const v1::Sequence& sequence, int64_t begin,
                        int64_t end) {
  v1::Sequence slice;
  if (model.input_kind() == "tokens") {
    for (int64_t i = begin; i < end; ++i) slice.add_tokens(sequence.tokens(static_cast<int>(i)));
  } else {
    const int64_t f = model.n_features();
    for (int64_t i = begin * f; i < end * f; ++i) {
      slice.add_features(sequence.features(static_cast<int>(i)));
    }
  }
  return slice;
}

v1::Sequence ConcatInput(const v1::Sequence& a, const v1::Sequence& b) {
  v1::Sequence out = a;
  out.mutable_tokens()->Add(b.tokens().begin(), b.tokens().end());
  out.mutable_features()->Add(b.features().begin(), b.features().end());
  return out;
}

std::vector<float> ToVector(const google::protobuf::RepeatedField<float>& values) {
  return std::vector<float>(values.begin(), values.end());
}

std::vector<float> Rows(const std::vector<float>& matrix, int64_t dim, int64_t begin, int64_t end) {
  const size_t b = static_cast<size_t>(std::min<int64_t>(begin * dim, matrix.size()));
  const size_t e = static_cast<size_t>(std::min<int64_t>(end * dim, matrix.size()));
  return std::vector<float>(matrix.begin() + b, matrix.begin() + e);
}

double RelativeError(const std::vector<float>& actual, const std::vector<double>& expected) {
  if (actual.size() != expected.size() || actual.empty()) {
    return actual.size() == expected.size() ? 0.0 : std::numeric_limits<double>::infinity();
  }
  double max_diff = 0.0, max_ref = 0.0;
  for (size_t i = 0; i < actual.size(); ++i) {
    if (!std::isfinite(actual[i])) return std::numeric_limits<double>::infinity();
    max_diff = std::max(max_diff, std::abs(static_cast<double>(actual[i]) - expected[i]));
    max_ref = std::max(max_ref, std::abs(expected[i]));
  }
  return max_ref > 0 ? max_diff / max_ref : max_diff;
}

double RelativeError(const std::vector<float>& actual, const std::vector<float>& expected) {
  return RelativeError(actual, std::vector<double>(expected.begin(), expected.end()));
}

std::vector<float> ScoreAll(AarenStub& stub, const std::string& model, const v1::Sequence& input) {
  v1::ScoreRequest request;
  request.set_model(model);
  *request.add_sequences() = input;
  request.set_output_mode(v1::OUTPUT_MODE_ALL);
  auto scored = Call(stub, &AarenStub::Score, request);
  EXPECT_TRUE(scored.ok()) << StatusString(scored.status);
  if (!scored.ok() || scored.response.results_size() != 1) return {};
  return ToVector(scored.response.results(0).outputs());
}

std::string CreateSession(AarenStub& stub, const std::string& model, const v1::Sequence& prefix,
                          const std::string& session_id) {
  v1::CreateSessionRequest request;
  request.set_model(model);
  request.set_session_id(session_id);
  *request.mutable_prefix() = prefix;
  auto created = Call(stub, &AarenStub::CreateSession, request);
  EXPECT_TRUE(created.ok()) << StatusString(created.status);
  return created.ok() ? created.response.session_id() : std::string();
}

std::string SnapshotBytes(AarenStub& stub, const std::string& session_id) {
  v1::ExportSessionRequest request;
  request.set_session_id(session_id);
  auto exported = Call(stub, &AarenStub::ExportSession, request);
  EXPECT_TRUE(exported.ok()) << session_id << ": " << StatusString(exported.status);
  v1::SessionSnapshot snapshot = exported.response.snapshot();
  snapshot.clear_exported_unix_ms();
  std::string bytes;
  EXPECT_TRUE(snapshot.SerializeToString(&bytes));
  return bytes;
}

StreamClient::StreamClient(AarenStub& stub, std::chrono::milliseconds timeout,
                           const std::string& session_id) {
  context_.set_deadline(std::chrono::system_clock::now() + timeout);
  client::AddSessionIdMetadata(context_, session_id);
  stream_ = stub.Stream(&context_);
}

StreamClient::~StreamClient() {
  if (!finished_) Cancel();
}

std::optional<v1::Session> StreamClient::Open(const v1::OpenSession& open) {
  v1::StreamRequest request;
  *request.mutable_open() = open;
  v1::StreamResponse response;
  if (!Write(request) || !Read(&response)) return std::nullopt;
  EXPECT_TRUE(response.has_session()) << "reply to open: " << response.DebugString();
  return response.session();
}

std::optional<v1::AppendResponse> StreamClient::Append(const v1::AppendRequest& append) {
  v1::StreamRequest request;
  *request.mutable_append() = append;
  v1::StreamResponse response;
  if (!Write(request) || !Read(&response)) return std::nullopt;
  EXPECT_TRUE(response.has_append()) << "reply to append: " << response.DebugString();
  return response.append();
}

bool StreamClient::Write(const v1::StreamRequest& request) { return stream_->Write(request); }

bool StreamClient::Read(v1::StreamResponse* response) { return stream_->Read(response); }

grpc::Status StreamClient::FinishBroken() {
  if (!writes_done_) {
    stream_->WritesDone();
    writes_done_ = true;
  }
  v1::StreamResponse extra;
  while (stream_->Read(&extra)) {
  }
  finished_ = true;
  return stream_->Finish();
}

grpc::Status StreamClient::Finish() {
  if (!writes_done_) {
    stream_->WritesDone();
    writes_done_ = true;
  }
  v1::StreamResponse extra;
  while (stream_->Read(&extra)) {
    ADD_FAILURE() << "unexpected stream message after the last append: " << extra.DebugString();
  }
  finished_ = true;
  return stream_->Finish();
}

void StreamClient::Cancel() {
  context_.TryCancel();
  if (!finished_) {
    v1::StreamResponse ignored;
    while (stream_->Read(&ignored)) {
    }
    (void)stream_->Finish();
    finished_ = true;
  }
}

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  EXPECT_NE(port, 0) << "no free port";
  return port;
}

std::string ScrapeMetrics(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    ADD_FAILURE() << "cannot connect to the metrics port " << port;
    return "";
  }
  const std::string request = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  (void)!write(fd, request.data(), request.size());
  std::string response;
  char buf[65536];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;)
    response.append(buf, static_cast<size_t>(n));
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  if (body == std::string::npos) {
    ADD_FAILURE() << "no HTTP response from the metrics port";
    return "";
  }
  return response.substr(body + 4);
}

double MetricValue(const std::string& scrape, const std::string& name, const std::string& labels) {
  const std::string key = labels.empty() ? name + " " : name + "{" + labels + "} ";
  for (size_t p = 0; p < scrape.size();) {
    const size_t end = scrape.find('\n', p);
    const std::string line = scrape.substr(p, end == std::string::npos ? end : end - p);
    if (line.rfind(key, 0) == 0) return std::stod(line.substr(key.size()));
    if (end == std::string::npos) break;
    p = end + 1;
  }
  return std::nan("");
}

int64_t ResidentBytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  return -1;
}

}  // namespace aaren::testing
