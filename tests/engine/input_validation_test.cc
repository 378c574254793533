// SPDX-License-Identifier: Apache-2.0
// ValidateInput: every rejection names the request field and the element; InputFingerprint tells
// different inputs apart; ValidateMca and RetryFingerprint (MCA options).
#include "engine/input_validation.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "tests/test_models.h"

namespace aaren::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr int64_t kNoLimit = 1 << 20;

SequenceInput Tokens(std::vector<int32_t> tokens) {
  SequenceInput in;
  in.tokens = std::move(tokens);
  return in;
}
SequenceInput Features(std::vector<float> features) {
  SequenceInput in;
  in.features = std::move(features);
  return in;
}

class InputValidationTest : public ::testing::Test {
 protected:
  // vocab_size 37 (tokens), n_features 7 (features): see MakeConfig.
  const ModelConfig tokens_ = MakeConfig(InputKind::kTokens, PositionKind::kNone, 2, 1);
  const ModelConfig features_ = MakeConfig(InputKind::kFeatures, PositionKind::kNone, 2, 1);
};

TEST_F(InputValidationTest, AcceptsValidInputs) {
  EXPECT_TRUE(ValidateInput(tokens_, Tokens({0, 5, 36}), "input", kNoLimit, false).ok());
  EXPECT_TRUE(
      ValidateInput(features_, Features(std::vector<float>(14, 0.5f)), "input", kNoLimit, false)
          .ok());
  EXPECT_TRUE(ValidateInput(tokens_, {}, "prefix", kNoLimit, /*allow_empty=*/true).ok());
  EXPECT_TRUE(ValidateInput(features_, {}, "prefix", kNoLimit, /*allow_empty=*/true).ok());
}

TEST_F(InputValidationTest, WrongInputFieldForTheModelKind) {
  absl::Status st = ValidateInput(tokens_, Features({1.0f, 2.0f}), "input", kNoLimit, false);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), StartsWith("input.features: "));
  EXPECT_THAT(std::string(st.message()), HasSubstr("takes tokens"));

  // Both fields set: still the field the model does not take.
  st = ValidateInput(tokens_, SequenceInput{{1}, {1.0f}}, "input", kNoLimit, false);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), StartsWith("input.features: "));

  st = ValidateInput(features_, Tokens({1, 2}), "sequences[3]", kNoLimit, false);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), StartsWith("sequences[3].tokens: "));
  EXPECT_THAT(std::string(st.message()), HasSubstr("takes features"));

  // Not even an allowed-empty input may use the wrong field.
  st = ValidateInput(features_, Tokens({1}), "prefix", kNoLimit, /*allow_empty=*/true);
  EXPECT_THAT(std::string(st.message()), StartsWith("prefix.tokens: "));
}

TEST_F(InputValidationTest, EmptyUnlessAllowed) {
  absl::Status st = ValidateInput(tokens_, {}, "input", kNoLimit, false);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), StartsWith("input.tokens: empty"));
  st = ValidateInput(features_, {}, "sequences[0]", kNoLimit, false);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), StartsWith("sequences[0].features: empty"));
}

TEST_F(InputValidationTest, TokenOutOfRangeNamesTheElement) {
  absl::Status st = ValidateInput(tokens_, Tokens({0, 1, 2, 37, 4}), "input", kNoLimit, false);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "input.tokens[3]: token id 37 out of range [0, 37)");

  st = ValidateInput(tokens_, Tokens({-1}), "prompt", kNoLimit, false);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "prompt.tokens[0]: token id -1 out of range [0, 37)");

  st = ValidateInput(tokens_, Tokens({5, std::numeric_limits<int32_t>::max()}), "input", kNoLimit,
                     false);
  EXPECT_THAT(std::string(st.message()), StartsWith("input.tokens[1]: "));
}

TEST_F(InputValidationTest, FeatureCountNotAMultipleOfNFeatures) {
  const absl::Status st =
      ValidateInput(features_, Features(std::vector<float>(10, 0.0f)), "input", kNoLimit, false);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), StartsWith("input.features: "));
  EXPECT_THAT(std::string(st.message()), HasSubstr("10 values"));
  EXPECT_THAT(std::string(st.message()), HasSubstr("n_features 7"));
}

TEST_F(InputValidationTest, NonFiniteFeaturesNameTheElement) {
  const float bad[] = {std::numeric_limits<float>::quiet_NaN(),
                       std::numeric_limits<float>::infinity(),
                       -std::numeric_limits<float>::infinity()};
  for (float v : bad) {
    std::vector<float> f(14, 0.25f);
    f[9] = v;
    const absl::Status st = ValidateInput(features_, Features(f), "input", kNoLimit, false);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << v;
    EXPECT_THAT(std::string(st.message()), StartsWith("input.features[9]: ")) << v;
    EXPECT_THAT(std::string(st.message()), HasSubstr("not a finite value")) << v;
  }
}

