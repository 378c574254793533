// SPDX-License-Identifier: Apache-2.0
// Session ids: server-made ones are 128 random bits from the kernel's CSPRNG (getrandom(2)) as
// 32 lowercase hex digits, unguessable by other clients; client-chosen ones must match
// [A-Za-z0-9._-]{1,128}.
#ifndef AAREN_ENGINE_SESSION_ID_H_
#define AAREN_ENGINE_SESSION_ID_H_

#include <cstdint>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace aaren {

inline constexpr size_t kMaxSessionIdLength = 128;

// A fresh 128-bit random id (32 hex digits). Thread-safe. Aborts only if the kernel's random
// source fails, which getrandom(2) does not do once the pool is initialised.
std::string NewSessionId();

// A fresh random 64-bit session incarnation number (Session::uid), never 0. Thread-safe.
uint64_t NewSessionUid();

// OK when `id` is a valid client-chosen id; otherwise INVALID_ARGUMENT naming `field`.
absl::Status ValidateSessionId(absl::string_view id, absl::string_view field);

// A session id as a live Session holds it: inline up to kInline characters (every server-made
// id has 32), on the heap beyond that, so an idle session's id costs no allocation of its own
// (a std::string's would be 48 bytes of heap beside its 32). Its alignment is 1 and its size
// kInline + 1, so a Session packs one-byte fields right after it. Holds up to 255 characters,
// more than kMaxSessionIdLength. Not copyable; read it as a string_view.
class StoredSessionId {
 public:
  static constexpr size_t kInline = 32;

  StoredSessionId() = default;
  ~StoredSessionId() { Clear(); }
  StoredSessionId(const StoredSessionId&) = delete;
  StoredSessionId& operator=(const StoredSessionId&) = delete;
  // Aborts for an id of more than 255 characters (callers validate ids first).
  StoredSessionId& operator=(absl::string_view id);

  const char* data() const { return size_ > kInline ? heap() : bytes_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  absl::string_view view() const { return absl::string_view(data(), size_); }
  operator absl::string_view() const { return view(); }  // NOLINT: reads as the id
  std::string str() const { return std::string(view()); }

  friend bool operator==(const StoredSessionId& a, absl::string_view b) { return a.view() == b; }
  friend std::ostream& operator<<(std::ostream& os, const StoredSessionId& id) {
    return os << id.view();
  }

 private:
  // Beyond kInline characters the first bytes of bytes_ hold the heap pointer (memcpy: bytes_
  // has no pointer alignment).
  char* heap() const;
  void Clear();

  char bytes_[kInline] = {};
  uint8_t size_ = 0;
};
static_assert(sizeof(StoredSessionId) == StoredSessionId::kInline + 1);

}  // namespace aaren

#endif  // AAREN_ENGINE_SESSION_ID_H_
