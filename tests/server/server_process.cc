// SPDX-License-Identifier: Apache-2.0
#include "tests/server/server_process.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace aaren::testing {
namespace {

using Clock = std::chrono::steady_clock;

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// The port once the file holds a complete number (the server may still be writing it).
std::optional<int> ReadPortFile(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::nullopt;
  std::string text = ReadFile(path);
  absl::string_view trimmed = absl::StripAsciiWhitespace(text);
  int port = 0;
  if (trimmed.empty() || !absl::SimpleAtoi(trimmed, &port) || port <= 0 || port > 65535) {
    return std::nullopt;
  }
  // A second read that agrees rules out a half-written file.
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  if (absl::StripAsciiWhitespace(ReadFile(path)) != trimmed) return std::nullopt;
  return port;
}

}  // namespace

std::string DescribeExit(int wait_status) {
  if (WIFEXITED(wait_status)) return absl::StrCat("exit status ", WEXITSTATUS(wait_status));
  if (WIFSIGNALED(wait_status)) {
    return absl::StrCat("killed by signal ", WTERMSIG(wait_status), " (",
                        strsignal(WTERMSIG(wait_status)), ")");
  }
  return absl::StrCat("wait status ", wait_status);
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(const ServerFlags& flags) {
  const char* binary = std::getenv("AAREN_SERVER");
  if (binary == nullptr || *binary == '\0') {
    return absl::FailedPreconditionError(
        "AAREN_SERVER is not set: it must name the aaren-server binary (CTest sets it)");
  }
  if (access(binary, X_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("AAREN_SERVER=", binary, " is not an executable file"));
  }

  std::unique_ptr<ServerProcess> server(new ServerProcess());
  std::string dir_template =
      (std::filesystem::temp_directory_path() / "aaren-server-test-XXXXXX").string();
  if (mkdtemp(dir_template.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp: ", std::strerror(errno)));
  }
  server->dir_ = dir_template;
  server->log_path_ = server->dir_ / "server.log";
  const std::filesystem::path port_file = server->dir_ / "port";

  // No metrics endpoint and no REST API: parallel test servers would collide on their fixed
  // default ports (a test that wants one passes its own flag later, which wins).
  std::vector<std::string> args = {
      binary,           "--host", "127.0.0.1",   "--port", "0", "--port_file", port_file.string(),
      "--metrics_port", "0",      "--http_port", "0"};
  for (const std::string& dir : flags.model_dirs) {
    args.push_back("--model_dir");
    args.push_back(dir);
  }
  args.insert(args.end(), flags.extra.begin(), flags.extra.end());
  // Extra flags for every test server, e.g. AAREN_TEST_SERVER_ARGS=--device=cuda.
  if (const char* extra = std::getenv("AAREN_TEST_SERVER_ARGS"); extra != nullptr) {
    for (absl::string_view a : absl::StrSplit(extra, ' ', absl::SkipEmpty())) args.emplace_back(a);
  }
  // Everything the child needs is prepared before fork: only async-signal-safe calls after it.
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string log_path = server->log_path_.string();
  const int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log_fd < 0) return absl::InternalError(absl::StrCat("open ", log_path, ": ", errno));
  {
    std::string command = absl::StrCat(absl::StrJoin(args, " "), "\n");
    (void)!write(log_fd, command.data(), command.size());
  }
  const pid_t parent = getpid();

  const pid_t pid = fork();
  if (pid < 0) {
    close(log_fd);
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  }
  if (pid == 0) {
    // Child: die with the test process, log to the file, become the server.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
    const int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    execv(binary, argv.data());
    const char msg[] = "server_process: execv failed\n";
    (void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
    _exit(127);
  }
  close(log_fd);
  server->pid_ = pid;
  server->credentials_ = flags.credentials;

  const auto deadline = Clock::now() + flags.start_timeout;
  auto failure = [&](absl::string_view what) {
    return absl::UnavailableError(absl::StrCat("aaren-server ", what, "\n---- server log ----\n",
                                               server->Log(), "---- end of server log ----"));
  };
  // 1. The port file.
  while (true) {
    if (!server->Running()) {
      return failure(absl::StrCat("exited before serving: ", DescribeExit(*server->exit_status_)));
    }
    if (std::optional<int> port = ReadPortFile(port_file)) {
      server->port_ = *port;
      break;
    }
    if (Clock::now() > deadline) return failure("wrote no port file in time");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // 2. The health service.
  while (!server->HealthServing(std::chrono::milliseconds(1000))) {
    if (!server->Running()) {
      return failure(absl::StrCat("exited before serving: ", DescribeExit(*server->exit_status_)));
    }
    if (Clock::now() > deadline) return failure("health service did not say SERVING in time");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return server;
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0 && Running()) {
    Signal(SIGTERM);
    if (!WaitForExit(std::chrono::seconds(30))) {
      std::cerr << "server_process: aaren-server (pid " << pid_
                << ") did not exit 30 s after SIGTERM; sending SIGKILL\n";
      kill(pid_, SIGKILL);
      int status = 0;
      if (waitpid(pid_, &status, 0) == pid_) exit_status_ = status;
    }
  }
  const bool clean_exit =
      exit_status_ && WIFEXITED(*exit_status_) && WEXITSTATUS(*exit_status_) == 0;
  const ::testing::UnitTest* unit = ::testing::UnitTest::GetInstance();
  if (!clean_exit || unit->failed_test_count() > 0 || unit->ad_hoc_test_result().Failed()) {
    std::cerr << "---- aaren-server log (" << log_path_.string() << ", "
              << (exit_status_ ? DescribeExit(*exit_status_) : std::string("not reaped"))
              << ") ----\n"
              << Log() << "---- end of aaren-server log ----\n";
  }
  std::error_code ec;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
}

std::string ServerProcess::address() const { return absl::StrCat("127.0.0.1:", port_); }

std::shared_ptr<grpc::Channel> ServerProcess::NewChannel(
    std::shared_ptr<grpc::ChannelCredentials> credentials) const {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  // A distinct argument set gives each channel its own subchannel (TCP connection).
  static std::atomic<int> channel_counter{0};
  args.SetInt("aaren.test.channel_id", channel_counter.fetch_add(1));
  if (credentials == nullptr) credentials = credentials_;
  if (credentials == nullptr) credentials = grpc::InsecureChannelCredentials();
  return grpc::CreateCustomChannel(address(), credentials, args);
}

std::string ServerProcess::Log() const { return ReadFile(log_path_); }

bool ServerProcess::Running() {
  if (exit_status_) return false;
  int status = 0;
  const pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    exit_status_ = status;
    return false;
  }
  return true;
}

void ServerProcess::Signal(int signal) {
  if (!exit_status_) kill(pid_, signal);
}

std::optional<int> ServerProcess::WaitForExit(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Running()) {
    if (Clock::now() > deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return exit_status_;
}

bool ServerProcess::HealthServing(std::chrono::milliseconds timeout) const {
  auto stub = grpc::health::v1::Health::NewStub(NewChannel());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout);
  context.set_wait_for_ready(true);
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, request, &response);
  return status.ok() && response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
}

}  // namespace aaren::testing
