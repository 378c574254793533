// SPDX-License-Identifier: Apache-2.0
// Tests for the model format: config.json parsing, the safetensors reader/writer and Model
// (tensor-set validation, loading a model directory). Each malformed input has its own test
// that checks the status code and the message a user would see.
#include <unistd.h>

#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/types/span.h"
#include "core/model.h"
#include "core/model_config.h"
#include "core/safetensors.h"
#include "core/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace aaren {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsNan;
using ::testing::Not;
using ::testing::StartsWith;

// ---- helpers ----

ModelConfig SmallConfig() {
  return ModelConfig{.d_model = 8,
                     .n_heads = 2,
                     .n_layers = 2,
                     .d_ff = 16,
                     .input_kind = InputKind::kTokens,
                     .vocab_size = 12,
                     .output_dim = 5};
}

ModelConfig SmallFeaturesConfig() {
  return ModelConfig{.d_model = 8,
                     .n_heads = 2,
                     .n_layers = 2,
                     .d_ff = 16,
                     .input_kind = InputKind::kFeatures,
                     .n_features = 3,
                     .output_dim = 5,
                     .position = PositionKind::kSinusoidal,
                     .norm_eps = 1e-6};
}

// Random tensors with exactly the names and shapes of ExpectedTensors(config).
std::map<std::string, Tensor> RandomTensors(const ModelConfig& config, uint32_t seed = 1) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::map<std::string, Tensor> tensors;
  for (const auto& [name, shape] : ExpectedTensors(config)) {
    Tensor t;
    t.shape = shape;
    t.data.resize(static_cast<size_t>(NumElements(shape)));
    for (float& v : t.data) v = dist(rng);
    tensors.emplace(name, std::move(t));
  }
  return tensors;
}

// Views of the tensors in name order (the order they are serialized in).
std::vector<NamedTensor> Named(const std::map<std::string, Tensor>& tensors) {
  std::vector<NamedTensor> named;
  for (const auto& [name, tensor] : tensors) named.push_back({name, &tensor});
  return named;
}

absl::Span<const uint8_t> Bytes(const std::string& s) {
  return absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

// A raw safetensors image: u64 length, header text as given (no padding), data.
std::string RawFile(std::string_view header, std::string_view data) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  out.append(header);
  out.append(data);
  return out;
}

// One header entry: "name": {"dtype": ..., "shape": <shape_json>, "data_offsets": [begin, end]}.
std::string Entry(const std::string& name, const std::string& dtype, const std::string& shape_json,
                  uint64_t begin, uint64_t end) {
  return absl::StrCat("\"", name, "\": {\"dtype\": \"", dtype, "\", \"shape\": ", shape_json,
                      ", \"data_offsets\": [", begin, ", ", end, "]}");
}

std::string Header(std::initializer_list<std::string> entries) {
  return absl::StrCat("{", absl::StrJoin(entries, ", "), "}");
}

// Matches a status with `code` whose message matches `message` (a string or a matcher).
MATCHER_P2(StatusIs, code, message, "") {
  if (arg.code() != code) {
    *result_listener << "code is " << absl::StatusCodeToString(arg.code()) << ": " << arg.message();
    return false;
  }
  return ::testing::ExplainMatchResult(message, std::string(arg.message()), result_listener);
}
template <typename M>
auto IsInvalid(M message) {
  return StatusIs(absl::StatusCode::kInvalidArgument, message);
}
template <typename M>
auto IsNotFound(M message) {
  return StatusIs(absl::StatusCode::kNotFound, message);
}

// Every field of a config, for whole-struct comparisons.
auto Fields(const ModelConfig& c) {
  return std::tuple(c.model_type, c.d_model, c.n_heads, c.n_layers, c.d_ff, c.input_kind,
                    c.vocab_size, c.n_features, c.output_dim, c.position, c.norm_eps);
}

absl::Status ParseStatus(const std::string& bytes) {
  return SafetensorsFile::FromBytes(Bytes(bytes)).status();
}

std::string FloatBytes(std::initializer_list<float> values) {
  std::string out(values.size() * 4, '\0');
  std::memcpy(out.data(), std::data(values), out.size());
  return out;
}

std::string U16Bytes(std::initializer_list<uint16_t> values) {
  std::string out(values.size() * 2, '\0');
  std::memcpy(out.data(), std::data(values), out.size());
  return out;
}

