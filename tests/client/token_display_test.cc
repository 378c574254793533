// SPDX-License-Identifier: Apache-2.0
// Tests of client/cli/token_display.h: top tokens under softmax and their one-line renderings.
#include "client/cli/token_display.h"

#include <cmath>
#include <limits>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace aaren::cli {
namespace {

using ::testing::IsEmpty;

TEST(TopTokensTest, MostLikelyFirstWithSoftmaxProbabilities) {
  const std::vector<float> logits = {0.0f, 2.0f, 1.0f, -1.0f};
  const std::vector<TokenProbability> top = TopTokens(logits, 3);
  ASSERT_EQ(top.size(), 3u);
  double z = 0;
  for (float x : logits) z += std::exp(static_cast<double>(x));
  EXPECT_EQ(top[0].token, 1);
  EXPECT_NEAR(top[0].probability, std::exp(2.0) / z, 1e-12);
  EXPECT_EQ(top[1].token, 2);
  EXPECT_NEAR(top[1].probability, std::exp(1.0) / z, 1e-12);
  EXPECT_EQ(top[2].token, 0);
  EXPECT_NEAR(top[2].probability, 1.0 / z, 1e-12);
}

TEST(TopTokensTest, TiesGoToTheLowerId) {
  const std::vector<float> logits = {1.0f, 3.0f, 0.0f, 3.0f, 3.0f};
  const std::vector<TokenProbability> top = TopTokens(logits, 4);
  ASSERT_EQ(top.size(), 4u);
  EXPECT_EQ(top[0].token, 1);
  EXPECT_EQ(top[1].token, 3);
  EXPECT_EQ(top[2].token, 4);
  EXPECT_EQ(top[3].token, 0);
  EXPECT_DOUBLE_EQ(top[0].probability, top[1].probability);
}

TEST(TopTokensTest, KIsClampedToTheVocabularyAndProbabilitiesSumToOne) {
  const std::vector<float> logits = {0.5f, -0.25f, 3.0f};
  const std::vector<TokenProbability> top = TopTokens(logits, 10);
  ASSERT_EQ(top.size(), 3u);
  double sum = 0;
  for (const TokenProbability& t : top) sum += t.probability;
  EXPECT_NEAR(sum, 1.0, 1e-12);
}

TEST(TopTokensTest, LargeLogitsDoNotOverflow) {
  const std::vector<float> logits = {1000.0f, 999.0f, -1000.0f};
  const std::vector<TokenProbability> top = TopTokens(logits, 2);
  ASSERT_EQ(top.size(), 2u);
  EXPECT_EQ(top[0].token, 0);
  EXPECT_NEAR(top[0].probability, 1.0 / (1.0 + std::exp(-1.0)), 1e-9);
  EXPECT_TRUE(std::isfinite(top[1].probability));
}

TEST(TopTokensTest, EmptyLogitsOrNonPositiveKGiveNothing) {
  EXPECT_THAT(TopTokens({}, 3), IsEmpty());
  const std::vector<float> logits = {1.0f, 2.0f};
  EXPECT_THAT(TopTokens(logits, 0), IsEmpty());
  EXPECT_THAT(TopTokens(logits, -1), IsEmpty());
}

TEST(FormatTopTokensTest, IdsWithoutAVocabulary) {
  const std::vector<TokenProbability> top = {{23, 0.6342}, {19, 0.12}, {0, 0.0004}};
  EXPECT_EQ(FormatTopTokens(top, nullptr), "23 0.634  19 0.120  0 0.000");
}

TEST(FormatTopTokensTest, QuotedTextWithAVocabulary) {
  absl::StatusOr<Vocab> vocab = Vocab::FromEntries({"\n", " ", "a", "e", "'"});
  ASSERT_TRUE(vocab.ok());
  const std::vector<TokenProbability> top = {{3, 0.634}, {2, 0.12}, {0, 0.2}, {1, 0.05}, {4, 1}};
  EXPECT_EQ(FormatTopTokens(top, &*vocab),
            "'e' 0.634  'a' 0.120  '\\n' 0.200  ' ' 0.050  '\\'' 1.000");
  // An id outside the vocabulary still prints.
  const std::vector<TokenProbability> outside = {{9, 0.5}};
  EXPECT_EQ(FormatTopTokens(outside, &*vocab), "'<9>' 0.500");
}

TEST(FormatTopTokensTest, NothingIsAnEmptyString) { EXPECT_EQ(FormatTopTokens({}, nullptr), ""); }

TEST(FormatValuesTest, ShortestRoundTripForm) {
  const std::vector<float> values = {0.125f, -1.5f, 0.1f, 3.0f, 1e-8f};
  EXPECT_EQ(FormatValues(values), "0.125, -1.5, 0.1, 3, 1e-08");
  EXPECT_EQ(FormatValues({}), "");
  const std::vector<float> one = {-0.0f};
  EXPECT_EQ(FormatValues(one), "-0");
}

TEST(FormatValuesTest, ValuesRoundTrip) {
  const std::vector<float> values = {0.3f, 1.0f / 3.0f, std::numeric_limits<float>::min(),
                                     std::numeric_limits<float>::max(), -2.7182817f};
  const std::string text = FormatValues(values);
  std::vector<float> parsed;
  for (size_t start = 0; start < text.size();) {
    size_t end = text.find(", ", start);
    if (end == std::string::npos) end = text.size();
    parsed.push_back(std::stof(text.substr(start, end - start)));
    start = end + 2;
  }
  EXPECT_EQ(parsed, values);
}

}  // namespace
}  // namespace aaren::cli
