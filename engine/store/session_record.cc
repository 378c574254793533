// SPDX-License-Identifier: Apache-2.0
#include "engine/store/session_record.h"

#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace aaren {

namespace {

constexpr absl::string_view kMagic = "AAR1";
// magic | version | crc
constexpr size_t kHeaderBytes = 4 + 4 + 4;

uint32_t Crc32(absl::string_view bytes) {
  // zlib's crc32 takes a uInt length: feed it in pieces so a huge payload cannot overflow it.
  uLong crc = crc32(0L, Z_NULL, 0);
  while (!bytes.empty()) {
    const size_t n = std::min<size_t>(bytes.size(), std::numeric_limits<uInt>::max());
    crc = crc32(crc, reinterpret_cast<const Bytef*>(bytes.data()), static_cast<uInt>(n));
    bytes.remove_prefix(n);
  }
  return static_cast<uint32_t>(crc);
}

void PutU32(std::string* out, uint32_t v) {
  char b[4];
  for (int i = 0; i < 4; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  out->append(b, 4);
}

void PutU64(std::string* out, uint64_t v) {
  char b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  out->append(b, 8);
}

void PutString(std::string* out, absl::string_view s) {
  PutU32(out, static_cast<uint32_t>(s.size()));
  out->append(s.data(), s.size());
}

void PutFloats(std::string* out, const std::vector<float>& v) {
  PutU32(out, static_cast<uint32_t>(v.size()));
  const size_t at = out->size();
  out->resize(at + 4 * v.size());
  char* p = out->data() + at;
  if constexpr (std::endian::native == std::endian::little) {
    // The format's byte order: one copy (a state is ~1k floats, encoded at every commit).
    if (!v.empty()) std::memcpy(p, v.data(), 4 * v.size());
  } else {
    for (float f : v) {
      uint32_t bits;
      std::memcpy(&bits, &f, sizeof(bits));
      for (int i = 0; i < 4; ++i) *p++ = static_cast<char>((bits >> (8 * i)) & 0xff);
    }
  }
}

uint32_t LoadU32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}

// Reads the payload front to back. Every read checks the bytes that remain first, so no input
// can make it read out of bounds or allocate more than the input's size.
class Reader {
 public:
  explicit Reader(absl::string_view bytes) : rest_(bytes) {}

  size_t remaining() const { return rest_.size(); }

  absl::Status U32(absl::string_view field, uint32_t* v) {
    if (rest_.size() < 4) return Truncated(field);
    *v = LoadU32(rest_.data());
    rest_.remove_prefix(4);
    return absl::OkStatus();
  }

  absl::Status U64(absl::string_view field, uint64_t* v) {
    if (rest_.size() < 8) return Truncated(field);
    *v = static_cast<uint64_t>(LoadU32(rest_.data())) |
         (static_cast<uint64_t>(LoadU32(rest_.data() + 4)) << 32);
    rest_.remove_prefix(8);
    return absl::OkStatus();
  }

  absl::Status I64(absl::string_view field, int64_t* v) {
    uint64_t u;
    RETURN_IF_ERROR(U64(field, &u));
    *v = static_cast<int64_t>(u);
    return absl::OkStatus();
  }

  absl::Status U8(absl::string_view field, uint8_t* v) {
    if (rest_.empty()) return Truncated(field);
    *v = static_cast<uint8_t>(rest_[0]);
    rest_.remove_prefix(1);
    return absl::OkStatus();
  }

  absl::Status String(absl::string_view field, std::string* s) {
    uint32_t n;
    RETURN_IF_ERROR(U32(field, &n));
    if (n > rest_.size()) {
      return absl::DataLossError(absl::StrCat("session record: truncated: ", field, " says ", n,
                                              " bytes, ", rest_.size(), " remain"));
    }
    s->assign(rest_.data(), n);
    rest_.remove_prefix(n);
    return absl::OkStatus();
  }

  absl::Status Floats(absl::string_view field, std::vector<float>* v) {
    uint32_t n;
    RETURN_IF_ERROR(U32(field, &n));
    if (n > rest_.size() / 4) {
      return absl::DataLossError(absl::StrCat("session record: truncated: ", field, " says ", n,
                                              " floats, ", rest_.size(), " bytes remain"));
    }
    v->resize(n);
    if constexpr (std::endian::native == std::endian::little) {
      if (n > 0) std::memcpy(v->data(), rest_.data(), 4 * static_cast<size_t>(n));
    } else {
      for (uint32_t i = 0; i < n; ++i) {
        const uint32_t bits = LoadU32(rest_.data() + 4 * static_cast<size_t>(i));
        std::memcpy(&(*v)[i], &bits, sizeof(bits));
      }
    }
    rest_.remove_prefix(4 * static_cast<size_t>(n));
    return absl::OkStatus();
  }

 private:
  absl::Status Truncated(absl::string_view field) const {
    return absl::DataLossError(
        absl::StrCat("session record: truncated at ", field, " (", rest_.size(), " bytes remain)"));
  }

