// SPDX-License-Identifier: Apache-2.0
#include "engine/store/memory_store.h"

#include <utility>

#include "absl/strings/match.h"

namespace aaren {

std::string MemoryStore::Describe() const { return "memory:"; }

absl::Status MemoryStore::Commit(const std::vector<StoreWrite>& batch) {
  absl::MutexLock lock(&mu_);
  if (!fail_commits_.ok()) return fail_commits_;
  for (const StoreWrite& w : batch) {
    if (w.value.has_value()) {
      records_.insert_or_assign(w.key, *w.value);
    } else {
      records_.erase(w.key);
    }
  }
  ++commits_;
  writes_ += static_cast<int64_t>(batch.size());
  return absl::OkStatus();
}

absl::StatusOr<std::optional<std::string>> MemoryStore::Get(absl::string_view key) {
  absl::MutexLock lock(&mu_);
  auto it = records_.find(key);
  if (it == records_.end()) return std::nullopt;
  return it->second;
}

absl::Status MemoryStore::Scan(absl::string_view prefix, ScanFn fn) {
  absl::MutexLock lock(&mu_);
  for (auto it = records_.lower_bound(prefix);
       it != records_.end() && absl::StartsWith(it->first, prefix); ++it) {
    if (absl::Status st = fn(it->first, it->second); !st.ok()) return st;
  }
  return absl::OkStatus();
}

void MemoryStore::FailCommits(absl::Status st) {
  absl::MutexLock lock(&mu_);
  fail_commits_ = std::move(st);
}

int64_t MemoryStore::commits() const {
  absl::MutexLock lock(&mu_);
  return commits_;
}

int64_t MemoryStore::writes() const {
  absl::MutexLock lock(&mu_);
  return writes_;
}

}  // namespace aaren
