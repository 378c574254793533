// SPDX-License-Identifier: Apache-2.0
// RedisStore: a shared StateStore (state_store.h) in a Redis server (--state_store=
// redis://HOST:PORT[/DB]), written by every replica of a deployment (DESIGN.md 7.3).
//
// Layout: each record is a hash at its key with fields `v` (its version) and `d` (the record's
// bytes); the key `aaren/version` is the counter every put takes its version from, kept at or
// above Redis's clock in microseconds, so that a Redis that lost recent writes does not hand out
// a version again that a server may still hold. A batch is one EVALSHA of a Lua script: Redis runs
// it atomically, checks each write's expected version (compare-and-set), applies the writes that
// pass, PEXPIREs puts that carry a TTL, and answers after the script ran. Durability of an OK
// commit is then Redis's: with `appendonly yes` and `appendfsync always` Redis fsyncs its AOF
// before it answers (the commit survives a Redis crash); with `everysec` a Redis crash loses up
// to a second of acknowledged commits; without persistence a Redis restart loses everything.
//
// Connections: a pool of synchronous hiredis connections (the scheduler's commits and the
// request threads' loads run in parallel), each set up with AUTH, SELECT and CLIENT SETNAME, at
// most kMaxConnections open at once for reads (commits have kCommitReserve more of their own): a
// call that finds them all busy waits up to kCommandTimeout for one, then fails UNAVAILABLE
// saying so (a slow Redis never makes a replica open a connection per waiting request). A
// connection that fails (I/O error, timeout, Redis restarted) is dropped and the next call
// connects again, so a Redis that comes back is used again without a restart; so is one whose
// Redis answered READONLY (it was demoted to a replica: a new connection finds the primary again
// behind a moved address), LOADING or MASTERDOWN. Every call is bounded by kCommandTimeout (a
// call that found every connection busy: twice that); errors are UNAVAILABLE naming the store, a
// timeout saying how long it waited.
//
// TLS: Debian 12's hiredis is 0.14, which has no TLS (hiredis_ssl arrived in 1.0): rediss:// is
// refused at open with a message saying so.
//
// Thread-safe: every method may be called from any thread.
#ifndef AAREN_ENGINE_STORE_REDIS_STORE_H_
#define AAREN_ENGINE_STORE_REDIS_STORE_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "engine/store/state_store.h"

struct redisContext;

namespace aaren {

class RedisStore : public StateStore {
 public:
  // Connect and command timeout of every call.
  static constexpr std::chrono::milliseconds kCommandTimeout{2000};
  // Idle connections kept for reuse.
  static constexpr size_t kPoolSize = 8;
  // Connections open at once (idle and in use) for reads; commits (the scheduler's) may open
  // kCommitReserve more, so reads stalled on a slow Redis never make a commit wait for a slot.
  static constexpr int kMaxConnections = 16;
  static constexpr int kCommitReserve = 2;

  // Parses `spec` (redis://HOST:PORT[/DB]), connects and checks the server with PING.
  // INVALID_ARGUMENT for a spec that does not parse (naming --state_store) or rediss://;
  // FAILED_PRECONDITION when Redis cannot be reached or refuses AUTH/SELECT.
  static absl::StatusOr<std::unique_ptr<RedisStore>> Open(absl::string_view spec,
                                                          const StateStoreOptions& options);
  ~RedisStore() override;
  RedisStore(const RedisStore&) = delete;
  RedisStore& operator=(const RedisStore&) = delete;

  // "redis://HOST:PORT/DB" (never the password).
  std::string Describe() const override;
  // Unconditional writes (every expectation ignored).
  absl::Status Commit(const std::vector<StoreWrite>& batch) override;
  absl::StatusOr<std::optional<std::string>> Get(absl::string_view key) override;
  // SCAN over the keys, then the values in key order (keys written meanwhile may be missed).
  absl::Status Scan(absl::string_view prefix, ScanFn fn) override;
  // Redis keeps its own files: 0.
  int64_t DiskBytes() const override { return 0; }
  bool Shared() const override { return true; }
  absl::Status CommitVersioned(const std::vector<StoreWrite>& batch,
                               std::vector<WriteOutcome>& outcomes) override;
  absl::StatusOr<std::optional<VersionedValue>> GetVersioned(absl::string_view key) override;

 private:
  struct Conn;
  RedisStore(std::string host, int port, int db, StateStoreOptions options);

  // A pooled connection, or a new one while fewer than kMaxConnections are open (else waits up
  // to kCommandTimeout for one); Release puts it back when it is still healthy. A Conn counts in
  // open_ from Acquire until it is destroyed.
  enum class Use { kRead, kCommit };
  absl::StatusOr<std::unique_ptr<Conn>> Acquire(Use use = Use::kRead);
  void Release(std::unique_ptr<Conn> c);
  void Closed();  // a Conn of this store was destroyed
  absl::StatusOr<std::unique_ptr<Conn>> Connect();
  absl::Status Unavailable(absl::string_view what, absl::string_view why) const;
  absl::Status RunBatch(const std::vector<StoreWrite>& batch, bool check,
                        std::vector<WriteOutcome>* outcomes);

  const std::string host_;
  const int port_;
  const int db_;
  const StateStoreOptions options_;
  absl::Mutex mu_;
  std::vector<std::unique_ptr<Conn>> idle_ ABSL_GUARDED_BY(mu_);
  int open_ ABSL_GUARDED_BY(mu_) = 0;  // Conns alive: idle_ and those in use
};

}  // namespace aaren

#endif  // AAREN_ENGINE_STORE_REDIS_STORE_H_
