// SPDX-License-Identifier: Apache-2.0
#include "engine/store/rocksdb_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <mutex>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "rocksdb/db.h"
#include "rocksdb/env.h"
#include "rocksdb/listener.h"
#include "rocksdb/options.h"
#include "rocksdb/utilities/checkpoint.h"
#include "rocksdb/write_batch.h"

namespace aaren {

namespace {

// The store's info log, <dir>/LOG (and LOG.old once it grows past kMaxBytes). RocksDB 7.8's own
// info log asserts (aborts the process) when it writes again after a failed write, which a full
// disk causes; this one ignores write errors: a line that cannot be written is lost.
class StoreInfoLog : public rocksdb::Logger {
 public:
  static constexpr off_t kMaxBytes = 16 << 20;

  explicit StoreInfoLog(const std::string& dir)
      : rocksdb::Logger(rocksdb::InfoLogLevel::INFO_LEVEL),
        path_((std::filesystem::path(dir) / "LOG").string()),
        old_path_(path_ + ".old") {
    OpenFile();
  }
  ~StoreInfoLog() override {
    if (fd_ >= 0) ::close(fd_);
  }

  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override {
    char line[2048];
    const auto now = std::chrono::system_clock::now();
    const std::time_t secs = std::chrono::system_clock::to_time_t(now);
    const int64_t micros =
        std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count() %
        1000000;
    std::tm tm;
    localtime_r(&secs, &tm);
    int n = std::snprintf(line, sizeof(line), "%04d/%02d/%02d-%02d:%02d:%02d.%06lld ",
                          tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                          tm.tm_sec, static_cast<long long>(micros));
    const int body = std::vsnprintf(line + n, sizeof(line) - n - 1, format, ap);
    if (body > 0) n = std::min<int>(n + body, static_cast<int>(sizeof(line)) - 2);
    line[n++] = '\n';

    std::lock_guard<std::mutex> lock(mu_);
    if (fd_ < 0) return;
    const ssize_t wrote = ::write(fd_, line, static_cast<size_t>(n));
    if (wrote > 0) bytes_ += wrote;
    if (bytes_ > kMaxBytes) {
      ::close(fd_);
      std::rename(path_.c_str(), old_path_.c_str());
      OpenFile();
    }
  }

 private:
  void OpenFile() {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    struct stat st;
    bytes_ = (fd_ >= 0 && ::fstat(fd_, &st) == 0) ? st.st_size : 0;
  }

  const std::string path_;
  const std::string old_path_;
  std::mutex mu_;
  int fd_ = -1;
  off_t bytes_ = 0;
};

// Turns off RocksDB's automatic recovery from background errors: it would write again through
// the writers whose writes failed (see StoreInfoLog); the store reopens the database instead.
class NoAutoRecovery : public rocksdb::EventListener {
 public:
  void OnErrorRecoveryBegin(rocksdb::BackgroundErrorReason /*reason*/, rocksdb::Status /*bg_error*/,
                            bool* auto_recovery) override {
    *auto_recovery = false;
  }
};

rocksdb::Options StoreOptions(const std::string& dir) {
  rocksdb::Options o;
  o.create_if_missing = true;
  o.paranoid_checks = true;
  o.compression = rocksdb::kNoCompression;
  o.info_log = std::make_shared<StoreInfoLog>(dir);
  o.listeners.push_back(std::make_shared<NoAutoRecovery>());
  o.max_bgerror_resume_count = 0;
  // Recovery replays the WAL into the memtable without writing it out as an SST first: a
  // reopen after a full disk then needs only a new MANIFEST and WAL, not room for a copy of
  // everything the WAL holds.
  o.avoid_flush_during_recovery = true;
  // RocksDB preallocates 4 MiB for each MANIFEST by default: space DiskBytes cannot see and a
  // nearly full disk does not have. This store's MANIFEST grows by a few bytes per flush.
  o.manifest_preallocation_size = 64 << 10;
  // Each commit rewrites the records of the sessions that changed, all of one size per model: a
  // put then overwrites the key's memtable entry instead of adding a version, so the memtable
  // (and its skiplist) stays as large as the set of live sessions, not the stream of writes.
  // What in-place updates give up: Get takes RocksDB's per-key lock, but an iterator over the
  // live memtable can meet a record half-overwritten (its CRC then fails: DATA_LOSS, never a
  // wrong state). The engine iterates only at recovery, before any write; flushes and
  // checkpoints read immutable memtables, which no update touches.
  o.inplace_update_support = true;
  o.allow_concurrent_memtable_write = false;  // required by inplace_update_support
  return o;
}

// A RocksDB status as messages quote it, code included ("IO error: No space left on device...").
std::string Reason(const rocksdb::Status& s) { return s.ToString(); }

bool IsLockError(const rocksdb::Status& s) {
  return s.IsIOError() &&
         (absl::StrContains(s.ToString(), "lock file") ||
          absl::StrContains(s.ToString(), "lock hold") || absl::StrContains(s.ToString(), "/LOCK"));
}

// Damaged files: corruption RocksDB detected, or a file the store's metadata names that is not
// there (a CURRENT naming a missing MANIFEST, a MANIFEST naming a missing SST).
bool IsDamage(const std::string& dir, const rocksdb::Status& s) {
  if (s.IsCorruption()) return true;
  std::error_code ec;
  const bool has_current = std::filesystem::exists(std::filesystem::path(dir) / "CURRENT", ec);
  return has_current && (s.IsPathNotFound() || s.IsNotFound() ||
                         absl::StrContains(s.ToString(), "No such file or directory"));
}

absl::Status OpenError(const std::string& dir, const rocksdb::Status& s) {
  if (IsLockError(s)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--state_store: cannot open the RocksDB store in ", dir,
        ": another process (or another store in this one) is using it (", Reason(s), ")"));
  }
  if (IsDamage(dir, s)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--state_store: cannot open the RocksDB store in ", dir,
        ": the store's files are damaged (", Reason(s), "); restore it from a backup"));
  }
  return absl::FailedPreconditionError(
      absl::StrCat("--state_store: cannot open the RocksDB store in ", dir, ": ", Reason(s)));
}

