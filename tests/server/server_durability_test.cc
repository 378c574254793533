// SPDX-License-Identifier: Apache-2.0
// Durable sessions against the real server binary and a real RocksDB store directory:
// kill -9 under 64 concurrent streams with --durability=ack (5 rounds), checkpoint's SIGTERM and
// kill -9 losses, a disk that fills (a small tmpfs this test mounts) or turns read-only, damaged
// store files, a store written for other weights, and the flags' start-up errors. After every
// restart the sessions continue, checked against the float64 oracle over exactly the history
// the clients were told was applied.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/model.h"
#include "tests/server/e2e_support.h"
#include "tests/server/session_clients.h"

namespace aaren::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

constexpr char kLm[] = "demo-lm";
constexpr double kTolerance = 1e-4;

ServerFlags StoreFlags(const fs::path& store, const std::string& durability,
                       std::vector<std::string> more = {}) {
  ServerFlags flags;
  flags.model_dirs = {DemoModelDir(kLm).string()};
  flags.extra = {"--state_store", store.string(), "--durability", durability, "--threads", "2"};
  flags.extra.insert(flags.extra.end(), more.begin(), more.end());
  return flags;
}

std::unique_ptr<ServerProcess> MustStart(const ServerFlags& flags) {
  auto s = ServerProcess::Start(flags);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *std::move(s) : nullptr;
}

void Kill9(ServerProcess& server) {
  server.Signal(SIGKILL);
  std::optional<int> st = server.WaitForExit(std::chrono::seconds(10));
  ASSERT_TRUE(st.has_value());
  ASSERT_TRUE(WIFSIGNALED(*st) && WTERMSIG(*st) == SIGKILL) << DescribeExit(*st);
}

