// SPDX-License-Identifier: Apache-2.0
#include "core/tensor.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace aaren {

int64_t NumElements(const std::vector<int64_t>& shape) {
  // A zero dimension makes the product 0 whatever the others are (which may be large enough to
  // overflow if multiplied first).
  for (int64_t d : shape) {
    if (d == 0) return 0;
  }
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeToString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace aaren
