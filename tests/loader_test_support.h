// SPDX-License-Identifier: Apache-2.0
// Shared helpers for the model-format tests (model_config_test, safetensors_test, model_test):
// small configs, random tensor sets, raw safetensors images, status matchers and a temp dir.
#ifndef AAREN_TESTS_LOADER_TEST_SUPPORT_H_
#define AAREN_TESTS_LOADER_TEST_SUPPORT_H_

#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "core/model_config.h"
#include "core/safetensors.h"
#include "core/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace aaren {

// A small token-input config: d_model 8, 2 heads, 2 layers, d_ff 16, vocab 12, 5 outputs.
ModelConfig SmallConfig();

// The same sizes with 3 input features, sinusoidal positions and norm_eps 1e-6.
ModelConfig SmallFeaturesConfig();

// Random tensors with exactly the names and shapes of ExpectedTensors(config).
std::map<std::string, Tensor> RandomTensors(const ModelConfig& config, uint32_t seed = 1);

// Views of the tensors in name order (the order they are serialized in).
std::vector<NamedTensor> Named(const std::map<std::string, Tensor>& tensors);

// A raw safetensors image: u64 length, header text as given (no padding), data.
std::string RawFile(std::string_view header, std::string_view data);

// One header entry: "name": {"dtype": ..., "shape": <shape_json>, "data_offsets": [begin, end]}.
std::string Entry(const std::string& name, const std::string& dtype, const std::string& shape_json,
                  uint64_t begin, uint64_t end);

std::string U16Bytes(std::initializer_list<uint16_t> values);

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

// A fresh directory under the gtest temp dir, removed at the end of the test.
class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  void WriteText(const std::filesystem::path& path, const std::string& text);

  // Writes config.json + model.safetensors for `config` into `model_dir`.
  void WriteModel(const std::filesystem::path& model_dir, const ModelConfig& config,
                  const std::map<std::string, Tensor>& tensors);

  std::filesystem::path dir_;
};

inline constexpr char kValidConfig[] = R"({
  "model_type": "aaren", "d_model": 8, "n_heads": 2, "n_layers": 1, "d_ff": 16,
  "input": {"kind": "tokens", "vocab_size": 12}, "output_dim": 5
})";

// kValidConfig with `key` (a top-level key) set to `value_json`.
std::string ConfigWith(const std::string& key, const std::string& value_json);

}  // namespace aaren

#endif  // AAREN_TESTS_LOADER_TEST_SUPPORT_H_
