// SPDX-License-Identifier: Apache-2.0
// RedisServer: a real redis-server (Debian's) as a child process on a free loopback port, for
// tests of the Redis state store and of replicas sharing it.
//
// Start() picks a free port, runs `redis-server` with its data in `dir` (AOF on or off,
// optional requirepass), and waits until it answers PING. Kill(SIGKILL) and Restart() simulate
// a crash and a restart on the same port and directory. Command() runs one Redis command
// through hiredis (FLUSHALL, CONFIG SET, PTTL ...). The destructor stops the server (SIGTERM,
// then SIGKILL); the child also dies with the thread that started it (PR_SET_PDEATHSIG), so
// start servers from a test's main thread.
//
// Thread-safety: one thread at a time.
#ifndef AAREN_TESTS_SUPPORT_REDIS_SERVER_H_
#define AAREN_TESTS_SUPPORT_REDIS_SERVER_H_

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace aaren::testing {

struct RedisOptions {
  std::string dir;  // data directory (must exist); the log goes to dir/redis.log
  bool appendonly = false;
  std::string appendfsync = "always";
  std::string password;  // requirepass ("" = none)

  RedisOptions& WithAppendOnly() {
    appendonly = true;
    return *this;
  }
  RedisOptions& WithPassword(std::string p) {
    password = std::move(p);
    return *this;
  }
};
// Options for a server with its data in `dir`.
inline RedisOptions RedisIn(std::string dir) {
  RedisOptions o;
  o.dir = std::move(dir);
  return o;
}

class RedisServer {
 public:
  static absl::StatusOr<std::unique_ptr<RedisServer>> Start(const RedisOptions& options);
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  int port() const { return port_; }
  // "redis://127.0.0.1:PORT/0".
  std::string spec() const;
  bool Running();
  // Sends `signal` and waits for the exit.
  void Kill(int signal);
  // Starts redis-server again on the same port and directory (after Kill).
  absl::Status Restart();
  // One command (with AUTH when a password is set); the reply as text: a status or bulk string,
  // an integer in decimal, "(nil)", "ERR ..." for an error, elements joined by '\n' for arrays.
  absl::StatusOr<std::string> Command(const std::vector<std::string>& args);
  std::string Log() const;

 private:
  RedisServer() = default;
  absl::Status Spawn();
  absl::Status WaitReady(std::chrono::milliseconds timeout);

  RedisOptions options_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace aaren::testing

#endif  // AAREN_TESTS_SUPPORT_REDIS_SERVER_H_
