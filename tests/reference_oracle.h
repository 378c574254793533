// SPDX-License-Identifier: Apache-2.0
// The test oracle: an independent float64 implementation of the Aaren model that computes
// attention the naive way, as an O(N^2) masked softmax over each prefix (no recurrence, no scan,
// no shared code with the backends beyond reading the weights).
#ifndef AAREN_TESTS_REFERENCE_ORACLE_H_
#define AAREN_TESTS_REFERENCE_ORACLE_H_

#include <cstdint>
#include <vector>

#include "core/model.h"
#include "tests/test_models.h"

namespace aaren::testing {

// Outputs [length, output_dim] for `seq` run from a fresh state, its first token at position
// `first_position` (which only matters for the sinusoidal position encoding).
std::vector<double> ReferenceForward(const Model& model, const Sequence& seq,
                                     int64_t first_position = 0);

}  // namespace aaren::testing

#endif  // AAREN_TESTS_REFERENCE_ORACLE_H_
