// SPDX-License-Identifier: Apache-2.0
// Tests of client/cli/line_input.h: token ids, feature values and text turned into model inputs,
// and the errors that name the first bad item.
#include "client/cli/line_input.h"

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/status/status.h"

namespace aaren::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::FloatEq;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

v1::ModelInfo TokenModel(uint32_t vocab_size) {
  v1::ModelInfo model;
  model.set_name("lm");
  model.set_input_kind("tokens");
  model.set_vocab_size(vocab_size);
  return model;
}

v1::ModelInfo FeatureModel(uint32_t n_features) {
  v1::ModelInfo model;
  model.set_name("ts");
  model.set_input_kind("features");
  model.set_n_features(n_features);
  return model;
}

TEST(ParseTokenIdsTest, AcceptsSpacesCommasAndMixtures) {
  EXPECT_THAT(*ParseTokenIds("3 1 4", 43), ElementsAre(3, 1, 4));
  EXPECT_THAT(*ParseTokenIds("3,1,4", 43), ElementsAre(3, 1, 4));
  EXPECT_THAT(*ParseTokenIds("  3 ,1,\t4\r\n", 43), ElementsAre(3, 1, 4));
  EXPECT_THAT(*ParseTokenIds("0,,42", 43), ElementsAre(0, 42));
  EXPECT_THAT(*ParseTokenIds("+7", 43), ElementsAre(7));
}

TEST(ParseTokenIdsTest, EmptyTextIsNoTokens) {
  EXPECT_THAT(*ParseTokenIds("", 43), IsEmpty());
  EXPECT_THAT(*ParseTokenIds(" , \n", 43), IsEmpty());
}

TEST(ParseTokenIdsTest, RejectsIdsOutsideTheVocabulary) {
  absl::StatusOr<std::vector<int32_t>> tokens = ParseTokenIds("1 2 43", 43);
  EXPECT_EQ(tokens.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tokens.status().message(), HasSubstr("tokens[2]: '43'"));
  EXPECT_THAT(tokens.status().message(), HasSubstr("[0, 43)"));

  tokens = ParseTokenIds("-1", 43);
  EXPECT_EQ(tokens.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tokens.status().message(), HasSubstr("tokens[0]: '-1'"));
}

