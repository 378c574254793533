// SPDX-License-Identifier: Apache-2.0
#include "engine/store/memory_store.h"

#include <utility>

#include "absl/strings/match.h"

namespace aaren {

std::string MemoryStore::Describe() const { return "memory:"; }

absl::Status MemoryStore::ApplyLocked(const std::vector<StoreWrite>& batch, bool check,
                                      std::vector<WriteOutcome>* outcomes) {
  batch_sizes_.push_back(batch.size());
  if (batch_sizes_.size() > kBatchSizesKept) batch_sizes_.pop_front();
  if (!fail_later_.ok() && commits_before_failing_-- <= 0) {
    fail_commits_ = std::move(fail_later_);
    fail_later_ = absl::OkStatus();
  }
  if (!fail_commits_.ok() && !apply_failed_commits_) {
    absl::Status st = fail_commits_;
    if (fail_once_) {
      fail_commits_ = absl::OkStatus();
      fail_once_ = false;
    }
    return st;
  }
  if (outcomes != nullptr) outcomes->assign(batch.size(), WriteOutcome{});
  for (size_t i = 0; i < batch.size(); ++i) {
    const StoreWrite& w = batch[i];
    auto it = records_.find(w.key);
    const uint64_t found = it == records_.end() ? kAbsentVersion : it->second.version;
    if (check && w.expect != kAnyVersion && w.expect != found) {
      if (outcomes != nullptr) {
        WriteOutcome& o = (*outcomes)[i];
        o.conflict = true;
        o.version = found;
        if (it != records_.end()) o.current = it->second.value;
      }
      continue;
    }
    uint64_t now = kAbsentVersion;
    if (w.value.has_value()) {
      now = ++last_version_;
      records_.insert_or_assign(w.key, VersionedValue{*w.value, now});
    } else if (it != records_.end()) {
      records_.erase(it);
    }
    if (outcomes != nullptr) (*outcomes)[i].version = now;
    ++writes_;
  }
  if (!fail_commits_.ok()) return fail_commits_;  // (apply_failed_commits_: applied, yet failed)
  ++commits_;
  return absl::OkStatus();
}

void MemoryStore::WaitIfHeldLocked() {
  if (hold_next_ <= 0) return;
  --hold_next_;
  ++held_;
  const uint64_t generation = hold_generation_;
  auto released = [this, generation]()
                      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return hold_generation_ != generation; };
  mu_.Await(absl::Condition(&released));
  --held_;
}

void MemoryStore::HoldNextCommits(int64_t n) {
  absl::MutexLock lock(&mu_);
  hold_next_ = n;
}

void MemoryStore::ReleaseHeldCommits() {
  absl::MutexLock lock(&mu_);
  ++hold_generation_;
}

int64_t MemoryStore::held_commits() const {
  absl::MutexLock lock(&mu_);
  return held_;
}

absl::Status MemoryStore::Commit(const std::vector<StoreWrite>& batch) {
  absl::MutexLock lock(&mu_);
  WaitIfHeldLocked();
  return ApplyLocked(batch, /*check=*/false, nullptr);
}

absl::Status MemoryStore::CommitVersioned(const std::vector<StoreWrite>& batch,
                                          std::vector<WriteOutcome>& outcomes) {
  absl::MutexLock lock(&mu_);
  WaitIfHeldLocked();
  return ApplyLocked(batch, /*check=*/true, &outcomes);
}

absl::StatusOr<std::optional<std::string>> MemoryStore::Get(absl::string_view key) {
  absl::MutexLock lock(&mu_);
  ++reads_;
  auto it = records_.find(key);
  if (it == records_.end()) return std::nullopt;
  return it->second.value;
}

absl::StatusOr<std::optional<VersionedValue>> MemoryStore::GetVersioned(absl::string_view key) {
  absl::MutexLock lock(&mu_);
  ++reads_;
  auto it = records_.find(key);
  if (it == records_.end()) return std::nullopt;
  return it->second;
}

absl::Status MemoryStore::Scan(absl::string_view prefix, ScanFn fn) {
  absl::MutexLock lock(&mu_);
  for (auto it = records_.lower_bound(prefix);
       it != records_.end() && absl::StartsWith(it->first, prefix); ++it) {
    if (absl::Status st = fn(it->first, it->second.value); !st.ok()) return st;
  }
  return absl::OkStatus();
}

void MemoryStore::FailCommitsAfter(int64_t n, absl::Status st) {
  absl::MutexLock lock(&mu_);
  commits_before_failing_ = n;
  fail_later_ = std::move(st);
}

void MemoryStore::FailOneCommitAfter(int64_t n, absl::Status st) {
  absl::MutexLock lock(&mu_);
  commits_before_failing_ = n;
  fail_later_ = std::move(st);
  fail_once_ = true;
}

void MemoryStore::FailCommits(absl::Status st, bool apply) {
  absl::MutexLock lock(&mu_);
  fail_commits_ = std::move(st);
  apply_failed_commits_ = apply;
}

int64_t MemoryStore::commits() const {
  absl::MutexLock lock(&mu_);
  return commits_;
}

int64_t MemoryStore::writes() const {
  absl::MutexLock lock(&mu_);
  return writes_;
}

int64_t MemoryStore::reads() const {
  absl::MutexLock lock(&mu_);
  return reads_;
}

std::vector<size_t> MemoryStore::batch_sizes() const {
  absl::MutexLock lock(&mu_);
  return std::vector<size_t>(batch_sizes_.begin(), batch_sizes_.end());
}

}  // namespace aaren
