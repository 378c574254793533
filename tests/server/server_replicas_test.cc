// SPDX-License-Identifier: Apache-2.0
// Replicas sharing sessions through Redis, with real processes on loopback: a redis-server (AOF,
// appendfsync always), three aaren-server replicas (--state_store=redis://... --durability=ack)
// and Debian's nginx with deploy/nginx's config (hash $http_aaren_session_id consistent).
// Sessions move between replicas with outputs equal to the float64 oracle over the whole
// history; two replicas appending to one session race safely; kill -9 of a replica and a
// rolling restart of all three under 64 streaming clients through nginx lose nothing
// acknowledged; Redis going away fails calls with UNAVAILABLE naming the store and service
// resumes when it returns.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/session_routing.h"
#include "core/model.h"
#include "engine/store/session_record.h"
#include "grpcpp/create_channel.h"
#include "inference/grpc_service.grpc.pb.h"
#include "tests/server/e2e_support.h"
#include "tests/server/session_clients.h"
#include "tests/support/redis_server.h"

namespace aaren::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

constexpr char kLm[] = "demo-lm";

// nginx in the foreground (daemon off) with a config rendered by deploy/nginx/render-config.sh.
class Nginx {
 public:
  explicit Nginx(fs::path prefix) : prefix_(std::move(prefix)), port_(FreePort()) {
    fs::create_directories(prefix_);
  }
  ~Nginx() {
    if (pid_ > 0) {
      kill(pid_, SIGQUIT);
      int st = 0;
      waitpid(pid_, &st, 0);
    }
  }
  int port() const { return port_; }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

  // Writes the config for `upstreams`; starts nginx the first time, reloads it (SIGHUP) after.
  ::testing::AssertionResult Route(const std::vector<std::string>& upstreams) {
    const fs::path conf = prefix_ / "nginx.conf";
    const std::string render =
        absl::StrCat("NGINX_PREFIX=", prefix_.string(), " NGINX_MAX_FAILS=1 NGINX_FAIL_TIMEOUT=2s ",
                     (SourceDir() / "deploy/nginx/render-config.sh").string(), " ", port_, " ",
                     absl::StrJoin(upstreams, " "), " > ", conf.string());
    if (std::system(render.c_str()) != 0) return ::testing::AssertionFailure() << render;
    if (pid_ > 0) {
      kill(pid_, SIGHUP);
      std::this_thread::sleep_for(std::chrono::milliseconds(300));  // new workers take over
      return ::testing::AssertionSuccess();
    }
    const std::string prefix = prefix_.string(), conf_path = conf.string();
    const pid_t parent = getpid();
    pid_ = fork();
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
      execlp("nginx", "nginx", "-p", prefix.c_str(), "-c", conf_path.c_str(), nullptr);
      _exit(127);
    }
    // Ready once the port accepts gRPC: any answer from a replica through it.
    grpc::Status last;
    for (int i = 0; i < 100; ++i) {
      // A fresh channel each time: a refused first connect would put one channel in backoff.
      auto stub = v1::Aaren::NewStub(NewChannel());
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
      v1::ListModelsResponse r;
      last = stub->ListModels(&context, v1::ListModelsRequest(), &r);
      if (last.ok()) return ::testing::AssertionSuccess();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return ::testing::AssertionFailure()
           << "nginx did not proxy in time (" << StatusString(last) << "); error.log:\n"
           << ReadFile(prefix_ / "logs/error.log") << "\nconfig:\n"
           << ReadFile(conf);
  }

  std::shared_ptr<grpc::Channel> NewChannel() const {
    grpc::ChannelArguments args;
    static std::atomic<int> n{0};
    args.SetInt("aaren-test-channel", n++);
    return grpc::CreateCustomChannel(address(), grpc::InsecureChannelCredentials(), args);
  }

