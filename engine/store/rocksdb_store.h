// SPDX-License-Identifier: Apache-2.0
// RocksDbStore: a StateStore (state_store.h) in an embedded RocksDB database in one directory
// (--state_store=rocksdb:DIR). Each Commit is one WriteBatch written with one WAL fsync, so an
// acknowledged commit survives kill -9 and power loss; a commit cut off by a crash is either
// wholly there or wholly absent after reopening (a torn WAL tail is dropped at open).
//
// After a failed write (disk full, I/O error) the database is not written again: RocksDB 7.8
// (Debian's build keeps its assertions) aborts the process when a file writer is written after a
// failed write. The next Commit closes and reopens the database first (and fails with
// UNAVAILABLE while it cannot be reopened, e.g. the disk is still full); Get and Scan keep
// working meanwhile, from a read-only instance when reopening failed. For the same reason the
// store keeps its own info log (DIR/LOG, DIR/LOG.old, 16 MiB each at most) that drops lines it
// cannot write, and RocksDB's automatic recovery from background errors is off.
//
// Thread-safe: Commit (and the reopen it may do) runs alone; Get, Scan, CompactAll and
// Checkpoint run concurrently with each other, and a Commit waits for them to finish. Scan holds
// the store's lock while it calls fn, so fn must not call back into the store.
#ifndef AAREN_ENGINE_STORE_ROCKSDB_STORE_H_
#define AAREN_ENGINE_STORE_ROCKSDB_STORE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/store/state_store.h"

namespace rocksdb {
class DB;
class Status;
}  // namespace rocksdb

namespace aaren {

class RocksDbStore : public StateStore {
 public:
  // Opens (creating when missing, directory included) the store in `dir`. Errors, all naming
  // --state_store and `dir`: FAILED_PRECONDITION when the directory cannot be created or used,
  // another process (or another RocksDbStore in this one) has it open, or its files are damaged
  // (then the message says to restore it from a backup).
  static absl::StatusOr<std::unique_ptr<RocksDbStore>> Open(std::string dir);
  // Closes the database. Every acknowledged commit is already on disk.
  ~RocksDbStore() override;
  RocksDbStore(const RocksDbStore&) = delete;
  RocksDbStore& operator=(const RocksDbStore&) = delete;

  // "rocksdb:" + dir().
  std::string Describe() const override;
  // Puts overwrite a key's memtable entry in place (same-size records), so the memtable never
  // fills and RocksDB would never switch WAL files on its own: Commit asks for a flush (in the
  // background) after every kWalBytesPerFlush bytes of batches, which bounds the WAL, and so
  // disk use and the replay at the next start, to about that much.
  static constexpr int64_t kWalBytesPerFlush = int64_t{64} << 20;

  // One WriteBatch (deletes and puts in batch order), one synced WAL write. UNAVAILABLE
  // "state store rocksdb:DIR: commit failed: ..." when the write (or the reopen after an earlier
  // failed write) fails; nothing of the batch may be assumed applied then.
  absl::Status Commit(const std::vector<StoreWrite>& batch) override;
  // Errors: DATA_LOSS for damaged files, UNAVAILABLE for a failed read.
  absl::StatusOr<std::optional<std::string>> Get(absl::string_view key) override;
  // Reads with checksum verification. Errors: DATA_LOSS "state store rocksdb:DIR: the store's
  // files are damaged (...); restore it from a backup", UNAVAILABLE for a failed read, or fn's.
  absl::Status Scan(absl::string_view prefix, ScanFn fn) override;
  // The sizes of the files in dir() added up (WAL and info logs included; space a file system
  // preallocated past a file's end is not counted).
  int64_t DiskBytes() const override;

  // Flushes the memtable and compacts every key into the bottom level (benchmarks measure the
  // bytes a record takes with it). Slow, and commits wait for it. UNAVAILABLE while the store
  // is recovering from a failed write, or when the compaction fails.
  absl::Status CompactAll();
  // Writes a consistent copy of the store as of now into `dir`, which must not exist (hard
  // links where the file system allows, so on the same file system it costs little space): a
  // directory that Open accepts, a backup taken online; commits wait for it. FAILED_PRECONDITION
  // when `dir` exists; UNAVAILABLE while the store is recovering from a failed write, or when
  // writing the copy fails.
  absl::Status Checkpoint(const std::string& dir);

  const std::string& dir() const { return dir_; }

 private:
  RocksDbStore(std::string dir, std::unique_ptr<rocksdb::DB> db);

  // UNAVAILABLE: db_ is null (a reopen failed).
  absl::Status NotOpen() const;
  // A failed read `s`: DATA_LOSS for damaged files, UNAVAILABLE "...: `what`: ..." otherwise.
  absl::Status ReadError(const rocksdb::Status& s, absl::string_view what) const;

  // Under the exclusive lock: closes a database that had a failed write and opens it again.
  absl::Status ReopenLocked();

  const std::string dir_;
  // Exclusive: Commit and the reopen; shared: everything that reads db_.
  mutable std::shared_mutex mu_;
  // Null only while a reopen failed and even a read-only instance could not be opened.
  std::unique_ptr<rocksdb::DB> db_;
  // A write failed: db_ must not be written again (it is closed and reopened first). db_ may be
  // a read-only instance then.
  bool needs_reopen_ = false;
  // Bytes of batches written since the last flush was asked for (under the exclusive lock).
  int64_t wal_bytes_since_flush_ = 0;
};

}  // namespace aaren

#endif  // AAREN_ENGINE_STORE_ROCKSDB_STORE_H_
