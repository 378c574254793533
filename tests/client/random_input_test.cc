// SPDX-License-Identifier: Apache-2.0
// Tests of client/cli/random_input.h: random inputs are reproducible from the seed, fit the
// model, and replace what the sequence held.
#include "client/cli/random_input.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace aaren::cli {
namespace {

using ::testing::Each;
using ::testing::Ge;
using ::testing::IsEmpty;
using ::testing::Lt;
using ::testing::SizeIs;

v1::ModelInfo TokenModel(uint32_t vocab_size) {
  v1::ModelInfo model;
  model.set_input_kind("tokens");
  model.set_vocab_size(vocab_size);
  return model;
}

v1::ModelInfo FeatureModel(uint32_t n_features) {
  v1::ModelInfo model;
  model.set_input_kind("features");
  model.set_n_features(n_features);
  return model;
}

v1::Sequence Random(const v1::ModelInfo& model, int64_t length, uint64_t seed) {
  std::mt19937_64 rng(seed);
  v1::Sequence sequence;
  FillRandomSequence(model, length, rng, sequence);
  return sequence;
}

TEST(FillRandomSequenceTest, TokensAreInRangeAndCoverTheVocabulary) {
  const v1::Sequence sequence = Random(TokenModel(43), 5000, 1);
  ASSERT_THAT(sequence.tokens(), SizeIs(5000));
  EXPECT_THAT(sequence.features(), IsEmpty());
  EXPECT_THAT(sequence.tokens(), Each(Ge(0)));
  EXPECT_THAT(sequence.tokens(), Each(Lt(43)));
  std::vector<int> seen(43, 0);
  for (int32_t t : sequence.tokens()) ++seen[t];
  for (int id = 0; id < 43; ++id) EXPECT_GT(seen[id], 50) << "id " << id;  // ~116 expected
}

TEST(FillRandomSequenceTest, SameSeedSameInput) {
  for (const v1::ModelInfo& model : {TokenModel(43), FeatureModel(8)}) {
    const v1::Sequence a = Random(model, 100, 42);
    const v1::Sequence b = Random(model, 100, 42);
    EXPECT_EQ(a.SerializeAsString(), b.SerializeAsString());
    const v1::Sequence c = Random(model, 100, 43);
    EXPECT_NE(a.SerializeAsString(), c.SerializeAsString());
  }
}

TEST(FillRandomSequenceTest, ConsecutiveFillsContinueTheStream) {
  // One engine filling twice gives two different inputs, and the pair is reproducible.
  std::mt19937_64 rng(5);
  v1::Sequence first;
  v1::Sequence second;
  FillRandomSequence(TokenModel(1000), 64, rng, first);
  FillRandomSequence(TokenModel(1000), 64, rng, second);
  EXPECT_NE(first.SerializeAsString(), second.SerializeAsString());
  std::mt19937_64 again(5);
  v1::Sequence replay;
  FillRandomSequence(TokenModel(1000), 64, again, replay);
  EXPECT_EQ(replay.SerializeAsString(), first.SerializeAsString());
  FillRandomSequence(TokenModel(1000), 64, again, replay);
  EXPECT_EQ(replay.SerializeAsString(), second.SerializeAsString());
}

TEST(FillRandomSequenceTest, FeaturesAreStandardNormalRows) {
  const v1::Sequence sequence = Random(FeatureModel(8), 2000, 9);
  ASSERT_THAT(sequence.features(), SizeIs(16000));
  EXPECT_THAT(sequence.tokens(), IsEmpty());
  double sum = 0;
  double sum_sq = 0;
  for (float v : sequence.features()) {
    ASSERT_TRUE(std::isfinite(v));
    sum += v;
    sum_sq += static_cast<double>(v) * v;
  }
  const double mean = sum / sequence.features_size();
  const double variance = sum_sq / sequence.features_size() - mean * mean;
  EXPECT_NEAR(mean, 0.0, 0.05);  // standard error ~0.008
  EXPECT_NEAR(variance, 1.0, 0.05);
}

TEST(FillRandomSequenceTest, ReplacesThePreviousContents) {
  std::mt19937_64 rng(1);
  v1::Sequence sequence;
  sequence.add_tokens(7);
  sequence.add_features(1.5f);
  FillRandomSequence(TokenModel(4), 3, rng, sequence);
  EXPECT_THAT(sequence.tokens(), SizeIs(3));
  EXPECT_THAT(sequence.features(), IsEmpty());
  FillRandomSequence(FeatureModel(2), 3, rng, sequence);
  EXPECT_THAT(sequence.tokens(), IsEmpty());
  EXPECT_THAT(sequence.features(), SizeIs(6));
  FillRandomSequence(TokenModel(4), 0, rng, sequence);
  EXPECT_THAT(sequence.tokens(), IsEmpty());
  EXPECT_THAT(sequence.features(), IsEmpty());
}

TEST(FillRandomSequenceTest, OneTokenVocabulary) {
  const v1::Sequence sequence = Random(TokenModel(1), 10, 3);
  EXPECT_THAT(sequence.tokens(), Each(0));
  EXPECT_THAT(sequence.tokens(), SizeIs(10));
}

}  // namespace
}  // namespace aaren::cli