  static std::string ReadFile(const fs::path& p) {
    std::ifstream in(p);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

 private:
  fs::path prefix_;
  int port_;
  pid_t pid_ = -1;
};

class ReplicasTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model = Model::Load(DemoModelDir(kLm));
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    fs::create_directories(dir_.path() / "redis");
    auto redis = RedisServer::Start(RedisIn((dir_.path() / "redis").string()).WithAppendOnly());
    ASSERT_TRUE(redis.ok()) << redis.status();
    redis_ = *std::move(redis);
    for (int i = 0; i < 3; ++i) {
      replicas_.push_back(StartReplica(i));
      ASSERT_NE(replicas_.back(), nullptr);
    }
    nginx_ = std::make_unique<Nginx>(dir_.path() / "nginx");
    ASSERT_TRUE(nginx_->Route(Addresses()));
  }

  std::unique_ptr<ServerProcess> StartReplica(int i) {
    ServerFlags flags;
    flags.model_dirs = {DemoModelDir(kLm).string()};
    flags.extra = {"--state_store",   redis_->spec(),
                   "--durability",    "ack",
                   "--replica_id",    absl::StrCat("r", i, "-", next_generation_++),
                   "--threads",       "1",
                   "--drain_timeout", "5s"};
    auto s = ServerProcess::Start(flags);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? *std::move(s) : nullptr;
  }

  std::vector<std::string> Addresses() const {
    std::vector<std::string> out;
    for (const auto& r : replicas_) {
      if (r != nullptr) out.push_back(r->address());
    }
    return out;
  }

  // Retries GetSession through `stub` (UNAVAILABLE while a replica goes away) for up to 15 s.
  // NOT_FOUND counts as reachable for a client that was never told its session exists (its
  // Stream open, which creates it, may have died with a replica).
  static bool WaitReachable(AarenStub& stub, const std::string& id, bool may_not_exist) {
    const auto end = Clock::now() + std::chrono::seconds(15);
    while (Clock::now() < end) {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
      client::AddSessionIdMetadata(context, id);
      v1::GetSessionRequest req;
      req.set_session_id(id);
      v1::Session s;
      grpc::Status st = stub.GetSession(&context, req, &s);
      if (st.ok()) return true;
      if (may_not_exist && st.error_code() == grpc::StatusCode::NOT_FOUND) return true;
      EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << id << ": " << StatusString(st);
      if (st.error_code() != grpc::StatusCode::UNAVAILABLE) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  // 64 clients stream through nginx while `disrupt` runs; each client whose stream breaks
  // reconciles (CheckContinues) and streams again. Returns the clients' views (checked at the
  // end) and, for each client whose stream broke after `disrupt`'s mark, the time from the mark
  // to its first acknowledged append afterwards (on another replica); -1 for the others.
  struct LoadResult {
    std::vector<ClientView> views;
    std::vector<double> recovery_seconds;
  };
  LoadResult UnderLoad(const std::function<void(std::atomic<Clock::time_point>&)>& disrupt) {
    constexpr int kClients = 64;
    LoadResult out;
    out.views.resize(kClients);
    out.recovery_seconds.assign(kClients, -1);
    std::atomic<bool> stop{false};
    std::atomic<Clock::time_point> mark{Clock::time_point::max()};
    std::vector<std::thread> clients;
    for (int i = 0; i < kClients; ++i) {
      out.views[i].id = absl::StrCat("c", i);
      clients.emplace_back([&, i] {
        ClientView& v = out.views[i];
        std::mt19937_64 rng(1000 + i);
        auto channel = nginx_->NewChannel();
        auto stub = v1::Aaren::NewStub(channel);
        while (!stop.load()) {
          StreamUntilBroken(channel, v, model_->config().vocab_size, rng(), stop);
          const Clock::time_point m = mark.load();
          if (stop.load()) break;
          // The stream broke: reconcile through the proxy once a replica answers.
          if (!WaitReachable(*stub, v.id, !v.opened)) return;
          if (v.opened) CheckContinues(*stub, *model_, v, rng);
          if (out.recovery_seconds[i] < 0 && m != Clock::time_point::max()) {
            out.recovery_seconds[i] = std::chrono::duration<double>(Clock::now() - m).count();
          }
          if (::testing::Test::HasFailure()) return;
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(800));
    disrupt(mark);
    if (::testing::Test::HasFatalFailure()) stop = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    stop = true;
    for (std::thread& t : clients) t.join();
    // Every session, read through the proxy, continues from exactly what its client was told.
    auto stub = v1::Aaren::NewStub(nginx_->NewChannel());
    std::mt19937_64 rng(7);
    for (ClientView& v : out.views) {
      EXPECT_TRUE(WaitReachable(*stub, v.id, !v.opened)) << v.id;
      if (v.opened) CheckContinues(*stub, *model_, v, rng);
    }
    return out;
  }

  static void Report(const char* what, std::vector<double> s) {
    s.erase(std::remove(s.begin(), s.end(), -1.0), s.end());
    if (s.empty()) return;
    std::sort(s.begin(), s.end());
    std::printf(
        "%s: %zu clients, first acknowledged append after it: min %.3f s, median %.3f s, "
        "max %.3f s\n",
        what, s.size(), s.front(), s[s.size() / 2], s.back());
  }

  TempDir dir_;
  std::shared_ptr<const Model> model_;
  std::unique_ptr<RedisServer> redis_;
  std::vector<std::unique_ptr<ServerProcess>> replicas_;
  std::unique_ptr<Nginx> nginx_;
  int next_generation_ = 0;
};

std::vector<int32_t> RandomTokens(std::mt19937_64& rng, int n, int32_t vocab) {
  std::vector<int32_t> t(n);
  for (int32_t& x : t) x = static_cast<int32_t>(rng() % vocab);
  return t;
}

TEST_F(ReplicasTest, ASessionContinuesOnEveryReplicaDirectAndThroughNginx) {
  std::mt19937_64 rng(1);
  const int32_t vocab = model_->config().vocab_size;
  const int64_t od = model_->config().output_dim;
  std::vector<std::unique_ptr<AarenStub>> stubs;
  for (const auto& r : replicas_) stubs.push_back(NewAarenStub(*r));
  stubs.push_back(v1::Aaren::NewStub(nginx_->NewChannel()));
  ASSERT_FALSE(CreateSession(*stubs[0], kLm, {}, "moving").empty());
  std::vector<int32_t> history;
  // A, B, C directly, then three times through nginx, then A again (its copy is stale).
  for (int step : {0, 1, 2, 3, 3, 3, 0}) {
    std::vector<int32_t> t = RandomTokens(rng, 5, vocab);
    v1::AppendResponse r = UnaryAppend(*stubs[step], "moving", t,
                                       static_cast<int64_t>(history.size()), v1::OUTPUT_MODE_ALL);
    history = Concat(history, t);
    ASSERT_EQ(r.position(), static_cast<int64_t>(history.size())) << "step " << step;
    const std::vector<double> oracle = OracleOutputs(*model_, Tokens(history));
    std::vector<double> tail(oracle.end() - 5 * od, oracle.end());
    EXPECT_LT(RelativeError(ToVector(r.outputs()), tail), kSessionClientTolerance);
  }
  // Every replica reports the same session.
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(PositionOf(*stubs[i], "moving"), static_cast<int64_t>(history.size()));
  }
}

TEST_F(ReplicasTest, TwoReplicasAppendingToOneSessionApplyEachAcknowledgedAppendOnce) {
  auto a = NewAarenStub(*replicas_[0]);
  ASSERT_FALSE(CreateSession(*a, kLm, {}, "raced").empty());
  std::mutex mu;
  std::map<int64_t, std::vector<int32_t>> acked;
  std::atomic<int> aborted{0}, errors{0};
  // The two clients' tokens come from disjoint halves of the vocabulary: an append equal to the
  // other client's append at the same position is a retry of it to the server (it replays, OK),
  // which with 43 tokens happened about once in 50 runs.
  const int32_t half = model_->config().vocab_size / 2;
  auto client = [&](int replica, uint64_t seed) {
    auto stub = NewAarenStub(*replicas_[replica]);
    std::mt19937_64 rng(seed);
    for (int i = 0; i < 30; ++i) {
      std::vector<int32_t> t = RandomTokens(rng, 2, half);
      for (int32_t& x : t) x += replica * half;
      for (int attempt = 0; attempt < 100; ++attempt) {
        v1::GetSessionRequest get;
        get.set_session_id("raced");
        auto pos = Call(*stub, &AarenStub::GetSession, get);
        if (!pos.ok()) {
          ++errors;
          return;
        }
        v1::AppendRequest req;
        req.set_session_id("raced");
        *req.mutable_input() = Tokens(t);
        req.set_expected_position(pos.response.position());
        req.set_output_mode(v1::OUTPUT_MODE_NONE);
        auto r = Call(*stub, &AarenStub::Append, req);
        if (r.ok()) {
          // Nothing ABORTED was applied: so no attempt is a retry of an earlier one.
          EXPECT_FALSE(r.response.replayed()) << "at " << pos.response.position();
          std::lock_guard<std::mutex> lock(mu);
          EXPECT_FALSE(acked.contains(pos.response.position()));
          acked[pos.response.position()] = t;
          break;
        }
        if (r.status.error_code() != grpc::StatusCode::ABORTED) {
          ADD_FAILURE() << StatusString(r.status);
          ++errors;
          return;
        }
        ++aborted;
      }
    }
  };
  std::thread t1(client, 0, 11), t2(client, 1, 22);
  t1.join();
  t2.join();
  ASSERT_EQ(errors.load(), 0);
  std::vector<int32_t> whole;
  for (const auto& [at, t] : acked) {
    ASSERT_EQ(at, static_cast<int64_t>(whole.size())) << "a gap or two states at " << at;
    whole = Concat(whole, t);
  }
  EXPECT_EQ(acked.size(), 60u);
  // One more append on C: the oracle over exactly the acknowledged history.
  auto c = NewAarenStub(*replicas_[2]);
  v1::AppendResponse r =
      UnaryAppend(*c, "raced", {1, 2}, static_cast<int64_t>(whole.size()), v1::OUTPUT_MODE_ALL);
  const std::vector<double> oracle = OracleOutputs(*model_, Tokens(Concat(whole, {1, 2})));
  const int64_t od = model_->config().output_dim;
  EXPECT_LT(RelativeError(ToVector(r.outputs()),
                          std::vector<double>(oracle.end() - 2 * od, oracle.end())),
            kSessionClientTolerance);
  std::printf("two replicas, one session: %zu appends acknowledged, %d ABORTED and retried\n",
              acked.size(), aborted.load());
}

TEST_F(ReplicasTest, Kill9OfAReplicaUnderSixtyFourStreamsLosesNothingAcknowledged) {
  LoadResult result = UnderLoad([&](std::atomic<Clock::time_point>& mark) {
    mark = Clock::now();
    replicas_[1]->Signal(SIGKILL);
    replicas_[1]->WaitForExit(std::chrono::seconds(10));
    replicas_[1].reset();
  });
  int64_t replies = 0;
  for (const ClientView& v : result.views) replies += v.replies;
  EXPECT_GT(replies, 64);
  Report("kill -9 of one of 3 replicas", result.recovery_seconds);
}

TEST_F(ReplicasTest, RollingRestartUnderLoadLosesNoSession) {
  LoadResult result = UnderLoad([&](std::atomic<Clock::time_point>& mark) {
    mark = Clock::now();
    for (int i = 0; i < 3; ++i) {
      // maxSurge 1: the new replica is routed to first, then the old one drains and goes.
      auto fresh = StartReplica(i);
      ASSERT_NE(fresh, nullptr);
      std::vector<std::string> routes = Addresses();
      routes.push_back(fresh->address());
      routes.erase(std::remove(routes.begin(), routes.end(), replicas_[i]->address()),
                   routes.end());
      ASSERT_TRUE(nginx_->Route(routes));
      replicas_[i]->Signal(SIGTERM);
      std::optional<int> st = replicas_[i]->WaitForExit(std::chrono::seconds(20));
      ASSERT_TRUE(st.has_value());
      EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << DescribeExit(*st);
      replicas_[i] = std::move(fresh);
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
  });
  Report("rolling restart of 3 replicas", result.recovery_seconds);
  // Draining replicas end their streams with UNAVAILABLE (retried). The other ends seen are
  // nginx's, when it reloads its upstream list (SIGHUP): its old worker resets every open
  // stream (INTERNAL "Received RST_STREAM with error code 2"), or half-closes one (OK).
  int broken = 0, by_reload = 0;
  for (const ClientView& v : result.views) {
    for (const auto& [code, n] : v.breaks) {
      const bool reload =
          code == grpc::StatusCode::OK || (code == grpc::StatusCode::INTERNAL &&
                                           v.odd_break.find("RST_STREAM") != std::string::npos);
      EXPECT_TRUE(code == grpc::StatusCode::UNAVAILABLE || reload)
          << v.id << ": a stream ended with " << v.odd_break;
      broken += n;
      if (reload) by_reload += n;
    }
  }
  std::printf("rolling restart: %d streams broke, %d of them by nginx reloads\n", broken,
              by_reload);
  EXPECT_GT(broken, 0) << "no stream was on a restarted replica";
}

TEST_F(ReplicasTest, RedisDownFailsCallsNamingTheStoreAndServiceResumes) {
  auto stub = NewAarenStub(*replicas_[0]);
  ASSERT_FALSE(CreateSession(*stub, kLm, {}, "r").empty());
  UnaryAppend(*stub, "r", {1, 2, 3}, 0);
  redis_->Kill(SIGKILL);
  v1::AppendRequest req;
  req.set_session_id("r");
  *req.mutable_input() = Tokens({4});
  req.set_expected_position(3);
  auto r = Call(*stub, &AarenStub::Append, req);
  EXPECT_TRUE(HasStatus(r.status, grpc::StatusCode::UNAVAILABLE, {redis_->spec()}))
      << StatusString(r.status);
  // A replica that never held it cannot read it either.
  auto other = NewAarenStub(*replicas_[1]);
  v1::GetSessionRequest get;
  get.set_session_id("r");
  auto g = Call(*other, &AarenStub::GetSession, get);
  EXPECT_TRUE(HasStatus(g.status, grpc::StatusCode::UNAVAILABLE, {"store"}))
      << StatusString(g.status);
  // Redis comes back (its AOF kept every acknowledged write): the same retry now applies once.
  ASSERT_TRUE(redis_->Restart().ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(PositionOf(*other, "r"), 3);
  v1::AppendResponse ok = UnaryAppend(*other, "r", {4}, 3, v1::OUTPUT_MODE_ALL);
  EXPECT_EQ(ok.position(), 4);
  const std::vector<double> oracle = OracleOutputs(*model_, Tokens({1, 2, 3, 4}));
  const int64_t od = model_->config().output_dim;
  EXPECT_LT(
      RelativeError(ToVector(ok.outputs()), std::vector<double>(oracle.end() - od, oracle.end())),
      kSessionClientTolerance);
}

// A drain whose store is gone (Redis down at SIGTERM, --durability checkpoint: the interval's
// changes were not written yet) says so in an error line naming what was not written and exits
// 1, rather than stopping as if nothing was lost.
TEST_F(ReplicasTest, ACheckpointDrainThatCannotWriteLogsWhatWasLost) {
  ServerFlags flags;
  flags.model_dirs = {DemoModelDir(kLm).string()};
  flags.extra = {
      "--state_store", redis_->spec(), "--durability", "checkpoint", "--checkpoint_interval", "1h",
      "--replica_id",  "cp",           "--threads",    "1",          "--drain_timeout",       "5s"};
  auto server = ServerProcess::Start(flags);
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = NewAarenStub(**server);
  for (const char* id : {"c1", "c2", "c3"}) {
    ASSERT_FALSE(CreateSession(*stub, kLm, {}, id).empty());
    UnaryAppend(*stub, id, {1, 2}, 0);
  }
  redis_->Kill(SIGKILL);
  (*server)->Signal(SIGTERM);
  std::optional<int> st = (*server)->WaitForExit(std::chrono::seconds(30));
  ASSERT_TRUE(st.has_value());
  EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 1) << DescribeExit(*st);
  const std::string log = (*server)->Log();
  EXPECT_THAT(log, HasSubstr("level=error msg=\"drain incomplete: changes were lost\""));
  EXPECT_THAT(log,
              HasSubstr("3 changed sessions and 0 deletes were not written to " + redis_->spec()));
}

// A KServe v2 stream's next request of a sequence starts from the engine's completion of the one
// before it, on the scheduler thread. Not bound to the engine's copy of its session, it first
// reads Redis; there, a stalled Redis held every session's tick back for the read's timeout (a
// Score sent meanwhile waited 2 s behind it). It now runs on a store-call thread: with Redis
// paused, the Score is answered while that request still waits.
TEST_F(ReplicasTest, AV2StreamsNextRequestDoesNotReadRedisOnTheSchedulerThread) {
  ServerFlags flags;
  flags.model_dirs = {DemoModelDir(kLm).string()};
  const int metrics_port = FreePort();
  flags.extra = {"--state_store",         redis_->spec(),
                 "--durability",          "checkpoint",
                 "--checkpoint_interval", "1h",
                 "--replica_id",          "v2",
                 "--metrics_port",        std::to_string(metrics_port)};
  auto server = ServerProcess::Start(flags);
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = (*server)->NewChannel();
  auto v2 = inference::GRPCInferenceService::NewStub(channel);
  auto stub = NewAarenStub(**server);
  const auto loads = [&] {  // (the series appears with the first load)
    const double n = MetricValue(ScrapeMetrics(metrics_port), "aaren_store_roundtrip_seconds_count",
                                 "op=\"load\"");
    return std::isnan(n) ? 0.0 : n;
  };
  auto request = [](int32_t n, bool start) {
    inference::ModelInferRequest r;
    r.set_model_name(kLm);
    r.set_id(start ? "first" : "second");
    (*r.mutable_parameters())["sequence_id"].set_int64_param(11);
    if (start) (*r.mutable_parameters())["sequence_start"].set_bool_param(true);
    auto* in = r.add_inputs();
    in->set_name("TOKENS");
    in->set_datatype("INT32");
    in->add_shape(n);
    for (int32_t i = 0; i < n; ++i) in->mutable_contents()->add_int_contents(i % 7);
    (*r.mutable_parameters())["output_mode"].set_string_param("last");
    return r;
  };
  const double loads_before = loads();

  grpc::ClientContext context;
  auto stream = v2->ModelStreamInfer(&context);
  // The first takes long enough in the engine (a 128k-token prefill, ~1 s) for Redis to be paused
  // behind its two store reads (the START's lookup and the create's); the second waits in the
  // stream behind it.
  ASSERT_TRUE(stream->Write(request(1 << 17, true)));
  ASSERT_TRUE(stream->Write(request(1, false)));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (loads() < loads_before + 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ASSERT_GE(loads(), loads_before + 2);
  absl::StatusOr<std::string> paused = redis_->Command({"CLIENT", "PAUSE", "6000", "ALL"});
  ASSERT_TRUE(paused.ok() && *paused == "OK")
      << (paused.ok() ? *paused : paused.status().ToString());

  inference::ModelStreamInferResponse first;
  ASSERT_TRUE(stream->Read(&first));
  ASSERT_TRUE(first.error_message().empty()) << first.error_message();
  ASSERT_EQ(first.infer_response().id(), "first");
  // The scheduler is free: a Score (no store involved) is answered while the second request's
  // read waits for Redis.
  std::atomic<bool> second_answered{false};
  std::string second_error;
  std::thread reader([&] {
    inference::ModelStreamInferResponse second;
    if (stream->Read(&second)) second_error = second.error_message();
    second_answered = true;
  });
  const auto score_start = std::chrono::steady_clock::now();
  std::vector<float> scored = ScoreAll(*stub, kLm, Tokens({1, 2, 3}));
  const double score_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - score_start).count();
  const bool second_first = second_answered.load();
  reader.join();
  stream->WritesDone();
  EXPECT_FALSE(scored.empty());
  EXPECT_FALSE(second_first) << "the Score was answered only after the second request, " << score_s
                             << " s after it was sent";
  // The second request's read did meet the paused Redis (else this test showed nothing).
  EXPECT_THAT(second_error, HasSubstr("cannot be read from the store"));
  // Redis answers again once the pause ends (an UNPAUSE would wait behind it too), so that the
  // drain at the end writes the session.
  const auto resumed_by = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!redis_->Command({"PING"}).ok() && std::chrono::steady_clock::now() < resumed_by) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(stream->Finish().ok());
}

// --durability checkpoint over Redis: the checkpoint's commit runs beside the ticks, so a Redis
// that stalls holds back only the checkpoint. Before, the scheduler waited in the commit until
// the store's 2 s timeout failed it, and every stream with it. With Redis paused, 20 streamed
// appends are all answered while the checkpoint taken after the pause still waits (no commit
// has failed yet); that one fails at its timeout, and once Redis is back the next checkpoint
// writes the session's last state.
TEST_F(ReplicasTest, ACheckpointWaitingForAPausedRedisHoldsBackNoStreamedAppend) {
  ServerFlags flags;
  flags.model_dirs = {DemoModelDir(kLm).string()};
  const int metrics_port = FreePort();
  flags.extra = {"--state_store",         redis_->spec(),
                 "--durability",          "checkpoint",
                 "--checkpoint_interval", "100ms",
                 "--replica_id",          "cp",
                 "--metrics_port",        std::to_string(metrics_port)};
  auto server = ServerProcess::Start(flags);
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = NewAarenStub(**server);
  const auto failed_commits = [&] {  // (the series appears with the first commit)
    const double n =
        MetricValue(ScrapeMetrics(metrics_port), "aaren_store_commits_total", "result=\"error\"");
    return std::isnan(n) ? 0.0 : n;
  };
  StreamClient stream(*stub, std::chrono::seconds(60));
  v1::OpenSession open;
  open.set_session_id("paused");
  open.set_model(kLm);
  open.set_create_if_missing(true);
  ASSERT_TRUE(stream.Open(open).has_value());
  auto append = [&](int32_t token) {
    v1::AppendRequest req;
    *req.mutable_input() = Tokens({token});
    req.set_output_mode(v1::OUTPUT_MODE_LAST);
    return stream.Append(req);
  };
  ASSERT_TRUE(append(1).has_value());
  const double failed_before = failed_commits();

  absl::StatusOr<std::string> paused = redis_->Command({"CLIENT", "PAUSE", "3000", "ALL"});
  ASSERT_TRUE(paused.ok() && *paused == "OK");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // a checkpoint of token 1 waits
  int answered = 0;
  for (int32_t i = 0; i < 20; ++i) {
    std::optional<v1::AppendResponse> r = append(2 + i % 5);
    if (!r.has_value()) break;
    EXPECT_EQ(r->position(), 2 + i);
    ++answered;
  }
  const double failed_meanwhile = failed_commits();
  EXPECT_EQ(answered, 20);
  EXPECT_EQ(failed_meanwhile, failed_before)
      << "the streamed appends were answered only after the checkpoint waiting for Redis failed";

  // Redis answers again once the pause ends (an UNPAUSE would wait behind it too).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!redis_->Command({"PING"}).ok() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::optional<SessionRecord> stored;
  while (std::chrono::steady_clock::now() < deadline) {
    absl::StatusOr<std::string> v = redis_->Command({"HGET", SessionKey("", "paused"), "d"});
    absl::StatusOr<SessionRecord> r =
        v.ok() ? DecodeSessionRecord(*v) : absl::StatusOr<SessionRecord>(v.status());
    if (r.ok()) stored = *r;
    if (stored.has_value() && stored->position == 21) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(stored.has_value());
  EXPECT_EQ(stored->position, 21);
  EXPECT_GE(failed_commits(), failed_before + 1);  // the one that met the pause
  EXPECT_TRUE(stream.Finish().ok());
}

// --durability ack over Redis: a create whose script Redis runs only after the replica gave up
// waiting for it (Redis stalled past the store's 2 s command timeout by DEBUG SLEEP; the script
// waits in the socket and runs when Redis wakes) is answered UNAVAILABLE, and the record that
// lands afterwards is deleted by the replica that wrote it, so no replica serves the session.
// It stayed until its TTL, and every replica served it.
TEST_F(ReplicasTest, AnAckCreateThatLandedAfterTimingOutIsDeleted) {
  auto stub = NewAarenStub(*replicas_[0]);
  auto other = NewAarenStub(*replicas_[1]);
  auto session_keys = [&] {
    absl::StatusOr<std::string> keys =
        redis_->Command({"KEYS", absl::StrCat(kSessionKeyPrefix, "*")});
    EXPECT_TRUE(keys.ok()) << keys.status();
    std::vector<std::string> out = absl::StrSplit(keys.ok() ? *keys : "", '\n', absl::SkipEmpty());
    std::sort(out.begin(), out.end());
    return out;
  };
  const std::vector<std::string> before = session_keys();
  const std::string counter_before = redis_->Command({"GET", "aaren/version"}).value_or("?");
  std::thread stall([&] { (void)redis_->Command({"DEBUG", "SLEEP", "3"}); });  // (times out)
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  v1::CreateSessionRequest req;
  req.set_model(kLm);
  auto made = Call(*stub, &AarenStub::CreateSession, req);  // a server-made id: no store read
  stall.join();
  EXPECT_TRUE(HasStatus(made.status, grpc::StatusCode::UNAVAILABLE, {redis_->spec()}))
      << StatusString(made.status);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!redis_->Command({"PING"}).ok() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  // Every put takes a version from this counter: it moves when the create's script has run.
  // The replica's delete may follow at once, so the record itself may never be seen.
  auto counter = [&] {
    absl::StatusOr<std::string> v = redis_->Command({"GET", "aaren/version"});
    return v.ok() ? *v : std::string("?");
  };
  std::string id;  // the session's, if its record is seen
  bool ran = false;
  bool gone = false;
  while (!(ran && gone) && std::chrono::steady_clock::now() < deadline) {
    ran = ran || counter() != counter_before;
    std::vector<std::string> after = session_keys();
    std::vector<std::string> landed;
    std::set_difference(after.begin(), after.end(), before.begin(), before.end(),
                        std::back_inserter(landed));
    if (!landed.empty()) id = landed[0].substr(landed[0].rfind('/') + 1);
    gone = ran && landed.empty();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(ran) << "the create's script did not run after the stall";
  EXPECT_TRUE(gone) << "the record of the create answered UNAVAILABLE stayed in Redis";
  if (!id.empty()) {
    v1::GetSessionRequest get;
    get.set_session_id(id);
    auto g = Call(*other, &AarenStub::GetSession, get);
    EXPECT_EQ(g.status.error_code(), grpc::StatusCode::NOT_FOUND) << StatusString(g.status);
  }
}

// An aaren.v1 Stream's open may wait for Redis (a lookup of its session) for up to the store's
// timeout. It held the stream's lock meanwhile, and the server's drain asks every stream in
// turn under one lock: a SIGTERM that met such an open first kept every other stream from
// hearing of the drain until the open gave up (2 s with Redis stalled). The open now runs
// without the lock: with Redis paused, the 8 idle streams end at once, before the stuck open.
TEST_F(ReplicasTest, AStreamOpenWaitingForRedisDoesNotHoldBackTheDrainOfOtherStreams) {
  ServerFlags flags;
  flags.model_dirs = {DemoModelDir(kLm).string()};
  flags.extra = {"--state_store",         redis_->spec(), "--durability", "checkpoint",
                 "--checkpoint_interval", "1h",           "--replica_id", "drain",
                 "--drain_timeout",       "10s"};
  auto server = ServerProcess::Start(flags);
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = NewAarenStub(**server);
  auto open_message = [](const std::string& id) {
    v1::OpenSession open;
    open.set_session_id(id);
    open.set_model(kLm);
    open.set_create_if_missing(true);
    return open;
  };
  constexpr int kIdle = 8;
  std::vector<std::unique_ptr<StreamClient>> idle;
  for (int i = 0; i < kIdle; ++i) {
    idle.push_back(std::make_unique<StreamClient>(*stub, std::chrono::seconds(60)));
    ASSERT_TRUE(idle.back()->Open(open_message(absl::StrCat("idle", i))).has_value());
  }
  absl::StatusOr<std::string> paused = redis_->Command({"CLIENT", "PAUSE", "5000", "ALL"});
  ASSERT_TRUE(paused.ok() && *paused == "OK");
  StreamClient stuck(*stub, std::chrono::seconds(60));
  v1::StreamRequest open;
  *open.mutable_open() = open_message("stuck");
  ASSERT_TRUE(stuck.Write(open));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // its lookup is waiting
  (*server)->Signal(SIGTERM);

  std::atomic<int> order{0};
  std::vector<int> idle_ended(kIdle, -1);
  std::vector<std::thread> readers;
  for (int i = 0; i < kIdle; ++i) {
    readers.emplace_back([&, i] {
      v1::StreamResponse r;
      while (idle[i]->Read(&r)) {
      }
      idle_ended[i] = order++;
    });
  }
  v1::StreamResponse r;
  while (stuck.Read(&r)) {
  }
  const int stuck_ended = order++;
  for (std::thread& t : readers) t.join();
  for (int i = 0; i < kIdle; ++i) {
    EXPECT_LT(idle_ended[i], stuck_ended) << "idle stream " << i << " heard of the drain only "
                                          << "after the open waiting for Redis ended";
    EXPECT_EQ(idle[i]->FinishBroken().error_code(), grpc::StatusCode::UNAVAILABLE);
  }
  (void)stuck.FinishBroken();
  std::optional<int> st = (*server)->WaitForExit(std::chrono::seconds(30));
  ASSERT_TRUE(st.has_value());
  // Redis answers again once the pause ends.
  const auto resumed_by = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!redis_->Command({"PING"}).ok() && std::chrono::steady_clock::now() < resumed_by) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace
}  // namespace aaren::testing
