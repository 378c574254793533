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

// A session id as a live Session holds it, in 17 bytes and no allocation for the ids most
// sessions have: a server-made id (32 lowercase hex digits, and any client id of that form) as
// its 16 bytes; any other id of up to kInline characters inline; longer ones on the heap. Holds
// up to 254 characters, more than kMaxSessionIdLength. Its alignment is 1, so a Session packs
// one-byte fields right after it. Not copyable. Read it through view(), which may need a Text
// to write the hex digits into, or str().
class StoredSessionId {
 public:
  static constexpr size_t kInline = 16;
  static constexpr size_t kHexDigits = 32;
  // Room for the characters of an id held as bytes.
  struct Text {
    char chars[kHexDigits];
  };

  StoredSessionId() = default;
  ~StoredSessionId() { Clear(); }
  StoredSessionId(const StoredSessionId&) = delete;
  StoredSessionId& operator=(const StoredSessionId&) = delete;
  // Aborts for an id of more than 254 characters (callers validate ids first).
  StoredSessionId& operator=(absl::string_view id);

  // The id's characters: in this object, on its heap block, or in `scratch`; valid while both
  // are and the id is not reassigned.
  absl::string_view view(Text& scratch) const;
  std::string str() const;
  size_t size() const { return tag_ == kHexTag ? kHexDigits : tag_; }
  bool empty() const { return tag_ == 0; }
  // Held as 16 bytes (for tests of the layout).
  bool held_as_bytes() const { return tag_ == kHexTag; }

  friend bool operator==(const StoredSessionId& a, absl::string_view b);
  friend std::ostream& operator<<(std::ostream& os, const StoredSessionId& id) {
    Text scratch;
    return os << id.view(scratch);
  }

 private:
  // tag_: the length of an id held as characters (inline up to kInline, on the heap beyond:
  // then the first bytes of bytes_ hold the pointer, by memcpy as bytes_ has no pointer
  // alignment), or kHexTag for an id held as the 16 bytes its 32 hex digits spell.
  static constexpr uint8_t kHexTag = 255;
  char* heap() const;
  void Clear();

  char bytes_[kInline] = {};
  uint8_t tag_ = 0;
};
static_assert(sizeof(StoredSessionId) == StoredSessionId::kInline + 1);

}  // namespace aaren

#endif  // AAREN_ENGINE_SESSION_ID_H_
