// SPDX-License-Identifier: Apache-2.0
// Tensor: a dense, owned, row-major float32 array with a shape. The unit in which model weights
// are loaded, validated and handed to backends. Deliberately minimal: no views, no strides.
#ifndef AAREN_CORE_TENSOR_H_
#define AAREN_CORE_TENSOR_H_

#include <cstdint>
#include <string>
#include <vector>

namespace aaren {

struct Tensor {
  std::vector<int64_t> shape;  // outermost first; empty = scalar
  std::vector<float> data;     // row-major; data.size() == NumElements(shape)

  int64_t num_elements() const { return static_cast<int64_t>(data.size()); }
  const float* ptr() const { return data.data(); }
};

// Product of `shape` (1 for a scalar; 0 if any dimension is 0). For a shape with no zero
// dimension the caller guarantees no overflow (the safetensors reader checks).
int64_t NumElements(const std::vector<int64_t>& shape);

// "[2, 3]" for diagnostics.
std::string ShapeToString(const std::vector<int64_t>& shape);

}  // namespace aaren

#endif  // AAREN_CORE_TENSOR_H_