TEST(ServerDurability, AckKill9UnderSixtyFourStreamsLosesNothingAcknowledged) {
  TempDir dir;
  auto model = Model::Load(DemoModelDir(kLm));
  ASSERT_TRUE(model.ok()) << model.status();
  constexpr int kClients = 64, kRounds = 5;
  constexpr int64_t kMaxAppendsPerRound = 100;
  std::vector<ClientView> views(kClients);
  for (int i = 0; i < kClients; ++i) views[i].id = absl::StrCat("client-", i);
  std::mt19937_64 rng(20261203);
  int64_t total_replies = 0;
  int64_t in_flight_at_kill = 0;  // appends sent and unanswered when the server died
  for (int round = 0; round < kRounds; ++round) {
    auto server = MustStart(StoreFlags(dir.path() / "store", "ack"));
    ASSERT_NE(server, nullptr);
    if (round > 0) {
      EXPECT_THAT(server->Log(), HasSubstr(absl::StrCat("recovered=", kClients)));
      auto stub = NewAarenStub(*server);
      for (ClientView& v : views) CheckContinues(*stub, **model, v, rng);
      if (::testing::Test::HasFailure()) return;
    }
    std::atomic<bool> stop{false};
    std::atomic<int64_t> acknowledged{0};
    const StreamLimits limits{kMaxAppendsPerRound, &acknowledged};
    std::vector<std::thread> clients;
    for (int i = 0; i < kClients; ++i) {
      clients.emplace_back([&, i, seed = rng() + i] {
        StreamUntilBroken(server->NewChannel(), views[i], (*model)->config().vocab_size, seed, stop,
                          limits);
      });
    }
    // Kill at a random point of the load, by progress rather than by the clock: after 10-80% of
    // the round's appends were acknowledged, whatever the machine's speed (the histories, and
    // the oracle's quadratic cost, stay bounded).
    const int64_t kill_at = kClients * kMaxAppendsPerRound * (10 + rng() % 71) / 100;
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (acknowledged.load() < kill_at && std::chrono::steady_clock::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    Kill9(*server);
    stop = true;  // the clients that reached the bound end too
    for (std::thread& t : clients) t.join();
    total_replies = 0;  // ClientView::replies counts over every round
    for (const ClientView& v : views) {
      total_replies += v.replies;
      in_flight_at_kill += v.pending.empty() ? 0 : 1;
    }
  }
  auto server = MustStart(StoreFlags(dir.path() / "store", "ack"));
  ASSERT_NE(server, nullptr);
  auto stub = NewAarenStub(*server);
  for (ClientView& v : views) CheckContinues(*stub, **model, v, rng);
  std::printf("acknowledged appends over %d kill -9 rounds: %lld, in flight at the kills: %lld\n",
              kRounds, static_cast<long long>(total_replies),
              static_cast<long long>(in_flight_at_kill));
  EXPECT_GT(total_replies, kClients * kRounds);
  EXPECT_GT(in_flight_at_kill, 0) << "no kill landed while an append was in flight";
}

// One client appending as fast as it can; returns the acknowledged history and when each
// acknowledgement came.
struct TimedAppends {
  std::vector<int32_t> acked;
  std::vector<std::pair<std::chrono::steady_clock::time_point, int64_t>> acks;  // time, position
};

TimedAppends AppendFor(const ServerProcess& server, const std::string& id,
                       std::chrono::milliseconds how_long, int32_t vocab) {
  TimedAppends out;
  auto stub = NewAarenStub(server);
  v1::CreateSessionRequest create;
  create.set_model(kLm);
  create.set_session_id(id);
  EXPECT_TRUE(Call(*stub, &AarenStub::CreateSession, create).ok());
  std::mt19937_64 rng(7);
  const auto end = std::chrono::steady_clock::now() + how_long;
  while (std::chrono::steady_clock::now() < end) {
    std::vector<int32_t> t{static_cast<int32_t>(rng() % vocab)};
    v1::AppendResponse r = UnaryAppend(*stub, id, t, static_cast<int64_t>(out.acked.size()));
    out.acked.push_back(t[0]);
    out.acks.emplace_back(std::chrono::steady_clock::now(), r.position());
  }
  return out;
}

TEST(ServerDurability, CheckpointSigtermLosesNothingAndKill9AtMostTheInterval) {
  TempDir dir;
  auto model = Model::Load(DemoModelDir(kLm));
  ASSERT_TRUE(model.ok());
  const int32_t vocab = (*model)->config().vocab_size;
  const fs::path store = dir.path() / "store";
  {
    auto server = MustStart(StoreFlags(store, "checkpoint", {"--checkpoint_interval", "1s"}));
    ASSERT_NE(server, nullptr);
    TimedAppends a = AppendFor(*server, "term", std::chrono::milliseconds(800), vocab);
    server.reset();  // SIGTERM: the drain writes every changed session
    auto again = MustStart(StoreFlags(store, "checkpoint"));
    ASSERT_NE(again, nullptr);
    auto stub = NewAarenStub(*again);
    EXPECT_EQ(PositionOf(*stub, "term"), static_cast<int64_t>(a.acked.size()));
  }
  {
    auto server = MustStart(StoreFlags(store, "checkpoint", {"--checkpoint_interval", "1s"}));
    ASSERT_NE(server, nullptr);
    TimedAppends a = AppendFor(*server, "kill", std::chrono::milliseconds(2500), vocab);
    const auto killed_at = std::chrono::steady_clock::now();
    Kill9(*server);
    auto again = MustStart(StoreFlags(store, "checkpoint"));
    ASSERT_NE(again, nullptr);
    auto stub = NewAarenStub(*again);
    const int64_t recovered = PositionOf(*stub, "kill");
    const int64_t acked = static_cast<int64_t>(a.acked.size());
    // Every append acknowledged more than the interval (plus 250 ms of scheduling slack) before
    // the kill is there.
    int64_t must_have = 0;
    for (const auto& [t, pos] : a.acks) {
      if (killed_at - t > std::chrono::milliseconds(1250)) must_have = pos;
    }
    std::printf(
        "checkpoint 1s, kill -9: %lld of %lld acknowledged appends lost (%.2f s of appends)\n",
        static_cast<long long>(acked - recovered), static_cast<long long>(acked),
        2.5 * static_cast<double>(acked - recovered) / static_cast<double>(acked));
    EXPECT_GE(recovered, must_have);
    EXPECT_LE(recovered, acked);
    // What survived continues exactly.
    std::vector<int32_t> history(a.acked.begin(), a.acked.begin() + recovered);
    v1::AppendResponse r = UnaryAppend(*stub, "kill", {1, 2}, recovered, v1::OUTPUT_MODE_ALL);
    const std::vector<double> oracle = OracleOutputs(**model, Tokens(Concat(history, {1, 2})));
    std::vector<double> tail(oracle.end() - 2 * (*model)->config().output_dim, oracle.end());
    EXPECT_LT(RelativeError(ToVector(r.outputs()), tail), kTolerance);
  }
}

// A tmpfs of its own, unmounted at the end; skips when mounting is not allowed.
class Tmpfs {
 public:
  explicit Tmpfs(const fs::path& where, const std::string& size) : path_(where) {
    fs::create_directories(where);
    mounted_ = mount("tmpfs", where.c_str(), "tmpfs", 0, ("size=" + size).c_str()) == 0;
  }
  ~Tmpfs() {
    if (mounted_) umount2(path_.c_str(), MNT_DETACH);
  }
  bool mounted() const { return mounted_; }
  bool Remount(bool read_only) {
    return mount("tmpfs", path_.c_str(), "tmpfs", MS_REMOUNT | (read_only ? MS_RDONLY : 0),
                 nullptr) == 0;
  }

 private:
  fs::path path_;
  bool mounted_ = false;
};

// Appends on `ids` (round robin, unary, expected_position) until one fails; returns its status.
grpc::Status AppendUntilFailure(AarenStub& stub, std::vector<ClientView>& views, int32_t vocab,
                                int max_rounds) {
  std::mt19937_64 rng(3);
  for (int round = 0; round < max_rounds; ++round) {
    for (ClientView& v : views) {
      std::vector<int32_t> t{static_cast<int32_t>(rng() % vocab)};
      v1::AppendRequest req;
      req.set_session_id(v.id);
      *req.mutable_input() = Tokens(t);
      req.set_expected_position(static_cast<int64_t>(v.acked.size()));
      req.set_output_mode(v1::OUTPUT_MODE_LAST);
      auto r = Call(stub, &AarenStub::Append, req);
      if (!r.ok()) return r.status;
      v.acked.push_back(t[0]);
      v.last = t;
    }
  }
  return grpc::Status::OK;
}

TEST(ServerDurability, DiskFullAndReadOnlyFailCleanlyAndRecover) {
  TempDir dir;
  Tmpfs disk(dir.path() / "disk", "48m");
  if (!disk.mounted())
    GTEST_SKIP() << "cannot mount a tmpfs here (needs root): " << strerror(errno);
  auto model = Model::Load(DemoModelDir(kLm));
  ASSERT_TRUE(model.ok());
  const int32_t vocab = (*model)->config().vocab_size;
  const fs::path store = dir.path() / "disk" / "store";
  const fs::path filler = dir.path() / "disk" / "filler";
  auto server = MustStart(StoreFlags(store, "ack"));
  ASSERT_NE(server, nullptr);
  auto stub = NewAarenStub(*server);
  std::vector<ClientView> views(16);
  for (size_t i = 0; i < views.size(); ++i) {
    views[i].id = absl::StrCat("full-", i);
    CreateSession(*stub, kLm, {}, views[i].id);
  }
  ASSERT_TRUE(AppendUntilFailure(*stub, views, vocab, 2).ok());
  // Fill the disk but for ~1 MiB.
  {
    std::ofstream f(filler, std::ios::binary);
    std::vector<char> block(1 << 20, 'x');
    while (fs::space(filler.parent_path()).available > (1u << 20) &&
           f.write(block.data(), block.size())) {
      f.flush();
    }
  }
  grpc::Status full = AppendUntilFailure(*stub, views, vocab, 5000);
  ASSERT_FALSE(full.ok()) << "the disk never filled";
  EXPECT_TRUE(HasStatus(full, grpc::StatusCode::UNAVAILABLE, {"state store"}))
      << StatusString(full);
  EXPECT_TRUE(server->Running());
  // Nothing acknowledged is lost, and the failed append changed nothing.
  for (const ClientView& v : views) {
    EXPECT_EQ(PositionOf(*stub, v.id), static_cast<int64_t>(v.acked.size())) << v.id;
  }
  // Space returns: appends work again.
  fs::remove(filler);
  ASSERT_TRUE(AppendUntilFailure(*stub, views, vocab, 3).ok());

  // Everything acknowledged survives a kill -9 ...
  Kill9(*server);
  // ... an unwritable store directory is a clear start-up error (Linux refuses a read-only
  // remount while the server has the WAL open for writing, hence between runs) ...
  ASSERT_TRUE(disk.Remount(/*read_only=*/true)) << strerror(errno);
  {
    ServerFlags flags = StoreFlags(store, "ack");
    flags.start_timeout = std::chrono::seconds(20);
    auto refused = ServerProcess::Start(flags);
    ASSERT_FALSE(refused.ok());
    EXPECT_THAT(std::string(refused.status().message()), HasSubstr("--state_store"));
  }
  ASSERT_TRUE(disk.Remount(/*read_only=*/false)) << strerror(errno);
  // ... and once it is writable again every session continues exactly.
  server = MustStart(StoreFlags(store, "ack"));
  ASSERT_NE(server, nullptr);
  stub = NewAarenStub(*server);
  std::mt19937_64 rng(5);
  for (ClientView& v : views) CheckContinues(*stub, **model, v, rng);
}

// The newest file in `dir` whose name ends with `suffix`.
fs::path NewestFile(const fs::path& dir, const std::string& suffix) {
  fs::path best;
  fs::file_time_type when{};
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.size() >= suffix.size() &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0 &&
        (best.empty() || e.last_write_time() > when)) {
      best = e.path();
      when = e.last_write_time();
    }
  }
  return best;
}