// A fresh directory under the gtest temp dir, removed at the end of the test.
class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           absl::StrCat("loader_test_", getpid(), "_", counter++, "_", info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  void WriteText(const fs::path& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary);
    out << text;
    ASSERT_TRUE(out.good());
  }

  // Writes config.json + model.safetensors for `config` into `model_dir`.
  void WriteModel(const fs::path& model_dir, const ModelConfig& config,
                  const std::map<std::string, Tensor>& tensors) {
    fs::create_directories(model_dir);
    WriteText(model_dir / "config.json", ModelConfigToJson(config));
    ASSERT_TRUE(WriteSafetensors(model_dir / "model.safetensors", Named(tensors)).ok());
  }

  fs::path dir_;
};

// ---- config.json ----

constexpr char kValidConfig[] = R"({
  "model_type": "aaren", "d_model": 8, "n_heads": 2, "n_layers": 1, "d_ff": 16,
  "input": {"kind": "tokens", "vocab_size": 12}, "output_dim": 5
})";

// kValidConfig with `key` (a top-level key) set to `value_json`.
std::string ConfigWith(const std::string& key, const std::string& value_json) {
  std::string text = kValidConfig;
  const std::string needle = absl::StrCat("\"", key, "\": ");
  const size_t at = text.find(needle);
  if (at == std::string::npos) return text;
  const size_t value_begin = at + needle.size();
  size_t value_end = value_begin;
  if (text[value_begin] == '{') {
    value_end = text.find('}', value_begin) + 1;
  } else {
    value_end = text.find_first_of(",\n}", value_begin);
  }
  return text.replace(value_begin, value_end - value_begin, value_json);
}

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
      {R"("norm_eps": 0,)", "norm_eps must be finite and > 0"},
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

TEST_F(ReadModelConfigTest, ReadsValidFile) {
  WriteText(dir_ / "config.json", kValidConfig);
  absl::StatusOr<ModelConfig> config = ReadModelConfig(dir_ / "config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->vocab_size, 12);
}

// ---- safetensors ----

TEST(SafetensorsTest, RoundTripsSerializedTensors) {
  const auto tensors = RandomTensors(SmallConfig());
  const std::string bytes = SerializeSafetensors(Named(tensors), {{"format", "pt"}});
  uint64_t header_size = 0;
  std::memcpy(&header_size, bytes.data(), 8);
  EXPECT_EQ(header_size % 8, 0u);
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::FromBytes(Bytes(bytes));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->tensors().size(), tensors.size());
  EXPECT_THAT(file->metadata(),
              ElementsAre(std::pair<const std::string, std::string>("format", "pt")));
  for (const auto& [name, tensor] : tensors) {
    const TensorInfo* info = file->Find(name);
    ASSERT_NE(info, nullptr) << name;
    EXPECT_EQ(info->dtype, DType::kF32);
    const Tensor read = file->ReadFloat32(*info);
    EXPECT_EQ(read.shape, tensor.shape) << name;
    EXPECT_EQ(read.data, tensor.data) << name;
  }
  EXPECT_EQ(file->Find("nope"), nullptr);
}

TEST(SafetensorsTest, NoMetadataKeyWhenMetadataIsEmpty) {
  Tensor t{{2}, {1.0f, 2.0f}};
  const std::string bytes = SerializeSafetensors({{"t", &t}});
  EXPECT_EQ(bytes.find("__metadata__"), std::string::npos);
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::FromBytes(Bytes(bytes));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE(file->metadata().empty());
}

TEST(SafetensorsTest, TensorsAreSortedByOffset) {
  const std::string bytes =
      RawFile(Header({Entry("b", "F32", "[1]", 4, 8), Entry("a", "F32", "[1]", 8, 12),
                      Entry("c", "F32", "[1]", 0, 4)}),
              FloatBytes({1.0f, 2.0f, 3.0f}));
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::FromBytes(Bytes(bytes));
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ(file->tensors().size(), 3u);
  EXPECT_EQ(file->tensors()[0].name, "c");
  EXPECT_EQ(file->tensors()[1].name, "b");
  EXPECT_EQ(file->tensors()[2].name, "a");
  EXPECT_EQ(file->ReadFloat32(*file->Find("a")).data, std::vector<float>{3.0f});
}

TEST(SafetensorsTest, EmptyHeaderObjectIsValid) {
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::FromBytes(Bytes(RawFile("{}", "")));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE(file->tensors().empty());
}

