// SPDX-License-Identifier: Apache-2.0
#include "engine/session_id.h"

#include <sys/random.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace aaren {

std::string NewSessionId() {
  uint8_t bytes[16];
  size_t got = 0;
  while (got < sizeof(bytes)) {
    const ssize_t n = getrandom(bytes + got, sizeof(bytes) - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::perror("aaren: getrandom");
      std::abort();
    }
    got += static_cast<size_t>(n);
  }
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(bytes), sizeof(bytes)));
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

}  // namespace aaren