// A store with `n` sessions of a few tokens each, written by a server that then stops.
void WriteStore(const fs::path& store, int n, const std::string& stop = "sigterm") {
  auto server = MustStart(StoreFlags(store, "ack"));
  ASSERT_NE(server, nullptr);
  auto stub = NewAarenStub(*server);
  for (int i = 0; i < n; ++i) {
    const std::string id = absl::StrCat("s", i);
    CreateSession(*stub, kLm, {}, id);
    UnaryAppend(*stub, id, {1, 2, 3}, 0);
  }
  if (stop == "kill") Kill9(*server);
}

TEST(ServerDurability, DamagedStoreFilesGiveClearErrorsNotCrashes) {
  TempDir dir;
  {
    // A torn WAL tail (a write cut short by the crash): the server starts; what is before the
    // tear is there.
    const fs::path store = dir.path() / "torn";
    WriteStore(store, 20, "kill");
    const fs::path wal = NewestFile(store, ".log");
    ASSERT_FALSE(wal.empty());
    fs::resize_file(wal, fs::file_size(wal) - 7);
    auto server = ServerProcess::Start(StoreFlags(store, "ack"));
    ASSERT_TRUE(server.ok()) << server.status();
    auto stub = NewAarenStub(**server);
    for (int i = 0; i < 19; ++i) EXPECT_EQ(PositionOf(*stub, absl::StrCat("s", i)), 3);
  }
  {
    // Flipped bytes inside a table file: a start-up error that says so (exit status 2).
    const fs::path store = dir.path() / "flipped";
    WriteStore(store, 400);  // SIGTERM: flushed into .sst files at close
    fs::path sst = NewestFile(store, ".sst");
    if (sst.empty()) {
      // Not flushed by this RocksDB at close: the WAL holds it all; damage that instead.
      sst = NewestFile(store, ".log");
    }
    ASSERT_FALSE(sst.empty());
    {
      std::fstream f(sst, std::ios::in | std::ios::out | std::ios::binary);
      const auto size = static_cast<std::streamoff>(fs::file_size(sst));
      for (std::streamoff at = size / 4; at < size / 2; at += 512) {
        f.seekp(at);
        f.put('\x5a');
      }
    }
    auto server = ServerProcess::Start(StoreFlags(store, "ack"));
    if (server.ok()) {
      // RocksDB may detect the damage only in the records themselves: then they are reported,
      // kept and skipped.
      EXPECT_THAT((*server)->Log(), HasSubstr("corrupt="));
      EXPECT_THAT((*server)->Log(), ::testing::Not(HasSubstr("corrupt=0 ")));
    } else {
      EXPECT_THAT(std::string(server.status().message()),
                  ::testing::AnyOf(HasSubstr("damaged"), HasSubstr("orrupt")));
      EXPECT_THAT(std::string(server.status().message()), ::testing::Not(HasSubstr("signal")));
    }
  }
  {
    // A garbage CURRENT file: a start-up error naming --state_store.
    const fs::path store = dir.path() / "current";
    WriteStore(store, 3);
    std::ofstream(store / "CURRENT", std::ios::trunc) << "MANIFEST-999999\n";
    auto server = ServerProcess::Start(StoreFlags(store, "ack"));
    ASSERT_FALSE(server.ok());
    EXPECT_THAT(std::string(server.status().message()), HasSubstr("--state_store"));
    EXPECT_THAT(std::string(server.status().message()), ::testing::Not(HasSubstr("signal")));
  }
}