// Opens the database in `dir`, read-write (creating it when missing) or read-only.
rocksdb::Status OpenDb(const std::string& dir, bool read_only, std::unique_ptr<rocksdb::DB>* db) {
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = read_only ? rocksdb::DB::OpenForReadOnly(StoreOptions(dir), dir, &raw)
                                : rocksdb::DB::Open(StoreOptions(dir), dir, &raw);
  if (s.ok()) {
    db->reset(raw);
  } else {
    delete raw;
  }
  return s;
}

void CloseDb(std::unique_ptr<rocksdb::DB>* db) {
  if (*db == nullptr) return;
  // A failed Close (e.g. a full disk) changes nothing for the store: every acknowledged commit
  // is in a synced WAL already.
  (*db)->Close().PermitUncheckedError();
  db->reset();
}

}  // namespace

absl::StatusOr<std::unique_ptr<RocksDbStore>> RocksDbStore::Open(std::string dir) {
  if (dir.empty()) {
    return absl::InvalidArgumentError("--state_store: the RocksDB store needs a directory");
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(absl::StrCat("--state_store: cannot create the directory ",
                                                      dir,
                                                      " of the RocksDB store: ", ec.message()));
  }
  if (!std::filesystem::is_directory(dir, ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat("--state_store: ", dir, " is not a directory"));
  }
  std::unique_ptr<rocksdb::DB> db;
  rocksdb::Status s = OpenDb(dir, /*read_only=*/false, &db);
  if (!s.ok()) return OpenError(dir, s);
  return std::unique_ptr<RocksDbStore>(new RocksDbStore(std::move(dir), std::move(db)));
}

RocksDbStore::RocksDbStore(std::string dir, std::unique_ptr<rocksdb::DB> db)
    : dir_(std::move(dir)), db_(std::move(db)) {}

RocksDbStore::~RocksDbStore() {
  std::unique_lock lock(mu_);
  // A clean close writes the memtable out, so the next start reads tables instead of replaying
  // the WAL (not after a failed write: nothing is written then).
  if (db_ != nullptr && !needs_reopen_) db_->Flush(rocksdb::FlushOptions()).PermitUncheckedError();
  CloseDb(&db_);
}

absl::Status RocksDbStore::NotOpen() const {
  return absl::UnavailableError(absl::StrCat("state store ", Describe(),
                                             ": not open (reopening after a failed write failed)"));
}

absl::Status RocksDbStore::ReadError(const rocksdb::Status& s, absl::string_view what) const {
  if (s.IsCorruption()) {
    return absl::DataLossError(absl::StrCat("state store ", Describe(),
                                            ": the store's files are damaged (", Reason(s),
                                            "); restore it from a backup"));
  }
  return absl::UnavailableError(
      absl::StrCat("state store ", Describe(), ": ", what, ": ", Reason(s)));
}

std::string RocksDbStore::Describe() const { return absl::StrCat("rocksdb:", dir_); }

absl::Status RocksDbStore::ReopenLocked() {
  CloseDb(&db_);
  std::unique_ptr<rocksdb::DB> db;
  rocksdb::Status s = OpenDb(dir_, /*read_only=*/false, &db);
  if (!s.ok()) {
    // Keep Get and Scan working until a reopen succeeds: a read-only instance replays the WAL
    // into memory and writes nothing, so it opens on a full disk too.
    std::unique_ptr<rocksdb::DB> ro;
    if (OpenDb(dir_, /*read_only=*/true, &ro).ok()) db_ = std::move(ro);
    return absl::UnavailableError(absl::StrCat("state store ", Describe(),
                                               ": commit failed: cannot reopen the store after "
                                               "an earlier failed write: ",
                                               Reason(s)));
  }
  db_ = std::move(db);
  needs_reopen_ = false;
  return absl::OkStatus();
}

