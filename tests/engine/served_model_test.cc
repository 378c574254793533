// SPDX-License-Identifier: Apache-2.0
// ModelRegistry: serving in-memory models and model directories by name, lookups and their
// errors, and the config hash that decides which snapshots a server accepts.
#include "engine/served_model.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/aaren_state.h"
#include "tests/engine/engine_test_support.h"
#include "tests/loader_test_support.h"

namespace aaren::testing {
namespace {

using ::testing::HasSubstr;

BackendFactory CpuFactory() {
  return [](std::shared_ptr<const Model> m) -> absl::StatusOr<std::unique_ptr<Backend>> {
    return std::make_unique<CpuBackend>(std::move(m), TestBackendOptions());
  };
}

const ModelConfig& TokConfig() {
  static const ModelConfig config =
      MakeConfig(InputKind::kTokens, PositionKind::kNone, 2, 2, 16, 32, 5);
  return config;
}

TEST(ModelRegistryTest, ServesModelsByName) {
  const ModelConfig feat = MakeConfig(InputKind::kFeatures, PositionKind::kSinusoidal, 4, 1, 16);
  auto registry = MakeCpuRegistry(
      {NamedRandomModel("zeta", TokConfig(), 1), NamedRandomModel("alpha", feat, 2)});
  ASSERT_NE(registry, nullptr);

  const ServedModel* zeta = registry->Find("zeta");
  ASSERT_NE(zeta, nullptr);
  EXPECT_EQ(zeta->name, "zeta");
  EXPECT_EQ(zeta->model->name(), "zeta");
  EXPECT_EQ(&zeta->config(), &zeta->model->config());
  EXPECT_EQ(zeta->layout.n_layers, 2);
  EXPECT_EQ(zeta->layout.n_heads, 2);
  EXPECT_EQ(zeta->layout.d_head, 8);
  EXPECT_EQ(zeta->state_floats, TokConfig().state_floats());
  EXPECT_EQ(zeta->state_floats, zeta->layout.total_floats());
  EXPECT_EQ(zeta->output_dim, 5);
  ASSERT_NE(zeta->backend, nullptr);
  EXPECT_EQ(zeta->backend->name(), "cpu");
  EXPECT_EQ(&zeta->backend->model(), zeta->model.get());
  EXPECT_FALSE(zeta->config_hash.empty());

  EXPECT_EQ(registry->Find("nope"), nullptr);
  absl::StatusOr<const ServedModel*> got = registry->Get("alpha", "model");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ((*got)->name, "alpha");

  const std::vector<const ServedModel*> all = registry->models();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0]->name, "alpha");  // sorted by name
  EXPECT_EQ(all[1]->name, "zeta");
}

TEST(ModelRegistryTest, GetOfAnUnknownNameNamesTheFieldAndTheServedModels) {
  auto registry = MakeCpuRegistry(
      {NamedRandomModel("lm", TokConfig(), 1), NamedRandomModel("cls", TokConfig(), 2)});
  ASSERT_NE(registry, nullptr);
  absl::StatusOr<const ServedModel*> got = registry->Get("gpt", "open.model");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  const std::string msg(got.status().message());
  EXPECT_THAT(msg, HasSubstr("open.model"));
  EXPECT_THAT(msg, HasSubstr("'gpt'"));
  EXPECT_THAT(msg, HasSubstr("cls, lm"));
}

TEST(ModelRegistryTest, TwoModelsWithOneNameAreRejected) {
  auto registry = ModelRegistry::FromModels(
      {NamedRandomModel("same", TokConfig(), 1), NamedRandomModel("same", TokConfig(), 2)},
      CpuFactory());
  EXPECT_EQ(registry.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(registry.status().message()), HasSubstr("'same'"));
}

TEST(ModelRegistryTest, BackendFactoryErrorsPropagate) {
  auto registry = ModelRegistry::FromModels(
      {NamedRandomModel("m", TokConfig(), 1)},
      [](std::shared_ptr<const Model>) -> absl::StatusOr<std::unique_ptr<Backend>> {
        return absl::UnavailableError("no device");
      });
  EXPECT_EQ(registry.status().code(), absl::StatusCode::kUnavailable);
}

TEST(ModelRegistryTest, ConfigHashFollowsConfigAndWeights) {
  auto hash_of = [](std::shared_ptr<const Model> m) {
    auto registry = MakeCpuRegistry({m});
    return registry ? registry->Find(m->name())->config_hash : std::string();
  };
  const std::string h1 = hash_of(NamedRandomModel("m", TokConfig(), 1));
  EXPECT_EQ(hash_of(NamedRandomModel("m", TokConfig(), 1)), h1);  // deterministic
  EXPECT_NE(hash_of(NamedRandomModel("m", TokConfig(), 2)), h1);  // other weights
  ModelConfig eps = TokConfig();
  eps.norm_eps = 1e-6;  // same tensors, another config
  EXPECT_NE(hash_of(NamedRandomModel("m", eps, 1)), h1);
}

class ModelRegistryLoadTest : public TempDirTest {};

TEST_F(ModelRegistryLoadTest, LoadsDirectoriesNamedByTheirLastComponent) {
  WriteModel(dir_ / "lm", TokConfig(), testing::RandomTensors(TokConfig(), 1));
  WriteModel(dir_ / "other", TokConfig(), testing::RandomTensors(TokConfig(), 2));
  auto registry = ModelRegistry::Load({dir_ / "lm", dir_ / "other"}, CpuFactory());
  ASSERT_TRUE(registry.ok()) << registry.status();
  const ServedModel* lm = (*registry)->Find("lm");
  ASSERT_NE(lm, nullptr);
  EXPECT_EQ(lm->state_floats, TokConfig().state_floats());
  // config.json's hash and the weights' hash, 16 hex digits each.
  EXPECT_EQ(lm->config_hash.size(), 33u);
  EXPECT_EQ(lm->config_hash[16], '-');
  const ServedModel* other = (*registry)->Find("other");
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(other->config_hash.substr(0, 16), lm->config_hash.substr(0, 16));  // same config
  EXPECT_NE(other->config_hash, lm->config_hash);                              // other weights

  auto again = ModelRegistry::Load({dir_ / "lm"}, CpuFactory());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)->Find("lm")->config_hash, lm->config_hash);
}

TEST_F(ModelRegistryLoadTest, LoadErrors) {
  WriteModel(dir_ / "a" / "m", TokConfig(), testing::RandomTensors(TokConfig(), 1));
  WriteModel(dir_ / "b" / "m", TokConfig(), testing::RandomTensors(TokConfig(), 2));
  auto dup = ModelRegistry::Load({dir_ / "a" / "m", dir_ / "b" / "m"}, CpuFactory());
  EXPECT_EQ(dup.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(dup.status().message()), HasSubstr("'m'"));

  auto missing = ModelRegistry::Load({dir_ / "absent"}, CpuFactory());
  EXPECT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("absent"));
}

}  // namespace
}  // namespace aaren::testing
