// SPDX-License-Identifier: Apache-2.0
#include "client/cli/vocab.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace aaren::cli {

absl::StatusOr<Vocab> Vocab::FromEntries(std::vector<std::string> entries) {
  if (entries.empty()) return absl::InvalidArgumentError("vocab: 'chars' is empty");
  absl::flat_hash_map<std::string, int32_t> seen;
  for (size_t i = 0; i < entries.size(); ++i) {
    if (entries[i].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("vocab: chars[", i, "] is empty"));
    }
    auto [it, inserted] = seen.emplace(entries[i], static_cast<int32_t>(i));
    if (!inserted) {
      return absl::InvalidArgumentError(absl::StrCat("vocab: chars[", i, "] repeats chars[",
                                                     it->second, "] ('",
                                                     absl::Utf8SafeCEscape(entries[i]), "')"));
    }
  }
  return Vocab(std::move(entries));
}

absl::StatusOr<Vocab> Vocab::Load(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path.string(), ": cannot open vocab file"));
  std::stringstream text;
  text << in.rdbuf();
  const nlohmann::json doc = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  const auto chars = doc.is_object() ? doc.find("chars") : doc.end();
  if (doc.is_discarded() || !doc.is_object() || chars == doc.end() || !chars->is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": expected a JSON object {\"chars\": [strings...]}"));
  }
  std::vector<std::string> entries;
  for (const nlohmann::json& entry : *chars) {
    if (!entry.is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path.string(), ": chars[", entries.size(), "] is not a string"));
    }
    entries.push_back(entry.get<std::string>());
  }
  absl::StatusOr<Vocab> vocab = FromEntries(std::move(entries));
  if (!vocab.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": ", vocab.status().message()));
  }
  return vocab;
}

Vocab::Vocab(std::vector<std::string> entries) : entries_(std::move(entries)) {
  for (size_t i = 0; i < entries_.size(); ++i) {
    ids_.emplace(entries_[i], static_cast<int32_t>(i));
    longest_ = std::max(longest_, entries_[i].size());
  }
}

absl::StatusOr<std::vector<int32_t>> Vocab::Encode(absl::string_view text) const {
  std::vector<int32_t> tokens;
  for (size_t pos = 0; pos < text.size();) {
    size_t len = std::min(longest_, text.size() - pos);
    for (; len > 0; --len) {
      auto it = ids_.find(text.substr(pos, len));
      if (it != ids_.end()) {
        tokens.push_back(it->second);
        break;
      }
    }
    if (len == 0) {
      // Name the whole UTF-8 character: its lead byte tells how many bytes follow.
      const unsigned char lead = static_cast<unsigned char>(text[pos]);
      const size_t char_len = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
      return absl::InvalidArgumentError(
          absl::StrCat("text: '", absl::Utf8SafeCEscape(text.substr(pos, char_len)), "' at byte ",
                       pos, " is not in the vocabulary"));
    }
    pos += len;
  }
  return tokens;
}

std::string Vocab::Decode(int32_t token) const {
  if (token < 0 || static_cast<size_t>(token) >= entries_.size())
    return absl::StrCat("<", token, ">");
  return entries_[token];
}

std::string Vocab::Display(int32_t token) const {
  return absl::StrCat("'", absl::Utf8SafeCEscape(Decode(token)), "'");
}

}  // namespace aaren::cli
