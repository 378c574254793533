// SPDX-License-Identifier: Apache-2.0
// Tests for the safetensors reader and writer (SafetensorsFile, SerializeSafetensors,
// WriteSafetensors). Each malformed input has its own test that checks the status code and
// the message a user would see.
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/types/span.h"
#include "core/safetensors.h"
#include "core/tensor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/loader_test_support.h"

namespace aaren {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsNan;
using ::testing::StartsWith;

absl::Span<const uint8_t> Bytes(const std::string& s) {
  return absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

std::string Header(std::initializer_list<std::string> entries) {
  return absl::StrCat("{", absl::StrJoin(entries, ", "), "}");
}

absl::Status ParseStatus(const std::string& bytes) {
  return SafetensorsFile::FromBytes(Bytes(bytes)).status();
}

std::string FloatBytes(std::initializer_list<float> values) {
  std::string out(values.size() * 4, '\0');
  std::memcpy(out.data(), std::data(values), out.size());
  return out;
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

}  // namespace
}  // namespace aaren
