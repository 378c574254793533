// SPDX-License-Identifier: Apache-2.0
// Tests of client/cli/vocab.h: loading models/demo-lm/vocab.json and malformed files, encoding
// by longest match, decoding and display.
#include "client/cli/vocab.h"

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/status/status.h"

namespace aaren::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::filesystem::path SourceDir() {
  const char* dir = std::getenv("AAREN_SOURCE_DIR");
  return dir != nullptr ? std::filesystem::path(dir) : std::filesystem::path(".");
}

std::filesystem::path DemoVocab() { return SourceDir() / "models" / "demo-lm" / "vocab.json"; }

// A file in the test's temporary directory holding `contents`.
std::filesystem::path WriteFile(const std::string& name, const std::string& contents) {
  const std::filesystem::path path = std::filesystem::path(::testing::TempDir()) / name;
  std::ofstream(path, std::ios::binary) << contents;
  return path;
}

TEST(VocabTest, LoadsTheDemoVocabulary) {
  absl::StatusOr<Vocab> vocab = Vocab::Load(DemoVocab());
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  EXPECT_EQ(vocab->size(), 43u);  // models/demo-lm/config.json vocab_size
  EXPECT_EQ(vocab->Decode(0), "\n");
  EXPECT_EQ(vocab->Decode(1), " ");
  EXPECT_EQ(vocab->Decode(7), "A");
  EXPECT_EQ(vocab->Decode(42), "y");
}

TEST(VocabTest, DemoVocabularyRoundTripsText) {
  absl::StatusOr<Vocab> vocab = Vocab::Load(DemoVocab());
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  const std::string text = "The cat sat.\nA dog, \"hi\"!";
  absl::StatusOr<std::vector<int32_t>> tokens = vocab->Encode(text);
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  ASSERT_EQ(tokens->size(), text.size());  // one character per token
  EXPECT_EQ((*tokens)[0], 18);             // 'T'
  EXPECT_EQ((*tokens)[3], 1);              // ' '
  EXPECT_EQ((*tokens)[12], 0);             // '\n'
  std::string decoded;
  for (int32_t t : *tokens) decoded += vocab->Decode(t);
  EXPECT_EQ(decoded, text);
}

TEST(VocabTest, EncodeNamesTheFirstUnknownCharacterAndItsByteOffset) {
  absl::StatusOr<Vocab> vocab = Vocab::Load(DemoVocab());
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  absl::StatusOr<std::vector<int32_t>> tokens = vocab->Encode("the Zoo");  // no 'Z'
  EXPECT_EQ(tokens.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tokens.status().message(), HasSubstr("'Z' at byte 4"));
  // A multi-byte character is named whole.
  tokens = vocab->Encode("ab\xc3\xbc");
  EXPECT_EQ(tokens.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tokens.status().message(), HasSubstr("'\xc3\xbc' at byte 2"));
  EXPECT_THAT(vocab->Encode("\t").status().message(), HasSubstr("'\\t' at byte 0"));
}

TEST(VocabTest, EncodeOfEmptyTextIsEmpty) {
  absl::StatusOr<Vocab> vocab = Vocab::Load(DemoVocab());
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  absl::StatusOr<std::vector<int32_t>> tokens = vocab->Encode("");
  ASSERT_TRUE(tokens.ok());
  EXPECT_TRUE(tokens->empty());
}

TEST(VocabTest, DecodeOutsideTheVocabularyNamesTheId) {
  absl::StatusOr<Vocab> vocab = Vocab::Load(DemoVocab());
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  EXPECT_EQ(vocab->Decode(43), "<43>");
  EXPECT_EQ(vocab->Decode(-1), "<-1>");
  EXPECT_EQ(vocab->Display(43), "'<43>'");
}

TEST(VocabTest, DisplayQuotesAndEscapes) {
  absl::StatusOr<Vocab> vocab = Vocab::Load(DemoVocab());
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  EXPECT_EQ(vocab->Display(0), "'\\n'");
  EXPECT_EQ(vocab->Display(1), "' '");
  EXPECT_EQ(vocab->Display(3), "'\\\"'");
  EXPECT_EQ(vocab->Display(23), "'e'");
}

