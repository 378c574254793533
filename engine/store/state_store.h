// SPDX-License-Identifier: Apache-2.0
// StateStore: where session records (session_record.h) outlive the process. The engine writes
// one batch per commit (a scheduler tick with --durability=ack, an interval with checkpoint),
// reads records back by key and scans them all at start-up. Implementations: memory
// (memory_store.h: tests, and a process-local store), embedded RocksDB (rocksdb_store.h), Redis
// (redis_store.h: shared by several servers).
//
// Contract of every implementation:
//   - Commit(batch) is atomic and durable: when it returns OK every write of the batch survives
//     kill -9 and power loss (for RocksDB: one WriteBatch, one WAL fsync); when it fails none of
//     them may be assumed applied, and the store stays usable (a later Commit may succeed, e.g.
//     once disk space returns). Writes are applied in batch order (a delete then a put of the
//     same key leaves the put).
//   - Errors: UNAVAILABLE for a write or read that failed (disk full, I/O error, read-only),
//     with a message naming the store (Describe()); DATA_LOSS for a store whose files are
//     damaged; FAILED_PRECONDITION at open for a directory that cannot be used (naming
//     --state_store).
//   - Thread-safe: Commit, Get and Scan may be called from any thread.
//   - Shared stores (Shared(): several servers write the same records) version every key: each
//     put gives its key a new version, never used before by any key of the store, and
//     CommitVersioned applies a write only when the key's version is the one it expects
//     (compare-and-set), so two servers can never both replace one state. Each write of a batch
//     is checked on its own; the writes that pass are applied atomically together. Stores that
//     are not shared are written by one process only (RocksDB holds a lock on its directory):
//     they ignore expectations and report version 0.
#ifndef AAREN_ENGINE_STORE_STATE_STORE_H_
#define AAREN_ENGINE_STORE_STATE_STORE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace aaren {

// StoreWrite::expect: write whatever the key's version is.
inline constexpr uint64_t kAnyVersion = ~uint64_t{0};
// StoreWrite::expect: the key must not exist (a version of 0 means "absent" everywhere).
inline constexpr uint64_t kAbsentVersion = 0;

// One write of a batch: a put (value set) or a delete (value empty).
struct StoreWrite {
  std::string key;
  std::optional<std::string> value;
  // Shared stores: the version the key must have now for this write to apply.
  uint64_t expect = kAnyVersion;
  // Puts, shared stores: the store may drop the record this long after the write (0: keep it).
  // Redis PEXPIREs the key, so records of sessions no server holds still expire.
  int64_t ttl_ms = 0;
};

// What CommitVersioned did with one write.
struct WriteOutcome {
  // The key's version was not the expected one: the write was not applied.
  bool conflict = false;
  // The key's version now: after the write, or the one found on a conflict (0: absent).
  uint64_t version = 0;
  // On a conflict: the value the key holds now (nullopt: it does not exist).
  std::optional<std::string> current;
};

// A value and its version (0 for stores that do not version).
struct VersionedValue {
  std::string value;
  uint64_t version = 0;
};

class StateStore {
 public:
  virtual ~StateStore() = default;

  // How the store is named in messages and logs, e.g. "rocksdb:/var/lib/aaren".
  virtual std::string Describe() const = 0;
  // Applies `batch` atomically and durably (see the contract above). An empty batch is OK.
  virtual absl::Status Commit(const std::vector<StoreWrite>& batch) = 0;
  // The value at `key`, nullopt when there is none.
  virtual absl::StatusOr<std::optional<std::string>> Get(absl::string_view key) = 0;
  // Calls fn(key, value) for every key starting with `prefix`, in key order; stops at the first
  // error fn returns and returns it. Damaged store files: DATA_LOSS.
  using ScanFn = absl::FunctionRef<absl::Status(absl::string_view key, absl::string_view value)>;
  virtual absl::Status Scan(absl::string_view prefix, ScanFn fn) = 0;
  // Bytes the store takes on disk now (0 for stores that keep nothing on disk).
  virtual int64_t DiskBytes() const = 0;

  // Whether other servers write this store too (see the contract above).
  virtual bool Shared() const { return false; }
  // Commit with compare-and-set: `outcomes` gets one entry per write, in batch order. A write
  // whose expectation fails is skipped and reported (the call still returns OK); an error means
  // nothing was applied. Default (stores that are not shared): Commit, every write applied.
  virtual absl::Status CommitVersioned(const std::vector<StoreWrite>& batch,
                                       std::vector<WriteOutcome>& outcomes);
  // Get with the key's version. Default: Get, version 0.
  virtual absl::StatusOr<std::optional<VersionedValue>> GetVersioned(absl::string_view key);
};

// What OpenStateStore needs besides the spec.
struct StateStoreOptions {
  // Redis: the AUTH argument ("PASSWORD", or "USER PASSWORD" for an ACL user); "" = no AUTH.
  std::string password;
  // Redis: the name its connections give themselves (CLIENT SETNAME; shows in CLIENT LIST).
  std::string client_name;
};

// Opens the store `spec` names (--state_store): "" -> nullptr (no store); "memory:" -> a
// MemoryStore; "rocksdb:PATH" or a bare PATH -> a RocksDbStore in directory PATH (created when
// missing); "redis://HOST:PORT[/DB]" -> a RedisStore (connected and checked with PING). Errors
// name --state_store.
absl::StatusOr<std::unique_ptr<StateStore>> OpenStateStore(absl::string_view spec,
                                                           const StateStoreOptions& options = {});

}  // namespace aaren

#endif  // AAREN_ENGINE_STORE_STATE_STORE_H_
