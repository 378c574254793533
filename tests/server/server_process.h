// SPDX-License-Identifier: Apache-2.0
// ServerProcess: runs the real `aaren-server` binary as a child process for end-to-end tests.
//
// Start() forks and execs the binary named by the AAREN_SERVER environment variable with
// `--host 127.0.0.1 --port 0 --port_file <tmp>/port` plus the caller's flags, waits for the port
// file (the server writes it once it serves) and then for the standard gRPC health service to
// answer SERVING. The child's stdout and stderr go to a log file that Log() returns; tests print
// it when something fails. The destructor sends SIGTERM and waits (SIGKILL after a timeout), so
// a test never leaves a server behind; the child also gets SIGKILL if the test process dies.
//
// The child is tied to the thread that calls Start() (PR_SET_PDEATHSIG fires when that thread
// exits), so start servers from the test's main thread, as SetUpTestSuite and TEST bodies do.
//
// Thread-safety: Start() and the destructor from one thread; address(), NewChannel() and Log()
// may be called from any thread while the process object lives.
#ifndef AAREN_TESTS_SERVER_SERVER_PROCESS_H_
#define AAREN_TESTS_SERVER_SERVER_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/channel.h"
#include "grpcpp/security/credentials.h"

namespace aaren::testing {

struct ServerFlags {
  std::vector<std::string> model_dirs;  // one --model_dir each
  // Further flags, passed as given, e.g. {"--max_sessions", "8", "--threads", "2"}.
  std::vector<std::string> extra;
  // How long to wait for the port file and then for the health service to say SERVING.
  std::chrono::seconds start_timeout{60};
  // Credentials of NewChannel() and the health check: null for plaintext, TLS (and a client
  // certificate) for a server started with --tls_cert_file.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
};

class ServerProcess {
 public:
  // Starts the server and waits until it serves. FAILED_PRECONDITION when AAREN_SERVER is unset
  // or not executable; UNAVAILABLE (with the server's log in the message) when the server exits
  // or does not become healthy in time.
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(const ServerFlags& flags);

  // SIGTERM, then waits up to 30 s for the exit, then SIGKILL. Prints the log to stderr when a
  // test of this program has failed, or when the server did not exit with status 0.
  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  int port() const { return port_; }
  std::string address() const;  // "127.0.0.1:<port>"
  pid_t pid() const { return pid_; }

  // A fresh channel to the server (its own TCP connection) that accepts messages of any size,
  // with ServerFlags::credentials, or with `credentials` when given.
  std::shared_ptr<grpc::Channel> NewChannel(
      std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr) const;

  // Everything the server wrote to stdout and stderr so far.
  std::string Log() const;

  // True while the child has not exited (reaps it when it has).
  bool Running();
  // Sends `signal` to the server.
  void Signal(int signal);
  // Waits up to `timeout` for the server to exit. Returns the raw waitpid status, or nullopt if
  // it is still running.
  std::optional<int> WaitForExit(std::chrono::milliseconds timeout);

  // Checks the health service once: true when it answers SERVING.
  bool HealthServing(std::chrono::milliseconds timeout) const;

 private:
  ServerProcess() = default;

  pid_t pid_ = -1;
  int port_ = 0;
  std::shared_ptr<grpc::ChannelCredentials> credentials_;
  std::optional<int> exit_status_;
  std::filesystem::path dir_;  // temp dir: port file and log
  std::filesystem::path log_path_;
};

// "exit status 0", "killed by signal 9", ... for a waitpid status.
std::string DescribeExit(int wait_status);

}  // namespace aaren::testing

#endif  // AAREN_TESTS_SERVER_SERVER_PROCESS_H_