TEST(SafetensorsTest, ZeroSizedTensorAndScalar) {
  const std::string bytes =
      RawFile(R"({"e": {"dtype": "F32", "shape": [0, 5], "data_offsets": [0, 0]},
                  "s": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}})",
              FloatBytes({7.0f}));
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::FromBytes(Bytes(bytes));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE(file->ReadFloat32(*file->Find("e")).data.empty());
  EXPECT_EQ(file->ReadFloat32(*file->Find("s")).data, std::vector<float>{7.0f});
}

TEST(SafetensorsTest, TruncatedShorterThanLengthField) {
  EXPECT_THAT(ParseStatus(std::string("\x10\x00\x00", 3)),
              IsInvalid("truncated: file is 3 bytes, shorter than the 8-byte header length"));
  EXPECT_THAT(ParseStatus(""), IsInvalid(HasSubstr("truncated: file is 0 bytes")));
}

TEST(SafetensorsTest, TruncatedInTheMiddleOfTheData) {
  const auto tensors = RandomTensors(SmallConfig());
  std::string bytes = SerializeSafetensors(Named(tensors));
  bytes.resize(bytes.size() - 10);
  // The last tensor in offset order is the last one serialized.
  EXPECT_THAT(ParseStatus(bytes),
              IsInvalid(AllOf(StartsWith(absl::StrCat("tensor '", Named(tensors).back().name,
                                                      "': data_offsets [")),
                              HasSubstr("out of range"))));
}

TEST(SafetensorsTest, HeaderLengthPastTheEnd) {
  std::string bytes = RawFile("{}", "");
  const uint64_t n = 1000;
  std::memcpy(bytes.data(), &n, 8);
  EXPECT_THAT(ParseStatus(bytes),
              IsInvalid("header length 1000 extends past the end of the file (size 10)"));
  const uint64_t huge = ~uint64_t{0};
  std::memcpy(bytes.data(), &huge, 8);
  EXPECT_THAT(ParseStatus(bytes),
              IsInvalid(HasSubstr("header length 18446744073709551615 extends past the end")));
}

TEST(SafetensorsTest, InvalidHeaderJson) {
  EXPECT_THAT(ParseStatus(RawFile(R"({"a": {"dtype": )", "")),
              IsInvalid(AllOf(StartsWith("header is not valid JSON"), HasSubstr("parse error"))));
}

TEST(SafetensorsTest, HeaderMustBeAnObject) {
  EXPECT_THAT(ParseStatus(RawFile("[1, 2]", "")),
              IsInvalid("header must be a JSON object, got array"));
}

TEST(SafetensorsTest, EntryMustBeAnObjectWithTypedFields) {
  EXPECT_THAT(ParseStatus(RawFile(R"({"x": 3})", "")),
              IsInvalid("tensor 'x': entry must be a JSON object"));
  EXPECT_THAT(ParseStatus(RawFile(R"({"x": {"shape": [1], "data_offsets": [0, 4]}})", "1234")),
              IsInvalid("tensor 'x': missing \"dtype\""));
  EXPECT_THAT(ParseStatus(RawFile(Header({Entry("x", "F32", "[-1]", 0, 4)}), "1234")),
              IsInvalid("tensor 'x': \"shape\" must contain only non-negative integers"));
  EXPECT_THAT(ParseStatus(RawFile(Header({Entry("x", "F32", "[1.5]", 0, 4)}), "1234")),
              IsInvalid(HasSubstr("non-negative integers")));
  EXPECT_THAT(
      ParseStatus(RawFile(R"({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})", "1234")),
      IsInvalid(HasSubstr("tensor 'x': \"data_offsets\" must be [begin, end]")));
  EXPECT_THAT(ParseStatus(RawFile(Header({Entry("x", "F32", "[0]", 4, 0)}), "1234")),
              IsInvalid("tensor 'x': data_offsets [4, 0] has begin > end"));
}

