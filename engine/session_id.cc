// SPDX-License-Identifier: Apache-2.0
#include "engine/session_id.h"

#include <sys/random.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace aaren {

namespace {

// `n` bytes from the kernel's CSPRNG.
void RandomBytes(uint8_t* out, size_t n) {
  size_t got = 0;
  while (got < n) {
    const ssize_t r = getrandom(out + got, n - got, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      std::perror("aaren: getrandom");
      std::abort();
    }
    got += static_cast<size_t>(r);
  }
}

}  // namespace

std::string NewSessionId() {
  uint8_t bytes[16];
  RandomBytes(bytes, sizeof(bytes));
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(bytes), sizeof(bytes)));
}

uint64_t NewSessionUid() {
  uint64_t uid = 0;
  while (uid == 0) RandomBytes(reinterpret_cast<uint8_t*>(&uid), sizeof(uid));
  return uid;
}

absl::Status ValidateSessionId(absl::string_view id, absl::string_view field) {
  if (id.empty() || id.size() > kMaxSessionIdLength) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": a session id has 1 to ", kMaxSessionIdLength, " characters, got ", id.size()));
  }
  for (size_t i = 0; i < id.size(); ++i) {
    const char c = id[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": character ", i, " is not one of [A-Za-z0-9._-]"));
    }
  }
  return absl::OkStatus();
}

namespace {

constexpr char kHex[] = "0123456789abcdef";

// The value of a lowercase hex digit; -1 for any other character (uppercase ones too, so that
// only ids whose text the bytes give back exactly are held as bytes).
int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// `text`'s 32 lowercase hex digits as 16 bytes; false (out unspecified) for any other text.
bool ParseHex32(absl::string_view text, char* out) {
  if (text.size() != StoredSessionId::kHexDigits) return false;
  for (size_t i = 0; i < StoredSessionId::kInline; ++i) {
    const int hi = HexValue(text[2 * i]);
    const int lo = HexValue(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<char>((hi << 4) | lo);
  }
  return true;
}

}  // namespace

char* StoredSessionId::heap() const {
  char* p = nullptr;
  std::memcpy(&p, bytes_, sizeof(p));
  return p;
}

void StoredSessionId::Clear() {
  if (tag_ != kHexTag && tag_ > kInline) delete[] heap();
  tag_ = 0;
}

StoredSessionId& StoredSessionId::operator=(absl::string_view id) {
  if (id.size() >= kHexTag) {
    std::fprintf(stderr, "aaren: a stored session id has at most %d characters, got %zu\n",
                 kHexTag - 1, id.size());
    std::abort();
  }
  // `id` may not view this id's own bytes: a Session's id is assigned once, from elsewhere.
  Clear();
  if (ParseHex32(id, bytes_)) {
    tag_ = kHexTag;
    return *this;
  }
  if (id.size() > kInline) {
    char* p = new char[id.size()];
    std::memcpy(p, id.data(), id.size());
    std::memcpy(bytes_, &p, sizeof(p));
  } else if (!id.empty()) {
    std::memcpy(bytes_, id.data(), id.size());
  }
  tag_ = static_cast<uint8_t>(id.size());
  return *this;
}

absl::string_view StoredSessionId::view(Text& scratch) const {
  if (tag_ == kHexTag) {
    for (size_t i = 0; i < kInline; ++i) {
      const auto b = static_cast<unsigned char>(bytes_[i]);
      scratch.chars[2 * i] = kHex[b >> 4];
      scratch.chars[2 * i + 1] = kHex[b & 15];
    }
    return absl::string_view(scratch.chars, kHexDigits);
  }
  return absl::string_view(tag_ > kInline ? heap() : bytes_, tag_);
}

std::string StoredSessionId::str() const {
  Text scratch;
  return std::string(view(scratch));
}

bool operator==(const StoredSessionId& a, absl::string_view b) {
  if (a.tag_ == StoredSessionId::kHexTag) {
    char bytes[StoredSessionId::kInline];
    return ParseHex32(b, bytes) && std::memcmp(bytes, a.bytes_, sizeof(bytes)) == 0;
  }
  StoredSessionId::Text unused;
  return a.view(unused) == b;
}

}  // namespace aaren
