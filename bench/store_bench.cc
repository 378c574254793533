// SPDX-License-Identifier: Apache-2.0
// store_bench: the RocksDB session store on its own (bench/run_durability_benchmarks.sh).
//   --mode=commit:   batches of --records session records of demo-lm's size, each one
//                    RocksDbStore::Commit (one WriteBatch, one WAL fsync), as a scheduler tick
//                    under --durability=ack writes them; prints commit p50/p99/mean and MB/s.
//                    With --store=redis://... the same batches go to Redis as the engine sends
//                    them to a shared store: CommitVersioned, each write expecting the version
//                    the previous batch gave its key (one Lua compare-and-set script per batch).
//   --mode=populate: --sessions real session records (demo-lm states made by the engine, one per
//                    id) written in batches, then compacted; prints bytes on disk per session
//                    and its ratio to state_bytes. aaren-server then recovers them (the script
//                    times that from the server's log).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <future>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "core/cpu_backend.h"
#include "engine/engine.h"
#include "engine/served_model.h"
#include "engine/store/rocksdb_store.h"
#include "engine/store/session_record.h"
#include "engine/store/state_store.h"

ABSL_FLAG(std::string, mode, "commit", "commit or populate");
ABSL_FLAG(std::string, dir, "", "store directory (created; must not hold another store)");
ABSL_FLAG(std::string, store, "",
          "--mode=commit: a --state_store spec to commit to instead of a RocksDB store in --dir "
          "(e.g. redis://127.0.0.1:6379/0)");
ABSL_FLAG(std::string, model_dir, "models/demo-lm", "the model the records are for");
ABSL_FLAG(int64_t, records, 16, "commit: records per batch");
ABSL_FLAG(int64_t, batches, 500, "commit: batches");
ABSL_FLAG(int64_t, sessions, 1000000, "populate: sessions");

namespace aaren {
namespace {

int Die(const absl::Status& st) {
  std::fprintf(stderr, "store_bench: %s\n", std::string(st.message()).c_str());
  return 1;
}

// A record of a real demo-lm session: the engine runs a few tokens, the record takes its state.
absl::StatusOr<SessionRecord> TemplateRecord(const ModelRegistry& registry) {
  const ServedModel* m = registry.models().front();
  Engine engine(&registry, EngineOptions{});
  if (absl::StatusOr<SessionInfo> s = engine.OpenSession("t", m->name, true, 0); !s.ok()) {
    return s.status();
  }
  Engine::AppendParams p;
  p.session_id = "t";
  p.input.tokens = {1, 2, 3, 4, 5, 6, 7, 8};
  std::promise<absl::StatusOr<AppendResult>> appended;
  engine.Append(std::move(p), [&](absl::StatusOr<AppendResult> r) { appended.set_value(r); });
  if (absl::StatusOr<AppendResult> r = appended.get_future().get(); !r.ok()) return r.status();
  std::promise<absl::StatusOr<SessionSnapshot>> exported;
  engine.ExportSession("t", [&](absl::StatusOr<SessionSnapshot> s) { exported.set_value(s); });
  absl::StatusOr<SessionSnapshot> snap = exported.get_future().get();
  if (!snap.ok()) return snap.status();
  SessionRecord r;
  r.model = m->name;
  r.config_hash = m->config_hash;
  r.uid = 1;
  r.position = snap->position;
  r.created_ms = r.last_used_ms = NowUnixMs();
  r.idle_ttl_s = 7 * 24 * 3600;
  r.state = snap->state;
  r.last_output = snap->last_output;
  return r;
}

double Quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(q * static_cast<double>(v.size() - 1))];
}