TEST(SafetensorsTest, RankAndSizeLimits) {
  EXPECT_THAT(
      ParseStatus(RawFile(Header({Entry("x", "F32", "[1,1,1,1,1,1,1,1,1]", 0, 4)}), "1234")),
      IsInvalid("tensor 'x': rank 9 exceeds the maximum of 8"));
  EXPECT_THAT(
      ParseStatus(RawFile(Header({Entry("x", "F32", "[4294967296, 4294967296]", 0, 4)}), "1234")),
      IsInvalid(HasSubstr("tensor 'x': shape is too large")));
  EXPECT_THAT(
      ParseStatus(RawFile(Header({Entry("x", "F32", "[0, 18446744073709551615]", 0, 0)}), "")),
      IsInvalid("tensor 'x': shape dimension 18446744073709551615 is too large"));
  // A zero dimension makes an overflowing product of the others harmless.
  EXPECT_TRUE(
      ParseStatus(RawFile(Header({Entry("x", "F32", "[4294967296, 4294967296, 0]", 0, 0)}), ""))
          .ok());
}

TEST(SafetensorsTest, MetadataMustHoldStrings) {
  EXPECT_THAT(ParseStatus(RawFile(R"({"__metadata__": {"format": 1}})", "")),
              IsInvalid("__metadata__ value for 'format' must be a string, got number"));
  EXPECT_THAT(ParseStatus(RawFile(R"({"__metadata__": "pt"})", "")),
              IsInvalid("__metadata__ must be an object of string values"));
}

TEST(SafetensorsTest, OverlappingOffsets) {
  EXPECT_THAT(
      ParseStatus(RawFile(Header({Entry("a", "F32", "[2]", 0, 8), Entry("b", "F32", "[2]", 4, 12)}),
                          FloatBytes({1, 2, 3}))),
      IsInvalid(StartsWith("tensor 'b' overlaps tensor 'a'")));
}

TEST(SafetensorsTest, OutOfRangeOffsets) {
  EXPECT_THAT(ParseStatus(RawFile(Header({Entry("a", "F32", "[2]", 0, 8)}), "1234")),
              IsInvalid("tensor 'a': data_offsets [0, 8] out of range (data buffer is 4 bytes)"));
}

TEST(SafetensorsTest, GapBetweenTensors) {
  EXPECT_THAT(
      ParseStatus(RawFile(Header({Entry("a", "F32", "[1]", 0, 4), Entry("b", "F32", "[1]", 8, 12)}),
                          FloatBytes({1, 2, 3}))),
      IsInvalid("gap in the data buffer: bytes [4, 8) before tensor 'b' belong to no tensor"));
  EXPECT_THAT(ParseStatus(RawFile(Header({Entry("a", "F32", "[1]", 4, 8)}), FloatBytes({1, 2}))),
              IsInvalid(HasSubstr("gap in the data buffer: bytes [0, 4) before tensor 'a'")));
}

TEST(SafetensorsTest, TrailingBytesAfterTheLastTensor) {
  EXPECT_THAT(
      ParseStatus(RawFile(Header({Entry("a", "F32", "[1]", 0, 4)}), FloatBytes({1, 2}))),
      IsInvalid(
          "trailing bytes: the data buffer is 8 bytes but the tensors cover only the first 4"));
}

TEST(SafetensorsTest, UnsupportedDtype) {
  EXPECT_THAT(ParseStatus(RawFile(Header({Entry("x", "I64", "[1]", 0, 8)}), "12345678")),
              IsInvalid("tensor 'x': dtype I64 not supported (expected F32, F16 or BF16)"));
  EXPECT_THAT(ParseStatus(RawFile(Header({Entry("x", "Q4", "[1]", 0, 1)}), "1")),
              IsInvalid("tensor 'x': unknown dtype \"Q4\""));
}

TEST(SafetensorsTest, WrongByteSizeForShape) {
  EXPECT_THAT(
      ParseStatus(RawFile(Header({Entry("x", "F32", "[2, 3]", 0, 20)}), std::string(20, 0))),
      IsInvalid("tensor 'x': shape [2, 3] of F32 needs 24 bytes but data_offsets span 20"));
}

TEST(SafetensorsTest, ConvertsF16) {
  const std::string bytes = RawFile(
      Header({Entry("h", "F16", "[2, 5]", 0, 20)}),
      U16Bytes({0x3C00, 0xC000, 0x0001, 0x03FF, 0x7BFF, 0x8000, 0x3555, 0x7C00, 0xFC00, 0x7E00}));
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::FromBytes(Bytes(bytes));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->tensors()[0].dtype, DType::kF16);
  const Tensor t = file->ReadFloat32(file->tensors()[0]);
  EXPECT_EQ(t.shape, (std::vector<int64_t>{2, 5}));
  constexpr float kInf = std::numeric_limits<float>::infinity();
  // 1, -2, smallest and largest subnormal, largest finite, -0, 1/3 rounded, +-inf, NaN.
  EXPECT_THAT(t.data, ElementsAre(1.0f, -2.0f, std::ldexp(1.0f, -24), std::ldexp(1023.0f, -24),
                                  65504.0f, 0.0f, 0.333251953125f, kInf, -kInf, IsNan()));
  EXPECT_TRUE(std::signbit(t.data[5]));
}

