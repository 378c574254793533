// SPDX-License-Identifier: Apache-2.0
// Status propagation macros in the style of abseil/protobuf internals: errors are values
// (absl::Status / absl::StatusOr) and these keep call sites flat.
#ifndef AAREN_CORE_STATUS_MACROS_H_
#define AAREN_CORE_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define AAREN_CONCAT_INNER_(a, b) a##b
#define AAREN_CONCAT_(a, b) AAREN_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status) and returns it from the enclosing function if not OK.
#define RETURN_IF_ERROR(expr)                      \
  do {                                             \
    ::absl::Status aaren_status_ = (expr);         \
    if (!aaren_status_.ok()) return aaren_status_; \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, F())`: evaluates F() (an absl::StatusOr<T>), returns its status
// from the enclosing function if not OK, otherwise moves the value into `lhs`.
#define ASSIGN_OR_RETURN(lhs, expr) \
  AAREN_ASSIGN_OR_RETURN_IMPL_(AAREN_CONCAT_(aaren_statusor_, __LINE__), lhs, expr)
#define AAREN_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr)  \
  auto statusor = (expr);                                  \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#endif  // AAREN_CORE_STATUS_MACROS_H_
