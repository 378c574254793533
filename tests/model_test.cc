// SPDX-License-Identifier: Apache-2.0
// Tests for Model: ExpectedTensors, tensor-set validation in Model::FromTensors and loading a
// model directory with Model::Load.
#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/model.h"
#include "core/model_config.h"
#include "core/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/loader_test_support.h"

namespace aaren {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

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

TEST_F(ModelLoadTest, ExtraAndMisshapedTensorsInTheFileAreNamed) {
  const ModelConfig config = SmallConfig();
  auto tensors = RandomTensors(config);
  tensors["optimizer.step"] = Tensor{{3}, {1.0f, 2.0f, 3.0f}};
  tensors["head.bias"] = Tensor{{2}, {0.0f, 0.0f}};
  WriteModel(dir_ / "m", config, tensors);
  absl::StatusOr<std::shared_ptr<const Model>> model = Model::Load(dir_ / "m");
  EXPECT_THAT(model.status(),
              IsInvalid(HasSubstr("tensor 'head.bias' has shape [2], expected [5]")));
  EXPECT_THAT(model.status(), IsInvalid(HasSubstr("unexpected tensor 'optimizer.step'")));
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