TEST(SafetensorsTest, ConvertsEveryF16BitPattern) {
  std::string data(65536 * 2, '\0');
  for (uint32_t bits = 0; bits < 65536; ++bits) {
    const uint16_t h = static_cast<uint16_t>(bits);
    std::memcpy(data.data() + 2 * bits, &h, 2);
  }
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::FromBytes(
      Bytes(RawFile(Header({Entry("h", "F16", "[65536]", 0, data.size())}), data)));
  ASSERT_TRUE(file.ok()) << file.status();
  const Tensor t = file->ReadFloat32(file->tensors()[0]);
  for (uint32_t bits = 0; bits < 65536; ++bits) {
    // The IEEE binary16 definition, evaluated in double.
    const int exponent = (bits >> 10) & 0x1f;
    const double mantissa = bits & 0x3ff;
    const double magnitude = exponent == 0x1f ? (mantissa == 0 ? INFINITY : NAN)
                             : exponent == 0  ? std::ldexp(mantissa, -24)
                                              : std::ldexp(1024 + mantissa, exponent - 25);
    const double expected = (bits & 0x8000) ? -magnitude : magnitude;
    const float got = t.data[bits];
    if (std::isnan(expected)) {
      ASSERT_TRUE(std::isnan(got)) << std::hex << bits;
    } else {
      ASSERT_EQ(got, static_cast<float>(expected)) << std::hex << bits;
      ASSERT_EQ(std::signbit(got), std::signbit(expected)) << std::hex << bits;
    }
  }
}

TEST(SafetensorsTest, ConvertsBF16) {
  const std::string bytes =
      RawFile(R"({"b": {"dtype": "BF16", "shape": [5], "data_offsets": [0, 10]}})",
              U16Bytes({0x3F80, 0xC040, 0x4049, 0x7F80, 0x0001}));
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::FromBytes(Bytes(bytes));
  ASSERT_TRUE(file.ok()) << file.status();
  const Tensor t = file->ReadFloat32(file->tensors()[0]);
  EXPECT_EQ(file->tensors()[0].dtype, DType::kBF16);
  EXPECT_THAT(t.data, ElementsAre(1.0f, -3.0f, 3.140625f, std::numeric_limits<float>::infinity(),
                                  std::bit_cast<float>(uint32_t{0x00010000})));
}

TEST(SafetensorsTest, ReadsUnalignedMixedDtypes) {
  // A 3-byte header and a 2-byte F16 tensor put the F32 tensor at an odd address.
  std::string data = U16Bytes({0x3C00});
  data += FloatBytes({2.5f, -4.0f});
  data += U16Bytes({0x4000});
  const std::string header =
      R"({"a": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]},
          "b": {"dtype": "F32", "shape": [2], "data_offsets": [2, 10]},
          "c": {"dtype": "BF16", "shape": [1], "data_offsets": [10, 12]}} )";
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::FromBytes(Bytes(RawFile(header, data)));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_THAT(file->ReadFloat32(*file->Find("a")).data, ElementsAre(1.0f));
  EXPECT_THAT(file->ReadFloat32(*file->Find("b")).data, ElementsAre(2.5f, -4.0f));
  EXPECT_THAT(file->ReadFloat32(*file->Find("c")).data, ElementsAre(2.0f));
}

using SafetensorsFileTest = TempDirTest;

TEST_F(SafetensorsFileTest, OpenMapsAWrittenFile) {
  const auto tensors = RandomTensors(SmallConfig(), 7);
  const fs::path path = dir_ / "w.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, Named(tensors), {{"k", "v"}}).ok());
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->metadata().at("k"), "v");
  // Moving the file object keeps the mapping alive.
  SafetensorsFile moved = std::move(*file);
  for (const auto& [name, tensor] : tensors) {
    EXPECT_EQ(moved.ReadFloat32(*moved.Find(name)).data, tensor.data) << name;
  }
}

