// SPDX-License-Identifier: Apache-2.0
#include "core/safetensors.h"

#include "core/json_diagnostics.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/status_macros.h"
#include "nlohmann/json.hpp"

namespace aaren {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; this reader copies it as-is");

namespace {

using Json = nlohmann::json;

constexpr size_t kMaxRank = 8;

absl::Status Invalid(absl::string_view message) { return absl::InvalidArgumentError(message); }

absl::Status TensorError(absl::string_view name, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': ", message));
}

size_t ElementSize(DType dtype) { return dtype == DType::kF32 ? 4 : 2; }

absl::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kBF16:
      return "BF16";
  }
  return "?";
}

// Dtypes of the safetensors spec that this reader knows but does not load.
bool IsKnownUnsupportedDType(std::string_view name) {
  static constexpr std::string_view kKnown[] = {
      "BOOL", "U8",      "I8",      "I16",     "U16", "I32",     "U32",     "I64", "U64",
      "F64",  "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4",  "F6_E2M3", "F6_E3M2", "C64"};
  return std::find(std::begin(kKnown), std::end(kKnown), name) != std::end(kKnown);
}

// Reads a non-negative JSON integer into a uint64; false if `value` is anything else.
bool AsUnsigned(const Json& value, uint64_t* out) {
  if (value.is_number_unsigned()) {
    *out = value.get<uint64_t>();
    return true;
  }
  if (value.is_number_integer() && value.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(value.get<int64_t>());
    return true;
  }
  return false;
}

std::string OffsetsToString(uint64_t begin, uint64_t end) {
  return absl::StrCat("[", begin, ", ", end, "]");
}

absl::StatusOr<TensorInfo> ParseEntry(const std::string& name, const Json& entry,
                                      uint64_t data_size) {
  if (!entry.is_object()) return TensorError(name, "entry must be a JSON object");
  TensorInfo info;
  info.name = name;

  auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end()) return TensorError(name, "missing \"dtype\"");
  if (!dtype_it->is_string()) return TensorError(name, "\"dtype\" must be a string");
  const std::string& dtype = dtype_it->get_ref<const std::string&>();
  if (dtype == "F32") {
    info.dtype = DType::kF32;
  } else if (dtype == "F16") {
    info.dtype = DType::kF16;
  } else if (dtype == "BF16") {
    info.dtype = DType::kBF16;
  } else if (IsKnownUnsupportedDType(dtype)) {
    return TensorError(name,
                       absl::StrCat("dtype ", dtype, " not supported (expected F32, F16 or BF16)"));
  } else {
    return TensorError(name, absl::StrCat("unknown dtype \"", dtype, "\""));
  }

  auto shape_it = entry.find("shape");
  if (shape_it == entry.end()) return TensorError(name, "missing \"shape\"");
  if (!shape_it->is_array()) return TensorError(name, "\"shape\" must be an array");
  if (shape_it->size() > kMaxRank) {
    return TensorError(
        name, absl::StrCat("rank ", shape_it->size(), " exceeds the maximum of ", kMaxRank));
  }
  // Every product below stays <= int64 max (checked), so NumElements() cannot overflow later.
  uint64_t numel = 1;
  bool too_large = false;
  for (const Json& dim : *shape_it) {
    uint64_t d = 0;
    if (!AsUnsigned(dim, &d)) {
      return TensorError(name, "\"shape\" must contain only non-negative integers");
    }
    if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return TensorError(name, absl::StrCat("shape dimension ", d, " is too large"));
    }
    info.shape.push_back(static_cast<int64_t>(d));
    if (!too_large && __builtin_mul_overflow(numel, d, &numel)) too_large = true;
  }
  uint64_t num_bytes = 0;
  if (!too_large && (numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
                     __builtin_mul_overflow(numel, ElementSize(info.dtype), &num_bytes))) {
    too_large = true;
  }
  // An empty dimension makes the tensor empty whatever the other dimensions are.
  if (too_large && std::find(info.shape.begin(), info.shape.end(), 0) != info.shape.end()) {
    too_large = false;
    numel = 0;
    num_bytes = 0;
  }
  if (too_large) {
    return TensorError(name, absl::StrCat("shape is too large (dimension or element count "
                                          "overflows 64 bits)"));
  }

  auto offsets_it = entry.find("data_offsets");
  if (offsets_it == entry.end()) return TensorError(name, "missing \"data_offsets\"");
  if (!offsets_it->is_array() || offsets_it->size() != 2 ||
      !AsUnsigned((*offsets_it)[0], &info.begin) || !AsUnsigned((*offsets_it)[1], &info.end)) {
    return TensorError(name, "\"data_offsets\" must be [begin, end] of non-negative integers");
  }
  if (info.begin > info.end) {
    return TensorError(name, absl::StrCat("data_offsets ", OffsetsToString(info.begin, info.end),
                                          " has begin > end"));
  }
  if (info.end - info.begin != num_bytes) {
    return TensorError(name, absl::StrCat("shape ", ShapeToString(info.shape), " of ",
                                          DTypeName(info.dtype), " needs ", num_bytes,
                                          " bytes but data_offsets span ", info.end - info.begin));
  }
  if (info.end > data_size) {
    return TensorError(name, absl::StrCat("data_offsets ", OffsetsToString(info.begin, info.end),
                                          " out of range (data buffer is ", data_size, " bytes)"));
  }
  return info;
}

