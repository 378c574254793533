// SPDX-License-Identifier: Apache-2.0
// The JSON Lines format of aaren-score: every bad line named with its line number and field;
// floats written so they read back bit-exactly.
#include "core/sequence_jsonl.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <charconv>
#include <cmath>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "tests/test_models.h"

namespace aaren::testing {
namespace {

using ::testing::HasSubstr;

const ModelConfig kTokens = MakeConfig(InputKind::kTokens, PositionKind::kNone, 1, 1);      // V=37
const ModelConfig kFeatures = MakeConfig(InputKind::kFeatures, PositionKind::kNone, 1, 1);  // F=7

std::string Error(absl::string_view line, const ModelConfig& config) {
  auto rec = ParseSequenceLine(line, 3, config);
  EXPECT_FALSE(rec.ok());
  EXPECT_EQ(rec.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(rec.status().message());
}

TEST(SequenceJsonlTest, ParsesTokensAndFeatures) {
  auto t = ParseSequenceLine(R"({"id": "a", "tokens": [0, 36, 5], "targets": [1]})", 1, kTokens);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->id_json, "\"a\"");
  EXPECT_EQ(t->tokens, (std::vector<int32_t>{0, 36, 5}));
  EXPECT_EQ(t->length, 3);
  auto f = ParseSequenceLine(R"({"id": {"k": 1}, "features": [[1,2,3,4,5,6,7.5]]})", 9, kFeatures);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->id_json, R"({"k":1})");
  EXPECT_EQ(f->length, 1);
  EXPECT_EQ(f->features[6], 7.5f);
  auto no_id = ParseSequenceLine(R"({"tokens": [1]})", 12, kTokens);
  ASSERT_TRUE(no_id.ok());
  EXPECT_EQ(no_id->id_json, "12");  // defaults to the line number
}

TEST(SequenceJsonlTest, EachBadLineNamesLineAndField) {
  EXPECT_THAT(Error("{not json", kTokens), HasSubstr("line 3: invalid JSON: "));
  EXPECT_THAT(Error("{not json", kTokens),
              HasSubstr("line 3: invalid JSON: parse error at column 3: syntax error"));
  EXPECT_EQ(Error("[1, 2]", kTokens), "line 3: expected a JSON object");
  // An id is echoed as JSON: one nested deeper than any id is refused, not dumped (which
  // recursed per level: 100k levels crashed aaren-score).
  EXPECT_EQ(Error(absl::StrCat(R"({"tokens": [1], "id": )", std::string(100000, '['),
                               std::string(100000, ']'), "}"),
                  kTokens),
            "line 3: field 'id': nested more than 32 levels deep");
  EXPECT_EQ(Error(R"({"tokens": [[1]]})", kTokens),
            "line 3: field 'tokens[0]': expected an integer, got array of 1 element");
  EXPECT_EQ(Error(R"({"id": 1})", kTokens), "line 3: missing field 'tokens'");
  EXPECT_EQ(Error(R"({"tokens": []})", kTokens), "line 3: field 'tokens': empty sequence");
  EXPECT_THAT(Error(R"({"tokens": "abc"})", kTokens),
              HasSubstr("line 3: field 'tokens': expected an array of integers"));
  EXPECT_EQ(Error(R"({"tokens": [1, 2.5]})", kTokens),
            "line 3: field 'tokens[1]': expected an integer, got 2.5");
  EXPECT_EQ(Error(R"({"tokens": [1, 37]})", kTokens),
            "line 3: field 'tokens[1]': token id 37 out of range [0, 37)");
  EXPECT_EQ(Error(R"({"tokens": [-1]})", kTokens),
            "line 3: field 'tokens[0]': token id -1 out of range [0, 37)");
  EXPECT_EQ(Error(R"({"tokens": [18446744073709551615]})", kTokens),
            "line 3: field 'tokens[0]': token id 18446744073709551615 out of range [0, 37)");
  EXPECT_THAT(Error(R"({"features": [[1,2,3,4,5,6,7]]})", kTokens),
              HasSubstr("line 3: field 'features': the model's input kind is tokens"));
  EXPECT_EQ(
      Error(R"({"features": [[1,2,3]]})", kFeatures),
      "line 3: field 'features[0]': expected an array of 7 numbers (n_features), got 3 values");
  EXPECT_EQ(Error(R"({"features": [[1,2,3,4,5,6,"x"]]})", kFeatures),
            "line 3: field 'features[0][6]': expected a number, got \"x\"");
  EXPECT_EQ(Error(R"({"features": [[1,2,3,4,5,6,7], [1,2,3,4,5,6,1e39]]})", kFeatures),
            "line 3: field 'features[1][6]': value 1e+39 is not finite in float32");
}

TEST(SequenceJsonlTest, FileErrorsListEveryBadLine) {
  const std::string path = ::testing::TempDir() + "/bad.jsonl";
  std::ofstream(path) << R"({"tokens": [1]})"
                      << "\n\n"
                      << R"({"tokens": [99]})"
                      << "\n"
                      << "oops\n";
  auto recs = ReadSequenceFile(path, kTokens);
  ASSERT_FALSE(recs.ok());
  EXPECT_THAT(recs.status().message(), HasSubstr("2 bad input line(s)"));
  EXPECT_THAT(recs.status().message(), HasSubstr("line 3: field 'tokens[0]': token id 99"));
  EXPECT_THAT(recs.status().message(), HasSubstr("line 4: invalid JSON"));
  EXPECT_EQ(ReadSequenceFile("/nonexistent/x.jsonl", kTokens).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_THAT(ReadSequenceFile(::testing::TempDir(), kTokens).status().message(),
              HasSubstr("is a directory, not a file"));
}

TEST(SequenceJsonlTest, FloatsRoundTripExactly) {
  std::mt19937 rng(1);
  std::vector<float> values;
  std::uniform_int_distribution<uint32_t> bits;
  while (values.size() < 3000) {
    const uint32_t b = bits(rng);
    float f;
    std::memcpy(&f, &b, 4);
    if (std::isfinite(f)) values.push_back(f);
  }
  const std::string line = FormatOutputLine("7", values, 1000, 3);
  EXPECT_EQ(line.back(), '\n');
  // Parse back with from_chars (independent of the writer).
  const size_t open = line.find("[[");
  ASSERT_NE(open, std::string::npos);
  size_t k = 0;
  for (size_t pos = open; pos < line.size() && k < values.size();) {
    pos = line.find_first_of("-0123456789", pos);
    float f;
    auto [end, ec] = std::from_chars(line.data() + pos, line.data() + line.size(), f);
    ASSERT_EQ(ec, std::errc());
    EXPECT_EQ(std::memcmp(&f, &values[k], 4), 0) << k;
    ++k;
    pos = end - line.data();
  }
  EXPECT_EQ(k, values.size());
  EXPECT_EQ(FormatOutputLine("\"s\"", std::vector<float>{1.5f, -2.0f}, 1, 2),
            "{\"id\": \"s\", \"outputs\": [[1.5, -2]]}\n");
}

}  // namespace
}  // namespace aaren::testing