TEST(ServerDurability, RecordsForOtherWeightsAreKeptAndReported) {
  TempDir dir;
  const fs::path store = dir.path() / "store";
  WriteStore(store, 5);
  // The same model name with other weights: nothing loaded, everything kept.
  auto lm = Model::Load(DemoModelDir(kLm));
  ASSERT_TRUE(lm.ok());
  auto other = WriteRandomModelDir(dir.path() / "models", kLm, (*lm)->config(), 99);
  ASSERT_TRUE(other.ok()) << other.status();
  {
    ServerFlags flags = StoreFlags(store, "ack");
    flags.model_dirs = {other->string()};
    auto server = MustStart(flags);
    ASSERT_NE(server, nullptr);
    EXPECT_THAT(server->Log(), HasSubstr("recovered=0"));
    EXPECT_THAT(server->Log(), HasSubstr("other_model=5"));
    auto stub = NewAarenStub(*server);
    v1::GetSessionRequest req;
    req.set_session_id("s0");
    EXPECT_EQ(Call(*stub, &AarenStub::GetSession, req).status.error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  // The right weights again: every session is back.
  auto server = MustStart(StoreFlags(store, "ack"));
  ASSERT_NE(server, nullptr);
  EXPECT_THAT(server->Log(), HasSubstr("recovered=5"));
  auto stub = NewAarenStub(*server);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(PositionOf(*stub, absl::StrCat("s", i)), 3);
}

TEST(ServerDurability, SigusrOneWritesABackupThatServesAsAStore) {
  TempDir dir;
  const fs::path backups = dir.path() / "backups";
  auto server =
      MustStart(StoreFlags(dir.path() / "store", "ack", {"--backup_dir", backups.string()}));
  ASSERT_NE(server, nullptr);
  auto stub = NewAarenStub(*server);
  CreateSession(*stub, kLm, {}, "kept");
  UnaryAppend(*stub, "kept", {4, 5, 6, 7}, 0);
  server->Signal(SIGUSR1);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (server->Log().find("backup written") == std::string::npos &&
         std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_THAT(server->Log(), HasSubstr("backup written"));
  // Changes after the backup are not in it.
  UnaryAppend(*stub, "kept", {1}, 4);
  std::vector<fs::path> made;
  for (const auto& e : fs::directory_iterator(backups)) made.push_back(e.path());
  ASSERT_EQ(made.size(), 1u);
  server.reset();
  auto restored = MustStart(StoreFlags(made[0], "ack"));
  ASSERT_NE(restored, nullptr);
  auto stub2 = NewAarenStub(*restored);
  EXPECT_EQ(PositionOf(*stub2, "kept"), 4);
}

TEST(ServerDurability, FlagErrorsAreStartupErrors) {
  TempDir dir;
  std::ofstream(dir.path() / "file") << "x";
  struct Case {
    std::vector<std::string> flags;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {{"--durability", "ack"}, "needs --state_store"},
      {{"--durability", "checkpoint"}, "needs --state_store"},
      {{"--state_store", (dir.path() / "s").string(), "--durability", "none"}, "--durability=none"},
      {{"--state_store", (dir.path() / "s").string(), "--durability", "sometimes"}, "--durability"},
      {{"--state_store", "redis://127.0.0.1:1"}, "--state_store"},
      {{"--state_store", (dir.path() / "file" / "sub").string()}, "--state_store"},
      {{"--state_store", (dir.path() / "s").string(), "--checkpoint_interval", "0s"},
       "--checkpoint_interval"},
  };
  for (const Case& c : cases) {
    ServerFlags flags;
    flags.model_dirs = {DemoModelDir(kLm).string()};
    flags.extra = c.flags;
    flags.start_timeout = std::chrono::seconds(20);
    auto server = ServerProcess::Start(flags);
    ASSERT_FALSE(server.ok()) << c.flags[0];
    EXPECT_THAT(std::string(server.status().message()), HasSubstr(c.needle)) << c.flags[0];
  }
}

}  // namespace
}  // namespace aaren::testing