// IEEE 754 binary16 -> binary32, exact for every input (subnormals, infinities, NaN payloads).
float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // inf or NaN
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);  // rebias 15 -> 127
  } else if (mantissa == 0) {
    bits = sign;  // signed zero
  } else {
    // Subnormal: value = mantissa * 2^-24. Normalise so the leading 1 sits at bit 10.
    uint32_t e = 113;  // 127 - 14
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --e;
    }
    bits = sign | (e << 23) | ((mantissa & 0x3ffu) << 13);
  }
  return std::bit_cast<float>(bits);
}

float BFloat16ToFloat(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

}  // namespace

// Owns the file bytes: either a read-only private mapping or a heap copy.
struct SafetensorsFile::Storage {
  const uint8_t* data = nullptr;
  size_t size = 0;
  size_t data_offset = 0;   // start of the data buffer: 8 + header length
  void* mapping = nullptr;  // non-null when mmapped
  size_t mapping_size = 0;
  std::vector<uint8_t> owned;

  Storage() = default;
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage() {
    if (mapping != nullptr) munmap(mapping, mapping_size);
  }
};

SafetensorsFile::SafetensorsFile(std::unique_ptr<Storage> storage, std::vector<TensorInfo> tensors,
                                 std::map<std::string, std::string> metadata)
    : storage_(std::move(storage)), tensors_(std::move(tensors)), metadata_(std::move(metadata)) {}

SafetensorsFile::SafetensorsFile(SafetensorsFile&&) noexcept = default;
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&&) noexcept = default;
SafetensorsFile::~SafetensorsFile() = default;

