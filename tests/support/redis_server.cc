// SPDX-License-Identifier: Apache-2.0
#include "tests/support/redis_server.h"

#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace aaren::testing {
namespace {

int FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

std::string ReplyText(const redisReply* r) {
  switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
      return std::string(r->str, r->len);
    case REDIS_REPLY_ERROR:
      return std::string(r->str, r->len);
    case REDIS_REPLY_INTEGER:
      return absl::StrCat(r->integer);
    case REDIS_REPLY_NIL:
      return "(nil)";
    case REDIS_REPLY_ARRAY: {
      std::vector<std::string> parts;
      for (size_t i = 0; i < r->elements; ++i) parts.push_back(ReplyText(r->element[i]));
      return absl::StrJoin(parts, "\n");
    }
  }
  return "";
}

}  // namespace

absl::StatusOr<std::unique_ptr<RedisServer>> RedisServer::Start(const RedisOptions& options) {
  std::unique_ptr<RedisServer> r(new RedisServer());
  r->options_ = options;
  r->port_ = FreeLoopbackPort();
  if (r->port_ == 0) return absl::InternalError("no free loopback port");
  if (absl::Status st = r->Spawn(); !st.ok()) return st;
  return r;
}

absl::Status RedisServer::Spawn() {
  std::vector<std::string> args = {
      "redis-server", "--bind", "127.0.0.1", "--port", absl::StrCat(port_), "--dir", options_.dir,
      "--save", "", "--appendonly", options_.appendonly ? "yes" : "no", "--appendfsync",
      options_.appendfsync, "--daemonize", "no", "--logfile", "", "--protected-mode", "no",
      // DEBUG SLEEP: tests stall Redis with a command waiting.
      "--enable-debug-command", "local"};
  if (!options_.password.empty()) {
    args.push_back("--requirepass");
    args.push_back(options_.password);
  }
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string log = options_.dir + "/redis.log";
  const int log_fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) return absl::InternalError(absl::StrCat("open ", log, ": ", errno));
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    close(log_fd);
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
    execvp("redis-server", argv.data());
    const char msg[] = "redis_server: execvp redis-server failed (apt-get install redis-server)\n";
    (void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
    _exit(127);
  }
  close(log_fd);
  pid_ = pid;
  return WaitReady(std::chrono::seconds(20));
}

absl::Status RedisServer::WaitReady(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (!Running()) {
      return absl::UnavailableError(absl::StrCat("redis-server exited:\n", Log()));
    }
    absl::StatusOr<std::string> pong = Command({"PING"});
    if (pong.ok() && *pong == "PONG") return absl::OkStatus();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return absl::UnavailableError(absl::StrCat("redis-server did not answer PING:\n", Log()));
}

RedisServer::~RedisServer() {
  if (pid_ > 0 && Running()) Kill(SIGTERM);
}

std::string RedisServer::spec() const { return absl::StrCat("redis://127.0.0.1:", port_, "/0"); }

bool RedisServer::Running() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

void RedisServer::Kill(int signal) {
  if (pid_ <= 0) return;
  kill(pid_, signal);
  for (int i = 0; i < 500 && Running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (Running()) {
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
  }
  pid_ = -1;
}

absl::Status RedisServer::Restart() {
  if (Running()) return absl::FailedPreconditionError("redis-server is still running");
  return Spawn();
}

absl::StatusOr<std::string> RedisServer::Command(const std::vector<std::string>& args) {
  timeval tv{2, 0};
  redisContext* c = redisConnectWithTimeout("127.0.0.1", port_, tv);
  if (c == nullptr || c->err != 0) {
    std::string why = c != nullptr ? c->errstr : "out of memory";
    if (c != nullptr) redisFree(c);
    return absl::UnavailableError(why);
  }
  redisSetTimeout(c, tv);
  auto run = [&](const std::vector<std::string>& a) -> absl::StatusOr<std::string> {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const std::string& s : a) {
      argv.push_back(s.data());
      lens.push_back(s.size());
    }
    auto* r = static_cast<redisReply*>(
        redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lens.data()));
    if (r == nullptr) return absl::UnavailableError(c->errstr);
    std::string text = ReplyText(r);
    freeReplyObject(r);
    return text;
  };
  absl::StatusOr<std::string> out = std::string();
  if (!options_.password.empty()) out = run({"AUTH", options_.password});
  if (out.ok()) out = run(args);
  redisFree(c);
  return out;
}

std::string RedisServer::Log() const {
  std::ifstream in(options_.dir + "/redis.log");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace aaren::testing
