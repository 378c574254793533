// SPDX-License-Identifier: Apache-2.0
// MemoryStore: a StateStore (state_store.h) that keeps its records in process memory. Use it in
// tests (FailCommits injects commit failures; commits() and writes() count what was applied) and
// as --state_store=memory: where records need to outlive a session's eviction but not the process.
// Nothing survives the process, so "durable" here means only "applied".
#ifndef AAREN_ENGINE_STORE_MEMORY_STORE_H_
#define AAREN_ENGINE_STORE_MEMORY_STORE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "engine/store/state_store.h"

namespace aaren {

// Thread-safe: every method may be called from any thread. Scan holds the store's lock while it
// calls fn, so fn must not call back into the store.
//
// Versions every key like a shared store (each put takes the next number of one counter);
// constructed with shared = true it reports Shared(), so that several engines of one process
// can share it as replicas share Redis (tests of the engine's compare-and-set handling).
class MemoryStore : public StateStore {
 public:
  MemoryStore() = default;
  explicit MemoryStore(bool shared) : shared_(shared) {}
  MemoryStore(const MemoryStore&) = delete;
  MemoryStore& operator=(const MemoryStore&) = delete;

  // "memory:".
  std::string Describe() const override;
  // Applies the batch's writes in order (expectations ignored), all at once under the lock.
  // While FailCommits has set an error, returns that error and applies nothing.
  absl::Status Commit(const std::vector<StoreWrite>& batch) override;
  absl::StatusOr<std::optional<std::string>> Get(absl::string_view key) override;
  bool Shared() const override { return shared_; }
  // With compare-and-set (state_store.h), all at once under the lock; FailCommits applies.
  absl::Status CommitVersioned(const std::vector<StoreWrite>& batch,
                               std::vector<WriteOutcome>& outcomes) override;
  absl::StatusOr<std::optional<VersionedValue>> GetVersioned(absl::string_view key) override;
  absl::Status Scan(absl::string_view prefix, ScanFn fn) override;
  // Always 0.
  int64_t DiskBytes() const override { return 0; }

  // Test hook: while `st` is not OK every Commit (an empty batch too) returns `st` and applies
  // nothing, or, with `apply`, applies the batch and then returns `st` (as a store whose write
  // reached its log before its sync failed); absl::OkStatus() makes commits succeed again.
  void FailCommits(absl::Status st, bool apply = false);
  // The same, from the commit after the next `n` (which succeed).
  void FailCommitsAfter(int64_t n, absl::Status st);
  // Only the commit after the next `n` fails (applying nothing); the ones after it succeed.
  void FailOneCommitAfter(int64_t n, absl::Status st);
  // Test hook: the next `n` Commit or CommitVersioned calls wait, before they apply anything,
  // until a ReleaseHeldCommits after they began to wait (as a store stalled on its disk or
  // network would); later calls go on. ReleaseHeldCommits lets the calls waiting now go on
  // (calls still to hold are held in turn); HoldNextCommits(0) holds no more.
  // held_commits() counts the calls waiting now.
  void HoldNextCommits(int64_t n);
  void ReleaseHeldCommits();
  int64_t held_commits() const;
  // Commit calls that returned OK (empty batches included).
  int64_t commits() const;
  // Writes (puts and deletes) that successful commits applied.
  int64_t writes() const;
  // Get and GetVersioned calls.
  int64_t reads() const;
  // How many writes each of the last kBatchSizesKept Commit calls carried (failed ones too),
  // oldest first.
  static constexpr size_t kBatchSizesKept = 1024;
  std::vector<size_t> batch_sizes() const;

 private:
  absl::Status ApplyLocked(const std::vector<StoreWrite>& batch, bool check,
                           std::vector<WriteOutcome>* outcomes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // HoldNextCommits: waits while a hold is on.
  void WaitIfHeldLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const bool shared_ = false;
  mutable absl::Mutex mu_;
  std::map<std::string, VersionedValue, std::less<>> records_ ABSL_GUARDED_BY(mu_);
  uint64_t last_version_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status fail_commits_ ABSL_GUARDED_BY(mu_);
  bool apply_failed_commits_ ABSL_GUARDED_BY(mu_) = false;
  int64_t commits_before_failing_ ABSL_GUARDED_BY(mu_) = 0;  // FailCommitsAfter
  bool fail_once_ ABSL_GUARDED_BY(mu_) = false;              // FailOneCommitAfter
  absl::Status fail_later_ ABSL_GUARDED_BY(mu_);
  int64_t commits_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t hold_next_ ABSL_GUARDED_BY(mu_) = 0;         // calls still to hold
  uint64_t hold_generation_ ABSL_GUARDED_BY(mu_) = 0;  // advanced by each release
  int64_t held_ ABSL_GUARDED_BY(mu_) = 0;              // calls holding now
  int64_t writes_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t reads_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<size_t> batch_sizes_ ABSL_GUARDED_BY(mu_);
};

}  // namespace aaren

#endif  // AAREN_ENGINE_STORE_MEMORY_STORE_H_
