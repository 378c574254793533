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

char* StoredSessionId::heap() const {
  char* p = nullptr;
  std::memcpy(&p, bytes_, sizeof(p));
  return p;
}

void StoredSessionId::Clear() {
  if (size_ > kInline) delete[] heap();
  size_ = 0;
}

StoredSessionId& StoredSessionId::operator=(absl::string_view id) {
  if (id.size() > 255) {
    std::fprintf(stderr, "aaren: a stored session id has at most 255 characters, got %zu\n",
                 id.size());
    std::abort();
  }
  // `id` may not view this id's own bytes: a Session's id is assigned once, from elsewhere.
  Clear();
  if (id.size() > kInline) {
    char* p = new char[id.size()];
    std::memcpy(p, id.data(), id.size());
    std::memcpy(bytes_, &p, sizeof(p));
  } else if (!id.empty()) {
    std::memcpy(bytes_, id.data(), id.size());
  }
  size_ = static_cast<uint8_t>(id.size());
  return *this;
}

}  // namespace aaren
