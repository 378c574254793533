// SPDX-License-Identifier: Apache-2.0
// Mutation fuzzing of the model loader, built with AddressSanitizer + UBSan from the loader
// sources only (see tests/CMakeLists.txt). Valid model images are built in the test, then
// mutated with deterministic seeds: byte flips biased into the 8-byte length and the JSON header,
// insertions of JSON punctuation, length-field nudges and truncations. Every mutant goes through
// SafetensorsFile::FromBytes, ReadFloat32 of every tensor and Model::FromTensors; the loader must
// reject or accept each one without any sanitizer report. config.json text is fuzzed the same way.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "core/model.h"
#include "core/model_config.h"
#include "core/safetensors.h"
#include "core/tensor.h"
#include "gtest/gtest.h"
#include "tests/loader_test_support.h"

namespace aaren {
namespace {

constexpr int kIterations = 5000;  // per image; about 1 s each under ASan

ModelConfig FuzzConfig() {
  ModelConfig config;
  config.d_model = 8;
  config.n_heads = 2;
  config.n_layers = 1;
  config.d_ff = 16;
  config.input_kind = InputKind::kTokens;
  config.vocab_size = 6;
  config.output_dim = 3;
  return config;
}

// An F32 image written by SerializeSafetensors, with metadata.
std::string F32Image(const std::map<std::string, Tensor>& tensors) {
  std::vector<NamedTensor> named;
  for (const auto& [name, tensor] : tensors) named.push_back({name, &tensor});
  return SerializeSafetensors(named, {{"format", "pt"}});
}

// A hand-built image alternating F16 and BF16 tensors (unpadded header, so data is unaligned).
std::string HalfImage(const ModelConfig& config) {
  std::mt19937 rng(321);
  std::string header = "{";
  std::string data;
  bool first = true;
  bool f16 = true;
  for (const auto& [name, shape] : ExpectedTensors(config)) {
    const int64_t n = NumElements(shape);
    absl::StrAppend(&header, first ? "" : ",", "\"", name, "\":{\"dtype\":\"", f16 ? "F16" : "BF16",
                    "\",\"shape\":", ShapeToString(shape), ",\"data_offsets\":[", data.size(), ",",
                    data.size() + 2 * n, "]}");
    for (int64_t i = 0; i < n; ++i) {
      // Small finite values: sign, exponent around 2^-1, random mantissa.
      const uint16_t bits = f16 ? static_cast<uint16_t>(0x3800 | (rng() & 0x83FF))
                                : static_cast<uint16_t>(0x3F00 | (rng() & 0x807F));
      data.append(reinterpret_cast<const char*>(&bits), 2);
    }
    first = false;
    f16 = !f16;
  }
  header += "}";
  std::string out(8, '\0');
  const uint64_t size = header.size();
  std::memcpy(out.data(), &size, 8);
  return out + header + data;
}

uint64_t HeaderLength(const std::string& image) {
  uint64_t n = 0;
  std::memcpy(&n, image.data(), 8);
  return n;
}

// Applies one random mutation to `bytes`.
void Mutate(std::string& bytes, uint64_t header_len, std::mt19937_64& rng) {
  static constexpr char kJsonChars[] = "{}[]\",:0123456789-.eE tfn\\";
  auto uniform = [&rng](uint64_t lo, uint64_t hi) {  // inclusive
    return std::uniform_int_distribution<uint64_t>(lo, hi)(rng);
  };
  const uint64_t kind = uniform(0, 9);
  if (kind == 0) {  // truncate anywhere
    bytes.resize(uniform(0, bytes.size() - 1));
    return;
  }
  if (kind == 1) {  // nudge the header length so the header/data boundary moves
    const int64_t delta = static_cast<int64_t>(uniform(0, 32)) - 16;
    const uint64_t n = header_len + static_cast<uint64_t>(delta);
    std::memcpy(bytes.data(), &n, 8);
    return;
  }
  if (kind == 4) {  // move one tensor's [begin, end] by an even amount: overlaps, gaps, range
    static constexpr std::string_view kKey = "\"data_offsets\":[";
    std::vector<size_t> sites;
    for (size_t at = bytes.find(kKey, 8); at != std::string::npos && at < 8 + header_len;
         at = bytes.find(kKey, at + 1)) {
      sites.push_back(at + kKey.size());
    }
    if (sites.empty()) return;
    const size_t at = sites[uniform(0, sites.size() - 1)];
    const size_t close = bytes.find(']', at);
    unsigned long long begin = 0, end = 0;  // NOLINT(runtime/int): sscanf's type
    if (close == std::string::npos ||
        std::sscanf(bytes.c_str() + at, "%llu,%llu", &begin, &end) != 2) {
      return;
    }
    // Both ends move together (the size still matches the shape); begin stays >= 0.
    const int64_t delta =
        std::max(2 * (static_cast<int64_t>(uniform(0, 64)) - 32), -static_cast<int64_t>(begin));
    const std::string replacement =
        absl::StrCat(static_cast<int64_t>(begin) + delta, ",", static_cast<int64_t>(end) + delta);
    bytes.replace(at, close - at, replacement);
    const uint64_t n = header_len + replacement.size() - (close - at);
    std::memcpy(bytes.data(), &n, 8);
    return;
  }
  if (kind == 3) {  // swap a digit of the header for another: valid JSON, different numbers
    for (int attempt = 0; attempt < 64; ++attempt) {
      const uint64_t pos = 8 + uniform(0, header_len - 1);
      if (bytes[pos] >= '0' && bytes[pos] <= '9') {
        bytes[pos] = static_cast<char>('0' + uniform(0, 9));
        return;
      }
    }
    return;
  }
  const uint64_t flips = uniform(1, 8);
  for (uint64_t f = 0; f < flips; ++f) {
    const uint64_t where = uniform(0, 19);
    uint64_t pos;
    if (where < 1) {
      pos = uniform(0, 7);  // the length field
    } else if (where < 15) {
      pos = 8 + uniform(0, header_len - 1);  // the JSON header
    } else {
      pos = uniform(0, bytes.size() - 1);  // anywhere, mostly data
    }
    if (uniform(0, 1) == 0) {
      bytes[pos] = static_cast<char>(bytes[pos] ^ static_cast<char>(uniform(1, 255)));
    } else {
      bytes[pos] = kJsonChars[uniform(0, sizeof(kJsonChars) - 2)];
    }
  }
  if (kind == 2) bytes.resize(uniform(0, bytes.size()));  // flips and a truncation
}

struct Counts {
  int rejected = 0;                    // SafetensorsFile::FromBytes failed
  int file_accepted = 0;               // parsed, but Model::FromTensors failed
  int model_accepted = 0;              // a whole model came out
  std::map<std::string, int> reasons;  // reader rejections by kind, to show what was reached
};

// A coarse label for a reader error, for the coverage summary.
std::string Reason(std::string_view message) {
  static constexpr const char* kReasons[] = {"truncated",
                                             "extends past the end",
                                             "exceeds the limit",
                                             "not valid JSON",
                                             "JSON object",
                                             "__metadata__",
                                             "dtype",
                                             "rank",
                                             "shape is too",
                                             "\"shape\"",
                                             "data_offsets\" must",
                                             "begin > end",
                                             "needs",
                                             "out of range",
                                             "overlaps",
                                             "gap",
                                             "trailing",
                                             "missing"};
  for (const char* reason : kReasons) {
    if (message.find(reason) != std::string_view::npos) return reason;
  }
  return "other";
}

// Runs one image through the loader; returns whether a model was built.
bool LoadImage(const std::string& bytes, const ModelConfig& config, Counts& counts) {
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::FromBytes(
      absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
  if (!file.ok()) {
    EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_FALSE(file.status().message().empty());
    ++counts.rejected;
    ++counts.reasons[Reason(
        std::string_view(file.status().message().data(), file.status().message().size()))];
    return false;
  }
  std::map<std::string, Tensor> tensors;
  for (const TensorInfo& info : file->tensors()) {
    EXPECT_EQ(file->Find(info.name), &info);
    Tensor t = file->ReadFloat32(info);
    EXPECT_EQ(t.num_elements(), NumElements(info.shape));
    tensors.emplace(info.name, std::move(t));
  }
  absl::StatusOr<std::shared_ptr<const Model>> model =
      Model::FromTensors("fuzz", config, std::move(tensors));
  if (!model.ok()) {
    EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
    ++counts.file_accepted;
    return false;
  }
  EXPECT_GT((*model)->num_parameters(), 0);
  ++counts.model_accepted;
  return true;
}

void FuzzImage(const std::string& image, const char* label, uint64_t seed_base) {
  const ModelConfig config = FuzzConfig();
  Counts baseline;
  ASSERT_TRUE(LoadImage(image, config, baseline)) << label << ": the unmodified image must load";

  const uint64_t header_len = HeaderLength(image);
  Counts counts;
  for (int i = 0; i < kIterations; ++i) {
    std::mt19937_64 rng(seed_base + static_cast<uint64_t>(i));
    std::string bytes = image;
    Mutate(bytes, header_len, rng);
    LoadImage(bytes, config, counts);
    if (::testing::Test::HasFailure()) {
      ADD_FAILURE() << label << ": iteration " << i << " (seed " << seed_base + i << ")";
      return;
    }
  }
  std::printf(
      "[ fuzz     ] %s: %d mutants: %d rejected by the reader, %d rejected by the model, "
      "%d accepted\n",
      label, kIterations, counts.rejected, counts.file_accepted, counts.model_accepted);
  for (const auto& [reason, n] : counts.reasons) {
    std::printf("[ fuzz     ]   %5d  %s\n", n, reason.c_str());
  }
  EXPECT_GT(counts.rejected, kIterations / 4) << label;
  EXPECT_GT(counts.model_accepted, 0) << label;  // flips inside the data keep a valid model
}

TEST(LoaderFuzzTest, MutatedF32ModelNeverCrashes) {
  FuzzImage(F32Image(RandomTensors(FuzzConfig(), /*seed=*/123)), "F32 image", 1'000'000);
}

TEST(LoaderFuzzTest, MutatedHalfPrecisionModelNeverCrashes) {
  FuzzImage(HalfImage(FuzzConfig()), "F16/BF16 image", 2'000'000);
}

TEST(LoaderFuzzTest, MutatedConfigJsonNeverCrashes) {
  const std::string text = ModelConfigToJson(FuzzConfig());
  ASSERT_TRUE(ParseModelConfig(text).ok());
  static constexpr char kJsonChars[] = "{}[]\",:0123456789-.eE tfn\\";
  int rejected = 0;
  int accepted = 0;
  for (int i = 0; i < kIterations; ++i) {
    std::mt19937_64 rng(3'000'000 + static_cast<uint64_t>(i));
    auto uniform = [&rng](uint64_t lo, uint64_t hi) {
      return std::uniform_int_distribution<uint64_t>(lo, hi)(rng);
    };
    std::string mutated = text;
    const uint64_t flips = uniform(1, 4);
    for (uint64_t f = 0; f < flips; ++f) {
      const uint64_t pos = uniform(0, mutated.size() - 1);
      if (uniform(0, 1) == 0) {
        mutated[pos] = static_cast<char>(mutated[pos] ^ static_cast<char>(uniform(1, 255)));
      } else {
        mutated[pos] = kJsonChars[uniform(0, sizeof(kJsonChars) - 2)];
      }
    }
    if (uniform(0, 9) == 0) mutated.resize(uniform(0, mutated.size()));
    absl::StatusOr<ModelConfig> config = ParseModelConfig(mutated);
    if (config.ok()) {
      ++accepted;
      // An accepted config satisfies the documented invariants.
      EXPECT_TRUE(ValidateModelConfig(*config).ok());
      EXPECT_FALSE(ExpectedTensors(*config).empty());
    } else {
      ++rejected;
      EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
    }
  }
  std::printf("[ fuzz     ] config.json: %d mutants: %d rejected, %d accepted\n", kIterations,
              rejected, accepted);
  EXPECT_GT(rejected, kIterations / 4);
}

}  // namespace
}  // namespace aaren