absl::Status RocksDbStore::Commit(const std::vector<StoreWrite>& batch) {
  std::unique_lock lock(mu_);
  if (needs_reopen_) {
    if (absl::Status st = ReopenLocked(); !st.ok()) return st;
  }
  if (batch.empty()) return absl::OkStatus();
  rocksdb::WriteBatch wb;
  for (const StoreWrite& w : batch) {
    rocksdb::Status s = w.value.has_value() ? wb.Put(w.key, *w.value) : wb.Delete(w.key);
    if (!s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("state store ", Describe(), ": commit failed: ", Reason(s)));
    }
  }
  rocksdb::WriteOptions wo;
  wo.sync = true;
  rocksdb::Status s = db_->Write(wo, &wb);
  if (!s.ok()) {
    needs_reopen_ = true;
    return absl::UnavailableError(
        absl::StrCat("state store ", Describe(), ": commit failed: ", Reason(s)));
  }
  wal_bytes_since_flush_ += static_cast<int64_t>(wb.GetDataSize());
  if (wal_bytes_since_flush_ >= kWalBytesPerFlush) {
    // A new WAL from here on; the old one is deleted once its memtable is in an SST. A flush
    // that fails to start is asked for again at the next commit (the batch itself is durable).
    rocksdb::FlushOptions fo;
    fo.wait = false;
    if (db_->Flush(fo).ok()) wal_bytes_since_flush_ = 0;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<std::string>> RocksDbStore::Get(absl::string_view key) {
  std::shared_lock lock(mu_);
  if (db_ == nullptr) return NotOpen();
  rocksdb::ReadOptions ro;
  ro.verify_checksums = true;
  std::string value;
  rocksdb::Status s = db_->Get(ro, rocksdb::Slice(key.data(), key.size()), &value);
  if (s.IsNotFound()) return std::nullopt;
  if (!s.ok()) return ReadError(s, "read failed");
  return value;
}

absl::Status RocksDbStore::Scan(absl::string_view prefix, ScanFn fn) {
  std::shared_lock lock(mu_);
  if (db_ == nullptr) return NotOpen();
  rocksdb::ReadOptions ro;
  ro.verify_checksums = true;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro));
  for (it->Seek(rocksdb::Slice(prefix.data(), prefix.size())); it->Valid(); it->Next()) {
    const rocksdb::Slice k = it->key();
    const absl::string_view key(k.data(), k.size());
    if (!absl::StartsWith(key, prefix)) break;
    const rocksdb::Slice v = it->value();
    if (absl::Status st = fn(key, absl::string_view(v.data(), v.size())); !st.ok()) return st;
  }
  rocksdb::Status s = it->status();
  if (!s.ok()) return ReadError(s, "scan failed");
  return absl::OkStatus();
}

int64_t RocksDbStore::DiskBytes() const {
  int64_t bytes = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    std::error_code size_ec;
    if (!entry.is_regular_file(size_ec)) continue;
    const uintmax_t size = entry.file_size(size_ec);
    // A file RocksDB deletes while we list the directory counts as nothing.
    if (!size_ec) bytes += static_cast<int64_t>(size);
  }
  return bytes;
}

absl::Status RocksDbStore::CompactAll() {
  std::shared_lock lock(mu_);
  if (db_ == nullptr || needs_reopen_) {
    return absl::UnavailableError(absl::StrCat(
        "state store ", Describe(), ": cannot compact while recovering from a failed write"));
  }
  rocksdb::CompactRangeOptions options;
  options.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
  rocksdb::Status s = db_->CompactRange(options, nullptr, nullptr);
  if (!s.ok()) {
    return absl::UnavailableError(
        absl::StrCat("state store ", Describe(), ": compaction failed: ", Reason(s)));
  }
  return absl::OkStatus();
}

absl::Status RocksDbStore::Checkpoint(const std::string& dir) {
  std::shared_lock lock(mu_);
  if (db_ == nullptr || needs_reopen_) {
    return absl::UnavailableError(absl::StrCat(
        "state store ", Describe(), ": cannot checkpoint while recovering from a failed write"));
  }
  std::error_code ec;
  if (std::filesystem::exists(dir, ec)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "state store ", Describe(), ": checkpoint directory ", dir, " already exists"));
  }
  rocksdb::Checkpoint* raw = nullptr;
  rocksdb::Status s = rocksdb::Checkpoint::Create(db_.get(), &raw);
  std::unique_ptr<rocksdb::Checkpoint> checkpoint(raw);
  if (s.ok()) s = checkpoint->CreateCheckpoint(dir);
  if (!s.ok()) {
    return absl::UnavailableError(absl::StrCat("state store ", Describe(), ": checkpoint into ",
                                               dir, " failed: ", Reason(s)));
  }
  return absl::OkStatus();
}

}  // namespace aaren