absl::StatusOr<SafetensorsFile> SafetensorsFile::Open(const std::filesystem::path& path) {
  auto prefixed = [&path](absl::StatusCode code, absl::string_view message) {
    return absl::Status(code, absl::StrCat(path.string(), ": ", message));
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int error = errno;
    return prefixed(error == ENOENT || error == ENOTDIR ? absl::StatusCode::kNotFound
                                                        : absl::StatusCode::kInvalidArgument,
                    absl::StrCat("cannot open: ", std::strerror(error)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int error = errno;
    ::close(fd);
    return prefixed(absl::StatusCode::kInvalidArgument,
                    absl::StrCat("cannot stat: ", std::strerror(error)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return prefixed(absl::StatusCode::kInvalidArgument, "not a regular file");
  }
  auto storage = std::make_unique<Storage>();
  storage->size = static_cast<size_t>(st.st_size);
  if (storage->size > 0) {
    void* mapping = ::mmap(nullptr, storage->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (mapping == MAP_FAILED) {
      const int error = errno;
      ::close(fd);
      return prefixed(absl::StatusCode::kInvalidArgument,
                      absl::StrCat("mmap failed: ", std::strerror(error)));
    }
    storage->mapping = mapping;
    storage->mapping_size = storage->size;
    storage->data = static_cast<const uint8_t*>(mapping);
  }
  ::close(fd);  // the mapping stays valid after close
  absl::StatusOr<SafetensorsFile> file = Parse(std::move(storage));
  if (!file.ok()) return prefixed(file.status().code(), file.status().message());
  return file;
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::FromBytes(absl::Span<const uint8_t> bytes) {
  auto storage = std::make_unique<Storage>();
  storage->owned.assign(bytes.begin(), bytes.end());
  storage->data = storage->owned.data();
  storage->size = storage->owned.size();
  return Parse(std::move(storage));
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::Parse(std::unique_ptr<Storage> storage) {
  const uint64_t file_size = storage->size;
  if (file_size < 8) {
    return Invalid(absl::StrCat("truncated: file is ", file_size,
                                " bytes, shorter than the 8-byte header length"));
  }
  uint64_t header_size = 0;
  std::memcpy(&header_size, storage->data, 8);  // little-endian (static_assert above)
  if (header_size > file_size - 8) {
    return Invalid(absl::StrCat("header length ", header_size,
                                " extends past the end of the file (size ", file_size, ")"));
  }
  if (header_size > kMaxSafetensorsHeaderBytes) {
    return Invalid(absl::StrCat("header length ", header_size, " exceeds the limit of ",
                                kMaxSafetensorsHeaderBytes, " bytes"));
  }
  const char* header_begin = reinterpret_cast<const char*>(storage->data + 8);
  const char* header_end = header_begin + header_size;
  const uint64_t data_size = file_size - 8 - header_size;
  storage->data_offset = static_cast<size_t>(8 + header_size);

  const Json header = Json::parse(header_begin, header_end, /*cb=*/nullptr,
                                  /*allow_exceptions=*/false);
  if (header.is_discarded()) {
    return Invalid(absl::StrCat(
        "header is not valid JSON: ",
        DescribeJsonSyntaxError(absl::string_view(header_begin, header_end - header_begin))));
  }
  if (!header.is_object()) {
    return Invalid(absl::StrCat("header must be a JSON object, got ", header.type_name()));
  }

  std::vector<TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return Invalid("__metadata__ must be an object of string values");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) {
          return Invalid(absl::StrCat("__metadata__ value for '", key, "' must be a string, got ",
                                      value.type_name()));
        }
        metadata.emplace(key, value.get<std::string>());
      }
      continue;
    }
    ASSIGN_OR_RETURN(TensorInfo info, ParseEntry(name, entry, data_size));
    tensors.push_back(std::move(info));
  }

  std::sort(tensors.begin(), tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.name < b.name;
  });
  uint64_t covered = 0;  // end of the bytes covered so far
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& info : tensors) {
    if (info.begin < covered) {
      return Invalid(absl::StrCat("tensor '", info.name, "' overlaps tensor '", previous->name,
                                  "' (data_offsets ", OffsetsToString(info.begin, info.end),
                                  " and ", OffsetsToString(previous->begin, previous->end), ")"));
    }
    if (info.begin > covered) {
      return Invalid(absl::StrCat("gap in the data buffer: bytes [", covered, ", ", info.begin,
                                  ") before tensor '", info.name, "' belong to no tensor"));
    }
    covered = info.end;
    previous = &info;
  }
  if (covered != data_size) {
    return Invalid(absl::StrCat("trailing bytes: the data buffer is ", data_size,
                                " bytes but the tensors cover only the first ", covered));
  }
  return SafetensorsFile(std::move(storage), std::move(tensors), std::move(metadata));
}

const TensorInfo* SafetensorsFile::Find(const std::string& name) const {
  for (const TensorInfo& info : tensors_) {
    if (info.name == name) return &info;
  }
  return nullptr;
}

Tensor SafetensorsFile::ReadFloat32(const TensorInfo& info) const {
  Tensor tensor;
  tensor.shape = info.shape;
  const size_t numel = static_cast<size_t>(NumElements(info.shape));
  tensor.data.resize(numel);
  if (numel == 0) return tensor;
  const uint8_t* src = storage_->data + storage_->data_offset + info.begin;
  switch (info.dtype) {
    case DType::kF32:
      std::memcpy(tensor.data.data(), src, numel * sizeof(float));
      break;
    case DType::kF16:
    case DType::kBF16: {
      const bool half = info.dtype == DType::kF16;
      for (size_t i = 0; i < numel; ++i) {
        uint16_t bits;
        std::memcpy(&bits, src + 2 * i, 2);  // the data may be unaligned
        tensor.data[i] = half ? HalfToFloat(bits) : BFloat16ToFloat(bits);
      }
      break;
    }
  }
  return tensor;
}

std::string SerializeSafetensors(const std::vector<NamedTensor>& tensors,
                                 const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const NamedTensor& named : tensors) {
    const uint64_t bytes = named.tensor->data.size() * sizeof(float);
    header[named.name] = {{"dtype", "F32"},
                          {"shape", named.tensor->shape},
                          {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string header_text =
      header.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  header_text.append((8 - header_text.size() % 8) % 8, ' ');

  std::string out;
  out.reserve(8 + header_text.size() + offset);
  const uint64_t header_size = header_text.size();
  out.append(reinterpret_cast<const char*>(&header_size), 8);  // little-endian host
  out += header_text;
  for (const NamedTensor& named : tensors) {
    out.append(reinterpret_cast<const char*>(named.tensor->data.data()),
               named.tensor->data.size() * sizeof(float));
  }
  return out;
}

absl::Status WriteSafetensors(const std::filesystem::path& path,
                              const std::vector<NamedTensor>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  const std::string bytes = SerializeSafetensors(tensors, metadata);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) {
    return absl::ErrnoToStatus(errno, absl::StrCat(path.string(), ": cannot open for writing"));
  }
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) return absl::InternalError(absl::StrCat(path.string(), ": write failed"));
  return absl::OkStatus();
}

}  // namespace aaren
