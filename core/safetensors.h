// SPDX-License-Identifier: Apache-2.0
// Reader and writer for the safetensors format (https://huggingface.co/docs/safetensors):
//   [u64 little-endian N][N bytes of JSON header][data buffer]
// The header maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
// relative to the data buffer), plus an optional "__metadata__" object of string -> string.
//
// The reader never trusts the file: header length, JSON syntax and types, dtypes, shapes (and
// their byte size), and offsets (in range, non-overlapping, covering the buffer without gaps) are
// all validated before any tensor is read; every failure is an INVALID_ARGUMENT status naming the
// tensor and the problem. Files are memory-mapped read-only; F16 and BF16 are converted to F32.
#ifndef AAREN_CORE_SAFETENSORS_H_
#define AAREN_CORE_SAFETENSORS_H_

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/tensor.h"

namespace aaren {

enum class DType { kF32, kF16, kBF16 };

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data buffer, [begin, end)
  uint64_t end = 0;
};

// Header JSON larger than this is rejected (the reference implementation uses the same cap).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100u << 20;

// A validated safetensors file. Holds either a read-only mmap of the file or an owned copy of the
// bytes. Immutable after construction; const methods may be called from any thread.
class SafetensorsFile {
 public:
  // Memory-maps and validates `path`. NOT_FOUND if missing; INVALID_ARGUMENT if malformed.
  static absl::StatusOr<SafetensorsFile> Open(const std::filesystem::path& path);
  // Validates an in-memory image of a file (the bytes are copied). Used by tests and fuzzing.
  static absl::StatusOr<SafetensorsFile> FromBytes(absl::Span<const uint8_t> bytes);

  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;
  ~SafetensorsFile();

  // Tensors in header order of their data offsets.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // nullptr if absent.
  const TensorInfo* Find(const std::string& name) const;

  // Copies a tensor out as float32 (converting F16/BF16). `info` must come from tensors().
  Tensor ReadFloat32(const TensorInfo& info) const;

 private:
  struct Storage;
  SafetensorsFile(std::unique_ptr<Storage> storage, std::vector<TensorInfo> tensors,
                  std::map<std::string, std::string> metadata);
  static absl::StatusOr<SafetensorsFile> Parse(std::unique_ptr<Storage> storage);

  std::unique_ptr<Storage> storage_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

struct NamedTensor {
  std::string name;
  const Tensor* tensor;  // not owned; written as F32
};

// Serialises tensors as an F32 safetensors image (header padded to 8 bytes, offsets contiguous
// in the given order). Names must be unique.
std::string SerializeSafetensors(const std::vector<NamedTensor>& tensors,
                                 const std::map<std::string, std::string>& metadata = {});
// Writes SerializeSafetensors(...) to `path`.
absl::Status WriteSafetensors(const std::filesystem::path& path,
                              const std::vector<NamedTensor>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace aaren

#endif  // AAREN_CORE_SAFETENSORS_H_
