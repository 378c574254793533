// SPDX-License-Identifier: Apache-2.0
// Random model inputs for load generation (aaren-cli bench): reproducible from a seeded engine.
#ifndef AAREN_CLIENT_CLI_RANDOM_INPUT_H_
#define AAREN_CLIENT_CLI_RANDOM_INPUT_H_

#include <cstdint>
#include <random>

#include "aaren/v1/aaren.pb.h"

namespace aaren::cli {

// Replaces `sequence` with `length` random tokens for `model`: ids uniform in [0, vocab_size),
// or standard normal features (n_features per token). Reuses the sequence's storage.
void FillRandomSequence(const v1::ModelInfo& model, int64_t length, std::mt19937_64& rng,
                        v1::Sequence& sequence);

}  // namespace aaren::cli

#endif  // AAREN_CLIENT_CLI_RANDOM_INPUT_H_
