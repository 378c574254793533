// SPDX-License-Identifier: Apache-2.0
#include "server/auth/authenticator.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <fstream>
#include <iterator>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace aaren {
namespace {

constexpr size_t kMaxTenantLength = 64;
constexpr size_t kMinTokenLength = 16;
constexpr size_t kMaxTokenLength = 4096;

TokenTable::Digest Sha256(absl::string_view data) {
  TokenTable::Digest out{};
  unsigned int n = 0;
  EVP_Digest(data.data(), data.size(), out.data(), &n, EVP_sha256(), nullptr);
  return out;
}

absl::Status CheckToken(absl::string_view token) {
  if (token.size() < kMinTokenLength || token.size() > kMaxTokenLength) {
    return absl::InvalidArgumentError(absl::StrCat("a token has ", kMinTokenLength, " to ",
                                                   kMaxTokenLength, " characters, this one ",
                                                   token.size()));
  }
  for (char c : token) {
    if (c < 0x21 || c > 0x7e) {
      return absl::InvalidArgumentError("a token is printable ASCII without spaces");
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateTenantName(absl::string_view name) {
  if (name.empty() || name.size() > kMaxTenantLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("a tenant name has 1 to ", kMaxTenantLength, " characters"));
  }
  for (char c : name) {
    if (!(absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) {
      return absl::InvalidArgumentError("a tenant name is made of [A-Za-z0-9._-]");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<TokenTable> TokenTable::Parse(absl::string_view text, absl::string_view source) {
  TokenTable table;
  absl::flat_hash_map<std::string, int> tenants;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    if (const size_t hash = line.find('#'); hash != absl::string_view::npos) {
      line = line.substr(0, hash);
    }
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t\r"), absl::SkipEmpty());
    if (fields.empty()) continue;
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat(source, ":", line_number, ": ", why));
    };
    if (fields.size() != 2) {
      return bad(absl::StrCat("expected `TENANT TOKEN`, got ", fields.size(), " fields"));
    }
    if (absl::Status st = ValidateTenantName(fields[0]); !st.ok()) return bad(st.message());
    if (absl::Status st = CheckToken(fields[1]); !st.ok()) return bad(st.message());
    auto [it, inserted] = table.tenant_of_.emplace(Sha256(fields[1]), std::string(fields[0]));
    if (!inserted) return bad("this token is listed twice (a token belongs to one tenant)");
    tenants.emplace(std::string(fields[0]), line_number);
  }
  table.tenants_ = tenants.size();
  return table;
}

absl::StatusOr<TokenTable> TokenTable::Load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("--auth_tokens_file: cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  return Parse(text.str(), path);
}

const std::string* TokenTable::Find(absl::string_view token) const {
  const Digest digest = Sha256(token);
  auto it = tenant_of_.find(digest);
  if (it == tenant_of_.end()) return nullptr;
  // The hash lookup matched on equality already; compare once more in constant time so that no
  // early-exit comparison of secrets is left anywhere on the path.
  if (CRYPTO_memcmp(it->first.data(), digest.data(), digest.size()) != 0) return nullptr;
  return &it->second;
}

absl::StatusOr<std::unique_ptr<Authenticator>> Authenticator::Create(std::string path) {
  auto auth = std::unique_ptr<Authenticator>(new Authenticator(std::move(path)));
  absl::StatusOr<TokenTable> table = TokenTable::Load(auth->path_);
  if (!table.ok()) return table.status();
  if (table->tokens() == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--auth_tokens_file: ", auth->path_, " has no tokens: no one could call"));
  }
  auth->table_ = std::make_shared<const TokenTable>(*std::move(table));
  return auth;
}

std::shared_ptr<const TokenTable> Authenticator::table() const {
  std::lock_guard<std::mutex> lock(mu_);
  return table_;
}

absl::StatusOr<size_t> Authenticator::Reload() {
  absl::StatusOr<TokenTable> table = TokenTable::Load(path_);
  if (!table.ok()) return table.status();
  const size_t n = table->tokens();
  if (n == 0) {
    // As at start-up: a file with no tokens would refuse every caller; keep the old tokens.
    return absl::InvalidArgumentError(
        absl::StrCat("--auth_tokens_file: ", path_, " has no tokens: no one could call"));
  }
  auto fresh = std::make_shared<const TokenTable>(*std::move(table));
  std::lock_guard<std::mutex> lock(mu_);
  table_ = std::move(fresh);
  return n;
}

absl::StatusOr<std::string> Authenticator::AuthenticateHeader(
    absl::string_view authorization) const {
  if (authorization.empty()) {
    return absl::UnauthenticatedError(
        "authorization: missing; send metadata `authorization: Bearer TOKEN`");
  }
  constexpr absl::string_view kScheme = "Bearer ";
  if (authorization.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(authorization.substr(0, kScheme.size()), kScheme)) {
    return absl::UnauthenticatedError(
        "authorization: not a bearer token; send `authorization: Bearer TOKEN`");
  }
  // The table stays alive while its entry is read: a reload may replace it meanwhile.
  const std::shared_ptr<const TokenTable> current = table();
  const std::string* tenant = current->Find(authorization.substr(kScheme.size()));
  if (tenant == nullptr) return absl::UnauthenticatedError("authorization: unknown bearer token");
  return *tenant;
}

absl::StatusOr<std::string> Authenticator::Authenticate(
    const grpc::ServerContextBase& context) const {
  const auto& metadata = context.client_metadata();
  auto range = metadata.equal_range("authorization");
  if (range.first == range.second) return AuthenticateHeader("");
  if (std::next(range.first) != range.second) {
    return absl::UnauthenticatedError("authorization: sent more than once");
  }
  return AuthenticateHeader(
      absl::string_view(range.first->second.data(), range.first->second.size()));
}

}  // namespace aaren
