// SPDX-License-Identifier: Apache-2.0
// SessionRecord: one session as the StateStore keeps it, and its byte format.
//
// Format (little-endian), version 1:
//   "AAR1" magic (4 bytes) | u32 format version | u32 CRC-32 (zlib) of everything after it |
//   payload: strings are u32 length + bytes, float arrays u32 count + f32 values:
//     tenant, id, model, config_hash, u64 uid, i64 position, i64 created_ms, i64 last_used_ms,
//     u32 idle_ttl_s, f32[] state, f32[] last_output,
//     retry: i64 position_before (-1: none), i64 length, u64 fingerprint, u8 mode,
//            i64 value_flops, i64 value_flops_exact, f32[] outputs (ALL with several rows only).
//   version 2 appends: writer (string: the --replica_id of the server that wrote it).
// Compatibility: a reader accepts every version up to its own and refuses newer ones with
// DATA_LOSS saying so (the record is kept, not deleted); fields are only ever appended.
#ifndef AAREN_ENGINE_STORE_SESSION_RECORD_H_
#define AAREN_ENGINE_STORE_SESSION_RECORD_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace aaren {

inline constexpr uint32_t kSessionRecordVersion = 2;

struct SessionRecord {
  std::string tenant;  // "" for the anonymous tenant
  std::string id;
  std::string model;
  std::string config_hash;
  uint64_t uid = 0;
  int64_t position = 0;
  int64_t created_ms = 0;
  int64_t last_used_ms = 0;
  uint32_t idle_ttl_s = 0;
  std::vector<float> state;
  std::vector<float> last_output;
  // The last append's retry fingerprint and reply (engine/session.h AppendRecord).
  int64_t retry_position_before = -1;
  int64_t retry_length = 0;
  uint64_t retry_fingerprint = 0;
  uint8_t retry_mode = 0;  // OutputMode
  int64_t retry_value_flops = 0;
  int64_t retry_value_flops_exact = 0;
  std::vector<float> retry_outputs;
  // Version 2: the server that wrote the record ("" in version 1 records); a server that loads
  // a record another one wrote counts an ownership move.
  std::string writer;
};

// The store key of a session: "s/" TENANT "/" ID (tenants never contain '/').
std::string SessionKey(absl::string_view tenant, absl::string_view id);
inline constexpr absl::string_view kSessionKeyPrefix = "s/";

std::string EncodeSessionRecord(const SessionRecord& r);
// DATA_LOSS for a record that is truncated, fails its checksum, has a bad magic, or was written
// by a newer format version (the message says which).
absl::StatusOr<SessionRecord> DecodeSessionRecord(absl::string_view bytes);

// Whether `r` has been idle past its TTL at now_ms. No stored time (a damaged or hostile record
// may hold INT64_MIN) can overflow it: now_ms and the TTL are both small.
inline bool IdlePastTtl(const SessionRecord& r, int64_t now_ms) {
  return r.last_used_ms < now_ms - static_cast<int64_t>(r.idle_ttl_s) * 1000;
}

}  // namespace aaren

#endif  // AAREN_ENGINE_STORE_SESSION_RECORD_H_
