// SPDX-License-Identifier: Apache-2.0
#include "engine/store/state_store.h"

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "engine/store/memory_store.h"
#include "engine/store/redis_store.h"
#include "engine/store/rocksdb_store.h"

namespace aaren {

absl::Status StateStore::CommitVersioned(const std::vector<StoreWrite>& batch,
                                         std::vector<WriteOutcome>& outcomes) {
  outcomes.assign(batch.size(), WriteOutcome{});
  return Commit(batch);
}

absl::StatusOr<std::optional<VersionedValue>> StateStore::GetVersioned(absl::string_view key) {
  absl::StatusOr<std::optional<std::string>> v = Get(key);
  if (!v.ok()) return v.status();
  if (!v->has_value()) return std::nullopt;
  return VersionedValue{**std::move(v), 0};
}

absl::StatusOr<std::unique_ptr<StateStore>> OpenStateStore(absl::string_view spec,
                                                           const StateStoreOptions& options) {
  if (spec.empty()) return nullptr;
  if (spec == "memory:") return std::make_unique<MemoryStore>();
  if (absl::StartsWith(spec, "redis://") || absl::StartsWith(spec, "rediss://")) {
    absl::StatusOr<std::unique_ptr<RedisStore>> store = RedisStore::Open(spec, options);
    if (!store.ok()) return store.status();
    return std::unique_ptr<StateStore>(std::move(*store));
  }
  absl::string_view path = spec;
  if (absl::ConsumePrefix(&path, "rocksdb:") && path.empty()) {
    return absl::InvalidArgumentError(
        "--state_store: rocksdb: needs a directory, e.g. rocksdb:/var/lib/aaren/state");
  }
  absl::StatusOr<std::unique_ptr<RocksDbStore>> store = RocksDbStore::Open(std::string(path));
  if (!store.ok()) return store.status();
  return std::unique_ptr<StateStore>(std::move(*store));
}

}  // namespace aaren