TEST(ParseTokenIdsTest, RejectsWhatIsNotAnInteger) {
  for (const char* bad : {"abc", "1.5", "3x", "0x10", "1e3"}) {
    absl::StatusOr<std::vector<int32_t>> tokens = ParseTokenIds(std::string("5 ") + bad, 43);
    EXPECT_EQ(tokens.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(tokens.status().message(), HasSubstr(std::string("tokens[1]: '") + bad + "'"));
  }
}

TEST(ParseTokenIdsTest, VocabSizeZeroMeansNoUpperBound) {
  EXPECT_THAT(*ParseTokenIds("2147483647 0", 0), ElementsAre(2147483647, 0));
  absl::StatusOr<std::vector<int32_t>> tokens = ParseTokenIds("2147483648", 0);
  EXPECT_EQ(tokens.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tokens.status().message(), HasSubstr("[0, 2^31)"));
  EXPECT_FALSE(ParseTokenIds("-3", 0).ok());
}

TEST(ParseFeatureValuesTest, AcceptsAMultipleOfNFeatures) {
  EXPECT_THAT(*ParseFeatureValues("0.1, 0.2, -3, 4e-2", 2),
              ElementsAre(FloatEq(0.1f), FloatEq(0.2f), FloatEq(-3.0f), FloatEq(0.04f)));
  EXPECT_THAT(*ParseFeatureValues("1 2 3", 3), ElementsAre(1.0f, 2.0f, 3.0f));
  EXPECT_THAT(*ParseFeatureValues("1,2,3,4,5,6", 3), ElementsAre(1, 2, 3, 4, 5, 6));
}

TEST(ParseFeatureValuesTest, RejectsCountsThatAreNotAPositiveMultiple) {
  for (const auto& [text, n] :
       std::vector<std::pair<std::string, int64_t>>{{"1 2 3", 2}, {"", 2}, {" , ", 1}, {"1", 0}}) {
    absl::StatusOr<std::vector<float>> values = ParseFeatureValues(text, n);
    EXPECT_EQ(values.status().code(), absl::StatusCode::kInvalidArgument) << "'" << text << "'";
    EXPECT_THAT(values.status().message(), HasSubstr("positive multiple of n_features"));
  }
  EXPECT_THAT(ParseFeatureValues("1 2 3", 2).status().message(), HasSubstr("got 3 feature values"));
}

TEST(ParseFeatureValuesTest, RejectsNonNumbersAndNonFiniteValues) {
  for (const char* bad : {"x", "nan", "inf", "-inf", "1e40", "0.5.5", "1,5f"}) {
    absl::StatusOr<std::vector<float>> values = ParseFeatureValues(std::string("0.5 ") + bad, 1);
    EXPECT_EQ(values.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(values.status().message(), HasSubstr("is not a finite number")) << bad;
  }
  EXPECT_THAT(ParseFeatureValues("1 2 oops 4", 2).status().message(),
              HasSubstr("features[2]: 'oops'"));
}

TEST(ParseSequenceTextTest, TokenModelWithoutVocabTakesIds) {
  absl::StatusOr<v1::Sequence> sequence = ParseSequenceText("10, 32 23", TokenModel(43), nullptr);
  ASSERT_TRUE(sequence.ok()) << sequence.status();
  EXPECT_THAT(sequence->tokens(), ElementsAre(10, 32, 23));
  EXPECT_THAT(sequence->features(), IsEmpty());
  EXPECT_EQ(ParseSequenceText("10 43", TokenModel(43), nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ParseSequenceTextTest, TokenModelWithVocabTakesText) {
  absl::StatusOr<Vocab> vocab = Vocab::FromEntries({" ", "a", "b", "ab"});
  ASSERT_TRUE(vocab.ok());
  absl::StatusOr<v1::Sequence> sequence = ParseSequenceText("ab a", TokenModel(4), &*vocab);
  ASSERT_TRUE(sequence.ok()) << sequence.status();
  EXPECT_THAT(sequence->tokens(), ElementsAre(3, 0, 1));
  // Digits are text, not ids, when there is a vocabulary.
  absl::StatusOr<v1::Sequence> digits = ParseSequenceText("1 2", TokenModel(4), &*vocab);
  EXPECT_EQ(digits.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(digits.status().message(), HasSubstr("'1' at byte 0"));
}

TEST(ParseSequenceTextTest, DemoVocabulary) {
  const char* dir = std::getenv("AAREN_SOURCE_DIR");
  const std::filesystem::path root = dir != nullptr ? dir : ".";
  absl::StatusOr<Vocab> vocab = Vocab::Load(root / "models" / "demo-lm" / "vocab.json");
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  absl::StatusOr<v1::Sequence> sequence = ParseSequenceText("The cat", TokenModel(43), &*vocab);
  ASSERT_TRUE(sequence.ok()) << sequence.status();
  EXPECT_THAT(sequence->tokens(), ElementsAre(18, 26, 23, 1, 21, 19, 37));
}

TEST(ParseSequenceTextTest, EmptyInputIsAnError) {
  absl::StatusOr<Vocab> vocab = Vocab::FromEntries({"a"});
  ASSERT_TRUE(vocab.ok());
  for (const char* text : {"", "  ", " , "}) {
    absl::StatusOr<v1::Sequence> sequence = ParseSequenceText(text, TokenModel(43), nullptr);
    EXPECT_EQ(sequence.status().code(), absl::StatusCode::kInvalidArgument) << "'" << text << "'";
    EXPECT_THAT(sequence.status().message(), HasSubstr("empty input"));
  }
  EXPECT_THAT(ParseSequenceText("", TokenModel(1), &*vocab).status().message(),
              HasSubstr("empty input"));
  EXPECT_EQ(ParseSequenceText("", FeatureModel(2), nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ParseSequenceTextTest, FeatureModelTakesRowsOfValues) {
  absl::StatusOr<v1::Sequence> sequence =
      ParseSequenceText("0.5 1, -2 0.25", FeatureModel(2), nullptr);
  ASSERT_TRUE(sequence.ok()) << sequence.status();
  EXPECT_THAT(sequence->features(), ElementsAre(0.5f, 1.0f, -2.0f, 0.25f));
  EXPECT_THAT(sequence->tokens(), IsEmpty());
  EXPECT_THAT(ParseSequenceText("0.5 1 2", FeatureModel(2), nullptr).status().message(),
              HasSubstr("got 3 feature values; need a positive multiple of n_features (2)"));
}

TEST(ParseSequenceTextTest, FeatureModelIgnoresAVocabulary) {
  absl::StatusOr<Vocab> vocab = Vocab::FromEntries({"a"});
  ASSERT_TRUE(vocab.ok());
  absl::StatusOr<v1::Sequence> sequence = ParseSequenceText("1 2", FeatureModel(1), &*vocab);
  ASSERT_TRUE(sequence.ok()) << sequence.status();
  EXPECT_THAT(sequence->features(), ElementsAre(1.0f, 2.0f));
}

}  // namespace
}  // namespace aaren::cli