TEST_F(SafetensorsFileTest, OpenMissingFileIsNotFound) {
  EXPECT_THAT(SafetensorsFile::Open(dir_ / "none.safetensors").status(),
              IsNotFound(HasSubstr("none.safetensors")));
}

TEST_F(SafetensorsFileTest, OpenEmptyFileOrDirectoryIsInvalid) {
  WriteText(dir_ / "empty.safetensors", "");  // 0 bytes: nothing to map
  EXPECT_THAT(SafetensorsFile::Open(dir_ / "empty.safetensors").status(),
              IsInvalid(HasSubstr("empty.safetensors: truncated")));
  EXPECT_THAT(SafetensorsFile::Open(dir_).status(), IsInvalid(HasSubstr("not a regular file")));
}

// ---- Model ----

TEST(ExpectedTensorsTest, CanonicalNamesAndShapes) {
  using NameShape = std::pair<std::string, std::vector<int64_t>>;
  const auto expected = ExpectedTensors(SmallConfig());
  ASSERT_EQ(expected.size(), 1u + 2 * 15 + 4);
  EXPECT_EQ(expected[0], NameShape("embed.weight", {12, 8}));
  EXPECT_EQ(expected[3], NameShape("layers.0.attn.query", {2, 4}));
  EXPECT_EQ(expected[4], NameShape("layers.0.attn.key.weight", {8, 8}));
  EXPECT_EQ(expected[12], NameShape("layers.0.ffn.up.weight", {16, 8}));
  EXPECT_EQ(expected[14], NameShape("layers.0.ffn.down.weight", {8, 16}));
  EXPECT_EQ(expected[16], NameShape("layers.1.norm1.weight", {8}));
  EXPECT_EQ(expected[31], NameShape("norm_f.weight", {8}));
  EXPECT_EQ(expected[33], NameShape("head.weight", {5, 8}));
  EXPECT_EQ(expected[34], NameShape("head.bias", {5}));

  const auto features = ExpectedTensors(SmallFeaturesConfig());
  EXPECT_EQ(features[0], NameShape("input.weight", {8, 3}));
  EXPECT_EQ(features[1], NameShape("input.bias", {8}));
}

TEST(ModelTest, FromTensorsWiresAccessors) {
  const ModelConfig config = SmallConfig();
  auto tensors = RandomTensors(config);
  int64_t total = 0;
  for (const auto& [name, t] : tensors) total += t.num_elements();
  absl::StatusOr<std::shared_ptr<const Model>> model = Model::FromTensors("small", config, tensors);
  ASSERT_TRUE(model.ok()) << model.status();
  const Model& m = **model;
  EXPECT_EQ(m.name(), "small");
  EXPECT_EQ(m.num_parameters(), total);
  EXPECT_EQ(m.tensors().size(), tensors.size());
  ASSERT_NE(m.embed_weight(), nullptr);
  EXPECT_EQ(m.embed_weight()->data, tensors["embed.weight"].data);
  EXPECT_EQ(m.input_weight(), nullptr);
  EXPECT_EQ(m.input_bias(), nullptr);
  EXPECT_EQ(m.layer(1).query->data, tensors["layers.1.attn.query"].data);
  EXPECT_EQ(m.layer(0).ffn_down_weight->shape, (std::vector<int64_t>{8, 16}));
  EXPECT_EQ(m.layer(1).value_bias, &m.tensor("layers.1.attn.value.bias"));
  EXPECT_EQ(m.head_weight().data, tensors["head.weight"].data);
  EXPECT_EQ(m.norm_f_bias().data, tensors["norm_f.bias"].data);
}

TEST(ModelTest, FromTensorsFeaturesInput) {
  const ModelConfig config = SmallFeaturesConfig();
  absl::StatusOr<std::shared_ptr<const Model>> model =
      Model::FromTensors("f", config, RandomTensors(config));
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->embed_weight(), nullptr);
  ASSERT_NE((*model)->input_weight(), nullptr);
  EXPECT_EQ((*model)->input_weight()->shape, (std::vector<int64_t>{8, 3}));
  EXPECT_EQ((*model)->config().position, PositionKind::kSinusoidal);
}

