// SPDX-License-Identifier: Apache-2.0
// Vocab: the text vocabulary of a character-level token model (models/demo-lm/vocab.json:
// {"chars": ["\n", " ", "!", ...]}, token id i is chars[i]). Entries are UTF-8 strings, usually
// one character each; text is encoded by longest match at each position.
#ifndef AAREN_CLIENT_CLI_VOCAB_H_
#define AAREN_CLIENT_CLI_VOCAB_H_

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace aaren::cli {

class Vocab {
 public:
  // Reads vocab.json. NOT_FOUND if missing; INVALID_ARGUMENT naming the problem if it is not
  // {"chars": [non-empty, distinct strings]}.
  static absl::StatusOr<Vocab> Load(const std::filesystem::path& path);
  // From the entries directly (same checks as Load).
  static absl::StatusOr<Vocab> FromEntries(std::vector<std::string> entries);

  size_t size() const { return entries_.size(); }

  // Token ids of `text`; INVALID_ARGUMENT naming the first character with no entry and its byte
  // offset.
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text) const;
  // The entry of `token`, or "<token>" for an id outside the vocabulary.
  std::string Decode(int32_t token) const;
  // Decode, quoted and escaped for one-line display: 'e', ' ', '\n'.
  std::string Display(int32_t token) const;

 private:
  explicit Vocab(std::vector<std::string> entries);

  std::vector<std::string> entries_;
  absl::flat_hash_map<std::string, int32_t> ids_;
  size_t longest_ = 0;  // bytes of the longest entry
};

}  // namespace aaren::cli

#endif  // AAREN_CLIENT_CLI_VOCAB_H_
