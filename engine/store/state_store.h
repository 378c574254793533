// SPDX-License-Identifier: Apache-2.0
// StateStore: where session records (session_record.h) outlive the process. The engine writes
// one batch per commit (a scheduler tick with --durability=ack, an interval with checkpoint),
// reads records back by key and scans them all at start-up. Implementations: memory
// (memory_store.h: tests, and a process-local store), embedded RocksDB (rocksdb_store.h); Redis
// follows the same interface.
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

// One write of a batch: a put (value set) or a delete (value empty).
struct StoreWrite {
  std::string key;
  std::optional<std::string> value;
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
};

// Opens the store `spec` names (--state_store): "" -> nullptr (no store); "memory:" -> a
// MemoryStore; "rocksdb:PATH" or a bare PATH -> a RocksDbStore in directory PATH (created when
// missing); "redis://..." -> INVALID_ARGUMENT until the Redis store is built. Errors name
// --state_store.
absl::StatusOr<std::unique_ptr<StateStore>> OpenStateStore(absl::string_view spec);

}  // namespace aaren

#endif  // AAREN_ENGINE_STORE_STATE_STORE_H_