TEST_F(InputValidationTest, TooLongAgainstMaxTokens) {
  EXPECT_TRUE(ValidateInput(tokens_, Tokens({1, 2, 3, 4}), "input", 4, false).ok());
  absl::Status st = ValidateInput(tokens_, Tokens({1, 2, 3, 4, 5}), "input", 4, false);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), StartsWith("input: 5 tokens exceed the limit of 4"));

  // Features count rows (tokens), not floats.
  EXPECT_TRUE(
      ValidateInput(features_, Features(std::vector<float>(14, 0.0f)), "prefix", 2, false).ok());
  st = ValidateInput(features_, Features(std::vector<float>(21, 0.0f)), "prefix", 2, false);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), StartsWith("prefix: 3 tokens exceed the limit of 2"));
}

TEST(SequenceInputTest, LengthCountsTokensOrFeatureRows) {
  EXPECT_EQ((Tokens({1, 2, 3})).length(0), 3);
  EXPECT_EQ((Features(std::vector<float>(21, 0.0f))).length(7), 3);
  EXPECT_TRUE(SequenceInput{}.empty());
  EXPECT_EQ(SequenceInput{}.length(7), 0);
}

TEST(InputFingerprintTest, SameInputSameFingerprint) {
  const SequenceInput a = Tokens({3, 1, 4, 1, 5});
  const SequenceInput b = Tokens({3, 1, 4, 1, 5});
  EXPECT_EQ(InputFingerprint(a), InputFingerprint(b));
  const SequenceInput f = Features({0.5f, -1.0f});
  EXPECT_EQ(InputFingerprint(f), InputFingerprint(Features({0.5f, -1.0f})));
}

TEST(InputFingerprintTest, DifferentInputsDiffer) {
  const SequenceInput inputs[] = {
      {},
      Tokens({0}),
      Tokens({1}),
      Tokens({0, 0}),
      Tokens({3, 1, 4}),
      Tokens({3, 4, 1}),
      Tokens({3, 1, 4, 1}),
      Features({0.0f}),  // the same bytes as tokens {0}
      Features({-0.0f}),
      Features({0.0f, 0.0f}),
      Features({1.0f, 2.0f}),
      Features({2.0f, 1.0f}),
  };
  absl::flat_hash_set<uint64_t> seen;
  for (const SequenceInput& in : inputs) seen.insert(InputFingerprint(in));
  EXPECT_EQ(seen.size(), std::size(inputs));

  // Every one-token change of a longer input changes the fingerprint.
  SequenceInput base = Tokens(std::vector<int32_t>(64, 7));
  const uint64_t h = InputFingerprint(base);
  for (size_t i = 0; i < base.tokens.size(); ++i) {
    SequenceInput changed = base;
    changed.tokens[i] = 8;
    EXPECT_NE(InputFingerprint(changed), h) << i;
  }
}

TEST(ValidateMcaTest, EnabledAlphaMustBeFiniteAndNonNegative) {
  EXPECT_TRUE(ValidateMca(McaOptions{true, 0.0f, 0}, "mca").ok());
  EXPECT_TRUE(ValidateMca(McaOptions{true, 2.5f, 7}, "mca").ok());
  for (const float bad : {-1.0f, -1e-30f, std::numeric_limits<float>::quiet_NaN(),
                          std::numeric_limits<float>::infinity()}) {
    const absl::Status st = ValidateMca(McaOptions{true, bad, 0}, "append.mca");
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(st.message()), StartsWith("append.mca.alpha: ")) << bad;
    // Disabled options are ignored, whatever they hold.
    EXPECT_TRUE(ValidateMca(McaOptions{false, bad, 0}, "mca").ok()) << bad;
  }
}

TEST(RetryFingerprintTest, McaOptionsArePartOfTheRetry) {
  const SequenceInput x = Tokens({3, 1, 4});
  EXPECT_EQ(RetryFingerprint(x, McaOptions{}), InputFingerprint(x));
  EXPECT_EQ(RetryFingerprint(x, McaOptions{false, 0.5f, 9}), InputFingerprint(x));
  const uint64_t a = RetryFingerprint(x, McaOptions{true, 0.5f, 9});
  EXPECT_EQ(RetryFingerprint(x, McaOptions{true, 0.5f, 9}), a);
  absl::flat_hash_set<uint64_t> seen = {InputFingerprint(x), a};
  for (const McaOptions& other : {McaOptions{true, 0.0f, 9}, McaOptions{true, 0.25f, 9},
                                  McaOptions{true, 0.5f, 10}, McaOptions{true, 0.0f, 0}}) {
    seen.insert(RetryFingerprint(x, other));
  }
  EXPECT_EQ(seen.size(), 6u);
  EXPECT_NE(RetryFingerprint(Tokens({3, 1, 5}), McaOptions{true, 0.5f, 9}), a);
}

}  // namespace
}  // namespace aaren::testing
