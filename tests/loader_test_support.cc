// SPDX-License-Identifier: Apache-2.0
// Shared helpers for the model-format tests (see loader_test_support.h).
#include "tests/loader_test_support.h"

#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <random>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "core/model.h"

namespace aaren {

namespace fs = std::filesystem;

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
std::map<std::string, Tensor> RandomTensors(const ModelConfig& config, uint32_t seed) {
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

std::string U16Bytes(std::initializer_list<uint16_t> values) {
  std::string out(values.size() * 2, '\0');
  std::memcpy(out.data(), std::data(values), out.size());
  return out;
}

void TempDirTest::SetUp() {
  static std::atomic<int> counter{0};
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  dir_ = fs::path(::testing::TempDir()) /
         absl::StrCat("loader_test_", getpid(), "_", counter++, "_", info->name());
  fs::remove_all(dir_);
  fs::create_directories(dir_);
}

void TempDirTest::TearDown() {
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

void TempDirTest::WriteText(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  ASSERT_TRUE(out.good());
}

void TempDirTest::WriteModel(const fs::path& model_dir, const ModelConfig& config,
                             const std::map<std::string, Tensor>& tensors) {
  fs::create_directories(model_dir);
  WriteText(model_dir / "config.json", ModelConfigToJson(config));
  ASSERT_TRUE(WriteSafetensors(model_dir / "model.safetensors", Named(tensors)).ok());
}

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

}  // namespace aaren
