// SPDX-License-Identifier: Apache-2.0
// Tests for config.json parsing and validation (ParseModelConfig, ValidateModelConfig,
// ReadModelConfig). Each malformed input has its own test that checks the status code and
// the message a user would see.
#include <filesystem>
#include <limits>
#include <string>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/model_config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/loader_test_support.h"

namespace aaren {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// Every field of a config, for whole-struct comparisons.
auto Fields(const ModelConfig& c) {
  return std::tuple(c.model_type, c.d_model, c.n_heads, c.n_layers, c.d_ff, c.input_kind,
                    c.vocab_size, c.n_features, c.output_dim, c.position, c.norm_eps);
}

// ---- config.json ----

TEST(ModelConfigTest, ParsesValidConfigWithDefaults) {
  absl::StatusOr<ModelConfig> config = ParseModelConfig(kValidConfig);
  ASSERT_TRUE(config.ok()) << config.status();
  ModelConfig expected = SmallConfig();  // position and norm_eps keep their defaults
  expected.n_layers = 1;
  EXPECT_EQ(Fields(*config), Fields(expected));
  EXPECT_EQ(config->d_head(), 4);
  EXPECT_EQ(config->state_floats(), 1 * 2 * (2 + 4));
  EXPECT_EQ(config->state_bytes(), 12 * 4 + 8);
}

TEST(ModelConfigTest, IgnoresUnknownKeys) {
  std::string text = kValidConfig;
  text.insert(1, R"("torch_dtype": "float32", "extra": {"a": [1, 2]},)");
  EXPECT_TRUE(ParseModelConfig(text).ok());
}

TEST(ModelConfigTest, RoundTripsThroughJson) {
  for (const ModelConfig& original : {SmallConfig(), SmallFeaturesConfig()}) {
    absl::StatusOr<ModelConfig> parsed = ParseModelConfig(ModelConfigToJson(original));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(Fields(*parsed), Fields(original));  // exact, norm_eps included
  }
}

TEST(ModelConfigTest, UnknownModelType) {
  absl::StatusOr<ModelConfig> config = ParseModelConfig(ConfigWith("model_type", "\"gpt2\""));
  EXPECT_THAT(config.status(),
              IsInvalid("config.json: unknown model_type \"gpt2\" (expected \"aaren\")"));
}

TEST(ModelConfigTest, DModelNotDivisibleByHeads) {
  std::string text = ConfigWith("d_model", "30");
  text = text.replace(text.find("\"n_heads\": 2"), 12, "\"n_heads\": 4");
  absl::StatusOr<ModelConfig> config = ParseModelConfig(text);
  EXPECT_THAT(config.status(),
              IsInvalid("config.json: d_model (30) must be divisible by n_heads (4)"));
}

TEST(ModelConfigTest, MissingRequiredKey) {
  std::string text = kValidConfig;
  text.erase(text.find("\"d_ff\": 16,"), 11);
  absl::StatusOr<ModelConfig> config = ParseModelConfig(text);
  EXPECT_THAT(config.status(), IsInvalid("config.json: missing required key \"d_ff\""));
}

TEST(ModelConfigTest, MissingNestedKey) {
  absl::StatusOr<ModelConfig> config =
      ParseModelConfig(ConfigWith("input", R"({"kind": "tokens"})"));
  EXPECT_THAT(config.status(), IsInvalid("config.json: missing required key \"input.vocab_size\""));
}

TEST(ModelConfigTest, WrongJsonTypes) {
  struct Case {
    std::string key, value, expected;
  };
  const Case cases[] = {
      {"d_model", "3.5", "d_model must be an integer, got number 3.5"},
      {"d_model", "8.0", "d_model must be an integer"},
      {"d_model", "\"8\"", "d_model must be an integer, got string \"8\""},
      {"n_heads", "true", "n_heads must be an integer, got boolean true"},
      {"n_layers", "null", "n_layers must be an integer, got null"},
      {"output_dim", "[5]", "output_dim must be an integer, got array"},
      {"model_type", "7", "model_type must be a string, got number 7"},
      {"input", "[]", "input must be an object, got array"},
      {"input", R"({"kind": 1, "vocab_size": 3})", "input.kind must be a string"},
      {"input", R"({"kind": "tokens", "vocab_size": "3"})", "input.vocab_size must be an integer"},
      {"input", R"({"kind": "images", "vocab_size": 3})",
       "input.kind must be \"tokens\" or \"features\", got \"images\""},
  };
  for (const Case& c : cases) {
    EXPECT_THAT(ParseModelConfig(ConfigWith(c.key, c.value)).status(),
                IsInvalid(HasSubstr(c.expected)))
        << c.key << "=" << c.value;
  }
}

TEST(ModelConfigTest, WrongTypeForOptionalKeys) {
  const std::pair<std::string, std::string> cases[] = {
      {R"("position": 1,)", "position must be a string, got number 1"},
      {R"("position": "rotary",)", "position must be \"none\" or \"sinusoidal\", got \"rotary\""},
      {R"("norm_eps": "1e-5",)", "norm_eps must be a number, got string"},
      {R"("norm_eps": 0,)", "norm_eps must be a positive normal float32"},
      {R"("norm_eps": 1e-50,)",
       "norm_eps must be a positive normal float32 (>= 1.17549e-38), got 1e-50"},
  };
  for (const auto& [inserted, expected] : cases) {
    std::string text = kValidConfig;
    text.insert(1, inserted);
    EXPECT_THAT(ParseModelConfig(text).status(), IsInvalid(HasSubstr(expected))) << inserted;
  }
}

TEST(ModelConfigTest, OutOfRangeValues) {
  EXPECT_THAT(
      ParseModelConfig(ConfigWith("input", R"({"kind": "tokens", "vocab_size": 0})")).status(),
      IsInvalid("config.json: input.vocab_size must be >= 1, got 0"));
  EXPECT_THAT(ParseModelConfig(ConfigWith("n_layers", "-2")).status(),
              IsInvalid("config.json: n_layers must be >= 1, got -2"));
  EXPECT_THAT(ParseModelConfig(ConfigWith("d_ff", "1000000")).status(),
              IsInvalid("config.json: d_ff must be <= 65536, got 1000000"));
  EXPECT_THAT(ParseModelConfig(ConfigWith("d_ff", "18446744073709551615")).status(),
              IsInvalid(HasSubstr("d_ff is out of range")));
  EXPECT_THAT(ParseModelConfig(ConfigWith("input", R"({"kind": "features", "n_features": 70000})"))
                  .status(),
              IsInvalid(HasSubstr("input.n_features must be <= 65536, got 70000")));
}

TEST(ModelConfigTest, ContradictoryInputSizes) {
  EXPECT_THAT(ParseModelConfig(ConfigWith("input", R"({"kind": "tokens", "vocab_size": 3,
                                                       "n_features": 2})"))
                  .status(),
              IsInvalid(HasSubstr("input.n_features must not be set")));
}

TEST(ModelConfigTest, InvalidJson) {
  absl::StatusOr<ModelConfig> config = ParseModelConfig(R"({"model_type": "aaren",)");
  EXPECT_THAT(config.status(), IsInvalid(HasSubstr("config.json: not valid JSON")));
  EXPECT_THAT(ParseModelConfig("[1, 2]").status(),
              IsInvalid(HasSubstr("config.json: must be a JSON object, got array")));
  EXPECT_THAT(ParseModelConfig("").status(), IsInvalid(HasSubstr("not valid JSON")));
}

// Values nested far deeper than any config are described by type and size, never dumped (a dump
// recursed per level and overflowed the stack: the server died with SIGSEGV at start-up).
TEST(ModelConfigTest, DeeplyNestedValuesAreRefusedNotDumped) {
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');
  EXPECT_THAT(ParseModelConfig(deep).status(),
              IsInvalid("config.json: must be a JSON object, got array of 1 element"));
  EXPECT_THAT(ParseModelConfig(ConfigWith("d_model", deep)).status(),
              IsInvalid("config.json: d_model must be an integer, got array of 1 element"));
}

TEST(ModelConfigTest, ValidateRejectsBadStructs) {
  EXPECT_TRUE(ValidateModelConfig(SmallConfig()).ok());
  ModelConfig config = SmallConfig();
  config.n_features = 3;  // tokens input with a feature count
  EXPECT_EQ(ValidateModelConfig(config).code(), absl::StatusCode::kInvalidArgument);
  config = SmallConfig();
  config.norm_eps = std::numeric_limits<double>::infinity();
  EXPECT_THAT(ValidateModelConfig(config).message(), HasSubstr("norm_eps"));
  config = SmallConfig();
  config.n_heads = 0;
  EXPECT_EQ(ValidateModelConfig(config).message(), "n_heads must be >= 1, got 0");
}

using ReadModelConfigTest = TempDirTest;

TEST_F(ReadModelConfigTest, MissingFileIsNotFound) {
  EXPECT_THAT(ReadModelConfig(dir_ / "config.json").status(), IsNotFound(HasSubstr("config.json")));
}

TEST_F(ReadModelConfigTest, ErrorsArePrefixedWithThePath) {
  const fs::path path = dir_ / "config.json";
  WriteText(path, ConfigWith("model_type", "\"gpt2\""));
  absl::StatusOr<ModelConfig> config = ReadModelConfig(path);
  EXPECT_THAT(
      config.status(),
      IsInvalid(absl::StrCat(path.string(), ": unknown model_type \"gpt2\" (expected \"aaren\")")));
}

TEST_F(ReadModelConfigTest, AFileLargerThanAnyConfigIsRefusedUnread) {
  const fs::path path = dir_ / "config.json";
  WriteText(path, std::string(kValidConfig) + std::string((1 << 20) + 1, ' '));
  EXPECT_THAT(ReadModelConfig(path).status(),
              IsInvalid(HasSubstr("more than a config.json may hold (1048576)")));
}

TEST_F(ReadModelConfigTest, ReadsValidFile) {
  WriteText(dir_ / "config.json", kValidConfig);
  absl::StatusOr<ModelConfig> config = ReadModelConfig(dir_ / "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->vocab_size, 12);
}

}  // namespace
}  // namespace aaren
