// SPDX-License-Identifier: Apache-2.0
// Session ids: server-made ones are 128 random bits from the kernel's CSPRNG (getrandom(2)) as
// 32 lowercase hex digits, unguessable by other clients; client-chosen ones must match
// [A-Za-z0-9._-]{1,128}.
#ifndef AAREN_ENGINE_SESSION_ID_H_
#define AAREN_ENGINE_SESSION_ID_H_

#include <cstdint>
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

}  // namespace aaren

#endif  // AAREN_ENGINE_SESSION_ID_H_