TEST(VocabTest, EncodeTakesTheLongestMatch) {
  absl::StatusOr<Vocab> vocab = Vocab::FromEntries({"a", "ab", "b", "abc", "\xc3\xa9"});
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  EXPECT_THAT(*vocab->Encode("abab"), ElementsAre(1, 1));
  EXPECT_THAT(*vocab->Encode("aab"), ElementsAre(0, 1));
  EXPECT_THAT(*vocab->Encode("abcab"), ElementsAre(3, 1));
  EXPECT_THAT(*vocab->Encode("ba"), ElementsAre(2, 0));
  EXPECT_THAT(*vocab->Encode("\xc3\xa9"
                             "ab"),
              ElementsAre(4, 1));
  // "abcd": 'd' is not an entry; the offset counts bytes.
  EXPECT_THAT(vocab
                  ->Encode("\xc3\xa9"
                           "abcd")
                  .status()
                  .message(),
              HasSubstr("at byte 5"));
  EXPECT_EQ(vocab->Display(4), "'\xc3\xa9'");  // UTF-8 is displayed, not escaped
}

TEST(VocabTest, FromEntriesRejectsEmptyAndDuplicateEntries) {
  absl::StatusOr<Vocab> vocab = Vocab::FromEntries({});
  EXPECT_EQ(vocab.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(vocab.status().message(), HasSubstr("empty"));

  vocab = Vocab::FromEntries({"a", "", "b"});
  EXPECT_EQ(vocab.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(vocab.status().message(), HasSubstr("chars[1] is empty"));

  vocab = Vocab::FromEntries({"a", "b", "\n", "b"});
  EXPECT_EQ(vocab.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(vocab.status().message(), HasSubstr("chars[3] repeats chars[1]"));
}

TEST(VocabTest, LoadOfAMissingFileIsNotFound) {
  absl::StatusOr<Vocab> vocab = Vocab::Load(SourceDir() / "no" / "such" / "vocab.json");
  EXPECT_EQ(vocab.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(vocab.status().message(), HasSubstr("vocab.json"));
}

TEST(VocabTest, LoadRejectsMalformedFilesNamingThePath) {
  struct Case {
    const char* name;
    const char* contents;
    const char* problem;  // a substring of the message
  };
  const Case cases[] = {
      {"empty.json", "", "expected a JSON object"},
      {"garbage.json", "{\"chars\": [\"a\",", "expected a JSON object"},
      {"array.json", "[\"a\", \"b\"]", "expected a JSON object"},
      {"no_chars.json", "{\"tokens\": [\"a\"]}", "expected a JSON object"},
      {"chars_string.json", "{\"chars\": \"abc\"}", "expected a JSON object"},
      {"chars_number.json", "{\"chars\": [\"a\", 7]}", "chars[1] is not a string"},
      {"chars_null.json", "{\"chars\": [null]}", "chars[0] is not a string"},
      {"chars_empty.json", "{\"chars\": []}", "'chars' is empty"},
      {"entry_empty.json", "{\"chars\": [\"a\", \"\"]}", "chars[1] is empty"},
      {"duplicate.json", "{\"chars\": [\"a\", \"b\", \"a\"]}", "chars[2] repeats chars[0]"},
  };
  for (const Case& c : cases) {
    const std::filesystem::path path = WriteFile(c.name, c.contents);
    absl::StatusOr<Vocab> vocab = Vocab::Load(path);
    EXPECT_EQ(vocab.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_THAT(vocab.status().message(), HasSubstr(c.problem)) << c.name;
    EXPECT_THAT(vocab.status().message(), HasSubstr(path.string())) << c.name;
  }
}

TEST(VocabTest, LoadAcceptsMultiCharacterEntriesAndExtraKeys) {
  const std::filesystem::path path =
      WriteFile("multi.json", "{\"version\": 2, \"chars\": [\"th\", \"t\", \"h\", \"e\"]}");
  absl::StatusOr<Vocab> vocab = Vocab::Load(path);
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  EXPECT_EQ(vocab->size(), 4u);
  EXPECT_THAT(*vocab->Encode("thet"), ElementsAre(0, 3, 1));
}

}  // namespace
}  // namespace aaren::cli