  absl::string_view rest_;
};

absl::StatusOr<SessionRecord> DecodePayload(absl::string_view payload, uint32_t version) {
  Reader in(payload);
  SessionRecord r;
  RETURN_IF_ERROR(in.String("tenant", &r.tenant));
  RETURN_IF_ERROR(in.String("id", &r.id));
  RETURN_IF_ERROR(in.String("model", &r.model));
  RETURN_IF_ERROR(in.String("config_hash", &r.config_hash));
  RETURN_IF_ERROR(in.U64("uid", &r.uid));
  RETURN_IF_ERROR(in.I64("position", &r.position));
  RETURN_IF_ERROR(in.I64("created_ms", &r.created_ms));
  RETURN_IF_ERROR(in.I64("last_used_ms", &r.last_used_ms));
  RETURN_IF_ERROR(in.U32("idle_ttl_s", &r.idle_ttl_s));
  RETURN_IF_ERROR(in.Floats("state", &r.state));
  RETURN_IF_ERROR(in.Floats("last_output", &r.last_output));
  RETURN_IF_ERROR(in.I64("retry position_before", &r.retry_position_before));
  RETURN_IF_ERROR(in.I64("retry length", &r.retry_length));
  RETURN_IF_ERROR(in.U64("retry fingerprint", &r.retry_fingerprint));
  RETURN_IF_ERROR(in.U8("retry mode", &r.retry_mode));
  RETURN_IF_ERROR(in.I64("retry value_flops", &r.retry_value_flops));
  RETURN_IF_ERROR(in.I64("retry value_flops_exact", &r.retry_value_flops_exact));
  RETURN_IF_ERROR(in.Floats("retry outputs", &r.retry_outputs));
  if (version >= 2) RETURN_IF_ERROR(in.String("writer", &r.writer));
  // A record has exactly the fields of its version; extra bytes that the checksum covers mean
  // the writer was broken.
  if (in.remaining() != 0) {
    return absl::DataLossError(absl::StrCat("session record: ", in.remaining(),
                                            " bytes after the last field of format version ",
                                            version));
  }
  return r;
}

}  // namespace

std::string SessionKey(absl::string_view tenant, absl::string_view id) {
  return absl::StrCat(kSessionKeyPrefix, tenant, "/", id);
}

std::string EncodeSessionRecord(const SessionRecord& r) {
  std::string out;
  out.reserve(kHeaderBytes + 128 + r.tenant.size() + r.id.size() + r.model.size() +
              r.config_hash.size() + r.writer.size() +
              4 * (r.state.size() + r.last_output.size() + r.retry_outputs.size()));
  out.append(kMagic.data(), kMagic.size());
  PutU32(&out, kSessionRecordVersion);
  PutU32(&out, 0);  // CRC, filled in below
  PutString(&out, r.tenant);
  PutString(&out, r.id);
  PutString(&out, r.model);
  PutString(&out, r.config_hash);
  PutU64(&out, r.uid);
  PutU64(&out, static_cast<uint64_t>(r.position));
  PutU64(&out, static_cast<uint64_t>(r.created_ms));
  PutU64(&out, static_cast<uint64_t>(r.last_used_ms));
  PutU32(&out, r.idle_ttl_s);
  PutFloats(&out, r.state);
  PutFloats(&out, r.last_output);
  PutU64(&out, static_cast<uint64_t>(r.retry_position_before));
  PutU64(&out, static_cast<uint64_t>(r.retry_length));
  PutU64(&out, r.retry_fingerprint);
  out.push_back(static_cast<char>(r.retry_mode));
  PutU64(&out, static_cast<uint64_t>(r.retry_value_flops));
  PutU64(&out, static_cast<uint64_t>(r.retry_value_flops_exact));
  PutFloats(&out, r.retry_outputs);
  PutString(&out, r.writer);
  const uint32_t crc = Crc32(absl::string_view(out).substr(kHeaderBytes));
  std::string crc_bytes;
  PutU32(&crc_bytes, crc);
  out.replace(8, 4, crc_bytes);
  return out;
}

absl::StatusOr<SessionRecord> DecodeSessionRecord(absl::string_view bytes) {
  if (bytes.size() < kHeaderBytes) {
    return absl::DataLossError(absl::StrCat("session record: truncated: ", bytes.size(),
                                            " bytes, the header alone has ", kHeaderBytes));
  }
  if (bytes.substr(0, 4) != kMagic) {
    return absl::DataLossError("session record: bad magic (not a session record)");
  }
  const uint32_t version = LoadU32(bytes.data() + 4);
  if (version > kSessionRecordVersion) {
    return absl::DataLossError(absl::StrCat("session record: format version ", version,
                                            " is newer than this server's ",
                                            kSessionRecordVersion));
  }
  if (version == 0) {
    return absl::DataLossError("session record: format version 0 does not exist");
  }
  const uint32_t stored_crc = LoadU32(bytes.data() + 8);
  const absl::string_view payload = bytes.substr(kHeaderBytes);
  const uint32_t crc = Crc32(payload);
  if (crc != stored_crc) {
    const std::string mismatch =
        absl::StrCat("checksum mismatch (stored ", absl::Hex(stored_crc), ", computed ",
                     absl::Hex(crc), " over ", payload.size(), " payload bytes)");
    // Without a length field a cut-off record is told from a damaged one only by parsing it:
    // a payload that ends inside a field was most likely truncated.
    absl::StatusOr<SessionRecord> parsed = DecodePayload(payload, version);
    if (!parsed.ok() && absl::StrContains(parsed.status().message(), "truncated")) {
      return absl::DataLossError(absl::StrCat(parsed.status().message(), "; ", mismatch));
    }
    return absl::DataLossError(absl::StrCat("session record: ", mismatch));
  }
  // Each version decodes the fields of the one before it, then those it appended.
  return DecodePayload(payload, version);
}

}  // namespace aaren
