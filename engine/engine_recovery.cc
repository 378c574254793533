// SPDX-License-Identifier: Apache-2.0
// Engine: start-up recovery from a local store (Recover), and what a drain could not write
// (UnwrittenChanges). The policies are at the top of engine.h; the commits are in
// engine_durability.cc.
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "engine/engine.h"
#include "engine/store/session_record.h"

namespace aaren {
namespace {

// Problems a RecoveryReport lists by name (the counts cover all of them).
constexpr size_t kProblemsListed = 20;
// Expired records are deleted in batches of this many during recovery.
constexpr size_t kRecoveryDeleteBatch = 4096;

}  // namespace

absl::Status Engine::UnwrittenChanges() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!durable() || (dirty_.empty() && tombstones_.empty())) return absl::OkStatus();
  return absl::UnavailableError(
      absl::StrCat(dirty_.size(), " changed sessions and ", tombstones_.size(),
                   " deletes were not written to ", options_.state_store->Describe(), ": ",
                   last_commit_error_.ok() ? "their state could not be read into a record"
                                           : last_commit_error_.message()));
}

absl::StatusOr<RecoveryReport> Engine::Recover() {
  RecoveryReport report;
  if (!durable()) return report;
  // Shared stores: sessions are loaded on first use (LoadFromStore); holding every replica's
  // sessions here would only make stale copies.
  if (shared()) return report;
  const int64_t start_ns = SteadyNowNs();
  const int64_t now = NowUnixMs();
  std::vector<std::string> expired;
  auto problem = [&](absl::string_view key, absl::string_view why) {
    if (report.problems.size() < kProblemsListed) {
      report.problems.push_back(absl::StrCat(key, ": ", why));
    }
  };
  {
    std::lock_guard<std::mutex> lock(mu_);
    RETURN_IF_ERROR(options_.state_store->Scan(
        kSessionKeyPrefix, [&](absl::string_view key, absl::string_view value) -> absl::Status {
          ++report.records;
          absl::StatusOr<SessionRecord> r = DecodeSessionRecord(value);
          if (r.ok() && SessionKey(r->tenant, r->id) != key) {
            r = absl::DataLossError("the record's tenant and id do not match its key");
          }
          if (!r.ok()) {
            ++report.corrupt;
            problem(key, r.status().message());
            return absl::OkStatus();
          }
          if (IdlePastTtl(*r, now)) {
            ++report.expired;
            expired.emplace_back(key);
            return absl::OkStatus();
          }
          absl::Status st = RestoreRecordLocked(*r, nullptr);
          if (st.ok()) {
            ++report.recovered;
          } else if (st.code() == absl::StatusCode::kNotFound ||
                     st.code() == absl::StatusCode::kFailedPrecondition) {
            ++report.other_model;
            problem(key, absl::StrCat("model '", r->model, "': ", st.message()));
          } else if (st.code() == absl::StatusCode::kDataLoss) {
            ++report.corrupt;
            problem(key, st.message());
          } else {
            ++report.no_room;
            problem(key, st.message());
          }
          return absl::OkStatus();
        }));
  }
  // Expired records are deleted; a store that refuses the deletes (a full disk) does not stop
  // the start: the live sessions are loaded, the records stay and are reported, and the next
  // start drops them again.
  for (size_t i = 0; i < expired.size(); i += kRecoveryDeleteBatch) {
    std::vector<StoreWrite> batch;
    for (size_t j = i; j < std::min(expired.size(), i + kRecoveryDeleteBatch); ++j) {
      batch.push_back(StoreWrite{std::move(expired[j]), std::nullopt});
    }
    if (absl::Status st = options_.state_store->Commit(batch); !st.ok()) {
      problem("expired records", absl::StrCat("not deleted: ", st.message()));
      break;
    }
  }
  report.seconds = static_cast<double>(SteadyNowNs() - start_ns) * 1e-9;
  if (options_.observer != nullptr) {
    options_.observer->OnRecovery(report.recovered, report.skipped(), report.seconds);
  }
  return report;
}

}  // namespace aaren
