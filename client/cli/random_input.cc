// SPDX-License-Identifier: Apache-2.0
#include "client/cli/random_input.h"

namespace aaren::cli {

void FillRandomSequence(const v1::ModelInfo& model, int64_t length, std::mt19937_64& rng,
                        v1::Sequence& sequence) {
  sequence.clear_tokens();
  sequence.clear_features();
  if (model.input_kind() == "features") {
    std::normal_distribution<float> value(0.0f, 1.0f);
    const int64_t n = length * model.n_features();
    sequence.mutable_features()->Reserve(static_cast<int>(n));
    for (int64_t i = 0; i < n; ++i) sequence.add_features(value(rng));
  } else {
    std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(model.vocab_size()) - 1);
    sequence.mutable_tokens()->Reserve(static_cast<int>(length));
    for (int64_t i = 0; i < length; ++i) sequence.add_tokens(token(rng));
  }
}

}  // namespace aaren::cli