TEST(ModelDeathTest, UnknownTensorNameAborts) {
  const ModelConfig config = SmallConfig();
  auto model = Model::FromTensors("m", config, RandomTensors(config));
  ASSERT_TRUE(model.ok());
  EXPECT_DEATH((*model)->tensor("no.such.tensor"), "no tensor 'no.such.tensor'");
}

// A valid small model's config and tensors, to break one way per test.
class ModelFromTensorsTest : public ::testing::Test {
 protected:
  absl::Status Build() { return Model::FromTensors("m", config_, tensors_).status(); }

  ModelConfig config_ = SmallConfig();
  std::map<std::string, Tensor> tensors_ = RandomTensors(config_);
};

TEST_F(ModelFromTensorsTest, WrongShape) {
  tensors_["embed.weight"] = Tensor{{10, 8}, std::vector<float>(80, 0.5f)};
  EXPECT_THAT(Build(), IsInvalid("tensor 'embed.weight' has shape [10, 8], expected [12, 8]"));
}

TEST_F(ModelFromTensorsTest, MissingTensor) {
  tensors_.erase("layers.0.attn.query");
  EXPECT_THAT(Build(), IsInvalid("missing tensor 'layers.0.attn.query' (expected shape [2, 4])"));
}

TEST_F(ModelFromTensorsTest, UnexpectedTensor) {
  tensors_["foo"] = Tensor{{1}, {0.0f}};
  EXPECT_THAT(Build(), IsInvalid("unexpected tensor 'foo'"));
}

TEST_F(ModelFromTensorsTest, ReportsAllProblemsAtOnce) {
  tensors_.erase("layers.1.norm2.bias");
  tensors_["head.bias"] = Tensor{{4}, {0, 0, 0, 0}};
  tensors_["extra.weight"] = Tensor{{1}, {0.0f}};
  EXPECT_THAT(Build(), IsInvalid("missing tensor 'layers.1.norm2.bias' (expected shape [8]); "
                                 "tensor 'head.bias' has shape [4], expected [5]; "
                                 "unexpected tensor 'extra.weight'"));
}

TEST_F(ModelFromTensorsTest, CapsTheNumberOfReportedProblems) {
  config_.n_layers = 10;  // 120 missing tensors
  const absl::Status status = Build();
  EXPECT_THAT(status, IsInvalid(HasSubstr("; ... and 88 more problems")));
  EXPECT_LT(status.message().size(), 4000u);
}

TEST_F(ModelFromTensorsTest, NonFiniteWeight) {
  tensors_["head.bias"].data[3] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THAT(Build(), IsInvalid("tensor 'head.bias' has a non-finite value at index 3"));
  tensors_ = RandomTensors(config_);
  tensors_["layers.1.attn.key.weight"].data[17] = -std::numeric_limits<float>::infinity();
  EXPECT_THAT(Build(),
              IsInvalid("tensor 'layers.1.attn.key.weight' has a non-finite value at index 17"));
}

TEST_F(ModelFromTensorsTest, DataSizeMustMatchShape) {
  tensors_["norm_f.weight"].data.pop_back();
  EXPECT_THAT(Build(), IsInvalid("tensor 'norm_f.weight' has 7 values but its shape [8] needs 8"));
}

TEST_F(ModelFromTensorsTest, InvalidConfig) {
  config_.d_model = 9;  // not divisible by 2 heads
  EXPECT_THAT(Build(),
              IsInvalid("invalid model config: d_model (9) must be divisible by n_heads (2)"));
}

using ModelLoadTest = TempDirTest;

TEST_F(ModelLoadTest, RoundTripFromDirectory) {
  for (const ModelConfig& config : {SmallConfig(), SmallFeaturesConfig()}) {
    const fs::path model_dir = dir_ / (config.input_kind == InputKind::kTokens ? "tok" : "feat");
    const auto tensors = RandomTensors(config, 42);
    WriteModel(model_dir, config, tensors);
    absl::StatusOr<std::shared_ptr<const Model>> model = Model::Load(model_dir);
    ASSERT_TRUE(model.ok()) << model.status();
    EXPECT_EQ((*model)->name(), model_dir.filename().string());
    EXPECT_EQ((*model)->config().input_kind, config.input_kind);
    EXPECT_EQ((*model)->config().norm_eps, config.norm_eps);
    ASSERT_EQ((*model)->tensors().size(), tensors.size());
    for (const auto& [name, tensor] : tensors) {
      EXPECT_EQ((*model)->tensor(name).shape, tensor.shape) << name;
      EXPECT_EQ((*model)->tensor(name).data, tensor.data) << name;
    }
  }
}