int Main() {
  auto registry = ModelRegistry::Load(
      {absl::GetFlag(FLAGS_model_dir)},
      [](std::shared_ptr<const Model> m) -> absl::StatusOr<std::unique_ptr<Backend>> {
        return std::make_unique<CpuBackend>(std::move(m));
      });
  if (!registry.ok()) return Die(registry.status());
  absl::StatusOr<SessionRecord> tmpl = TemplateRecord(**registry);
  if (!tmpl.ok()) return Die(tmpl.status());
  const int64_t state_bytes = (*registry)->models().front()->config().state_bytes();
  std::mt19937_64 rng(1);
  auto record = [&](int64_t i) {
    SessionRecord r = *tmpl;
    r.id = absl::StrCat("session-", i);
    r.uid = rng() | 1;
    return StoreWrite{SessionKey(r.tenant, r.id), EncodeSessionRecord(r)};
  };

  if (absl::GetFlag(FLAGS_mode) == "commit") {
    absl::StatusOr<std::unique_ptr<StateStore>> target = OpenStateStore(
        absl::GetFlag(FLAGS_store).empty() ? absl::StrCat("rocksdb:", absl::GetFlag(FLAGS_dir))
                                           : absl::GetFlag(FLAGS_store));
    if (!target.ok()) return Die(target.status());
    StateStore& store = **target;
    const int64_t n = absl::GetFlag(FLAGS_records);
    std::vector<uint64_t> versions(static_cast<size_t>(n), kAbsentVersion);
    std::vector<WriteOutcome> outcomes;
    std::vector<double> ms;
    int64_t bytes = 0;
    const auto start = std::chrono::steady_clock::now();
    for (int64_t b = 0; b < absl::GetFlag(FLAGS_batches); ++b) {
      std::vector<StoreWrite> batch;
      for (int64_t i = 0; i < n; ++i) {
        batch.push_back(record(i));  // the same n sessions again
        batch.back().expect = versions[static_cast<size_t>(i)];
      }
      for (const StoreWrite& w : batch) bytes += static_cast<int64_t>(w.value->size());
      const auto t0 = std::chrono::steady_clock::now();
      if (absl::Status st = store.CommitVersioned(batch, outcomes); !st.ok()) return Die(st);
      for (int64_t i = 0; i < n; ++i) {
        const WriteOutcome& o = outcomes[static_cast<size_t>(i)];
        if (o.conflict) return Die(absl::AbortedError("a compare-and-set lost: another writer?"));
        versions[static_cast<size_t>(i)] = o.version;
      }
      ms.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    double mean = 0;
    for (double v : ms) mean += v / static_cast<double>(ms.size());
    std::printf(
        "{\"records\": %lld, \"batches\": %zu, \"p50_ms\": %.3f, \"p99_ms\": %.3f, "
        "\"mean_ms\": %.3f, \"mb_per_s\": %.1f}\n",
        static_cast<long long>(n), ms.size(), Quantile(ms, 0.5), Quantile(ms, 0.99), mean,
        static_cast<double>(bytes) / seconds / 1e6);
    return 0;
  }

  auto store = RocksDbStore::Open(absl::GetFlag(FLAGS_dir));
  if (!store.ok()) return Die(store.status());
  const int64_t sessions = absl::GetFlag(FLAGS_sessions);
  constexpr int64_t kBatch = 4096;
  const auto start = std::chrono::steady_clock::now();
  int64_t record_bytes = 0;
  for (int64_t i = 0; i < sessions; i += kBatch) {
    std::vector<StoreWrite> batch;
    for (int64_t j = i; j < std::min(sessions, i + kBatch); ++j) {
      batch.push_back(record(j));
      record_bytes += static_cast<int64_t>(batch.back().value->size());
    }
    if (absl::Status st = (*store)->Commit(batch); !st.ok()) return Die(st);
  }
  const double write_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (absl::Status st = (*store)->CompactAll(); !st.ok()) return Die(st);
  const int64_t disk = (*store)->DiskBytes();
  std::printf(
      "{\"sessions\": %lld, \"write_s\": %.1f, \"record_bytes\": %lld, \"state_bytes\": %lld, "
      "\"disk_bytes\": %lld, \"disk_bytes_per_session\": %.1f, \"ratio_to_state_bytes\": %.3f}\n",
      static_cast<long long>(sessions), write_s,
      static_cast<long long>(record_bytes / std::max<int64_t>(1, sessions)),
      static_cast<long long>(state_bytes), static_cast<long long>(disk),
      static_cast<double>(disk) / static_cast<double>(sessions),
      static_cast<double>(disk) / static_cast<double>(sessions) / static_cast<double>(state_bytes));
  return 0;
}

}  // namespace
}  // namespace aaren

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return aaren::Main();
}