TEST_F(ModelLoadTest, NameFromDirectoryWithTrailingSlash) {
  const ModelConfig config = SmallConfig();
  WriteModel(dir_ / "my-model", config, RandomTensors(config));
  absl::StatusOr<std::shared_ptr<const Model>> model =
      Model::Load(fs::path(dir_.string() + "/my-model/"));
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->name(), "my-model");
  model = Model::Load(dir_ / "my-model" / ".");
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->name(), "my-model");
}

TEST_F(ModelLoadTest, MissingDirectoryIsNotFound) {
  EXPECT_THAT(Model::Load(dir_ / "nope").status(), IsNotFound(HasSubstr("nope")));
}

TEST_F(ModelLoadTest, MissingFilesAreNotFound) {
  const ModelConfig config = SmallConfig();
  WriteModel(dir_ / "m", config, RandomTensors(config));
  fs::remove(dir_ / "m" / "model.safetensors");
  EXPECT_THAT(Model::Load(dir_ / "m").status(), IsNotFound(HasSubstr("model.safetensors")));

  WriteModel(dir_ / "m", config, RandomTensors(config));
  fs::remove(dir_ / "m" / "config.json");
  EXPECT_THAT(Model::Load(dir_ / "m").status(), IsNotFound(HasSubstr("config.json")));
}

TEST_F(ModelLoadTest, ErrorsNameTheFile) {
  const ModelConfig config = SmallConfig();
  auto tensors = RandomTensors(config);
  tensors.erase("norm_f.bias");
  WriteModel(dir_ / "m", config, tensors);
  absl::StatusOr<std::shared_ptr<const Model>> model = Model::Load(dir_ / "m");
  EXPECT_THAT(model.status(),
              IsInvalid(absl::StrCat((dir_ / "m" / "model.safetensors").string(),
                                     ": missing tensor 'norm_f.bias' (expected shape [8])")));
}

TEST_F(ModelLoadTest, MalformedWeightsFileNamesTheFile) {
  const ModelConfig config = SmallConfig();
  WriteModel(dir_ / "m", config, RandomTensors(config));
  WriteText(dir_ / "m" / "model.safetensors", "\x01\x02");
  absl::StatusOr<std::shared_ptr<const Model>> model = Model::Load(dir_ / "m");
  EXPECT_THAT(model.status(), IsInvalid(HasSubstr("model.safetensors: truncated")));
}

TEST_F(ModelLoadTest, ConfigErrorNamesTheFile) {
  const ModelConfig config = SmallConfig();
  WriteModel(dir_ / "m", config, RandomTensors(config));
  WriteText(dir_ / "m" / "config.json", ConfigWith("d_model", "3.5"));
  absl::StatusOr<std::shared_ptr<const Model>> model = Model::Load(dir_ / "m");
  EXPECT_THAT(model.status(),
              IsInvalid(HasSubstr("config.json: d_model must be an integer, got number 3.5")));
  EXPECT_THAT(model.status().message(), Not(HasSubstr("config.json: config.json")));
}

TEST_F(ModelLoadTest, LoadsF16Weights) {
  // Re-encode every tensor as F16 (values chosen exactly representable) and load it.
  const ModelConfig config = SmallConfig();
  std::vector<std::string> entries;
  std::string data;
  for (const auto& [name, shape] : ExpectedTensors(config)) {
    const int64_t n = NumElements(shape);
    entries.push_back(Entry(name, "F16", ShapeToString(shape), data.size(), data.size() + 2 * n));
    for (int64_t k = 0; k < n; ++k) data += U16Bytes({0x3800});  // 0.5
  }
  const std::string header = absl::StrCat("{", absl::StrJoin(entries, ", "), "}");
  fs::create_directories(dir_ / "h");
  WriteText(dir_ / "h" / "config.json", ModelConfigToJson(config));
  WriteText(dir_ / "h" / "model.safetensors", RawFile(header, data));
  absl::StatusOr<std::shared_ptr<const Model>> model = Model::Load(dir_ / "h");
  ASSERT_TRUE(model.ok()) << model.status();
  for (const auto& [name, tensor] : (*model)->tensors()) {
    for (float v : tensor.data) ASSERT_EQ(v, 0.5f) << name;
  }
}

}  // namespace
}  // namespace aaren
