// SPDX-License-Identifier: Apache-2.0
// Authenticator: bearer tokens -> tenants (README, "Security"). The tokens file
// (--auth_tokens_file) has one `TENANT TOKEN` per line; `#` starts a comment, blank lines are
// skipped. A tenant may have several tokens (rotation); a token belongs to one tenant. Tenant names
// match [A-Za-z0-9._-]{1,64}; tokens are 16 to 4096 printable ASCII characters without spaces.
//
// Clients send gRPC metadata `authorization: Bearer TOKEN`. Tokens are never kept in memory in
// the clear: the table maps SHA-256(token) to its tenant, and a presented token is hashed and
// looked up, then its digest compared with CRYPTO_memcmp (constant time). The time a lookup takes
// depends only on the digest, which reveals nothing about a token it does not match.
//
// Thread-safety: Authenticate may run on any thread concurrently with Reload, which swaps the
// table atomically (calls in progress finish with the table they started with).
#ifndef AAREN_SERVER_AUTH_AUTHENTICATOR_H_
#define AAREN_SERVER_AUTH_AUTHENTICATOR_H_

#include <grpcpp/server_context.h>

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace aaren {

// The parsed tokens file.
class TokenTable {
 public:
  using Digest = std::array<uint8_t, 32>;

  // Parses a tokens file's text. INVALID_ARGUMENT naming `source` and the line for a malformed
  // line, an invalid tenant name, a token too short or too long, or a token listed twice.
  static absl::StatusOr<TokenTable> Parse(absl::string_view text, absl::string_view source);
  // Reads and parses `path` (NOT_FOUND naming it when it cannot be read).
  static absl::StatusOr<TokenTable> Load(const std::string& path);

  // The tenant whose token this is, or nullptr.
  const std::string* Find(absl::string_view token) const;
  size_t tokens() const { return tenant_of_.size(); }
  size_t tenants() const { return tenants_; }

 private:
  absl::flat_hash_map<Digest, std::string> tenant_of_;
  size_t tenants_ = 0;
};

// OK when `name` can be a tenant name; INVALID_ARGUMENT saying why otherwise.
absl::Status ValidateTenantName(absl::string_view name);

class Authenticator {
 public:
  // Loads `path` (the error names the file and line).
  static absl::StatusOr<std::unique_ptr<Authenticator>> Create(std::string path);

  // The caller's tenant from its `authorization: Bearer TOKEN` metadata. UNAUTHENTICATED when
  // the metadata is missing, malformed or the token unknown; the message never echoes a token.
  absl::StatusOr<std::string> Authenticate(const grpc::ServerContextBase& context) const;
  // The same for a metadata value (for the REST transport and tests).
  absl::StatusOr<std::string> AuthenticateHeader(absl::string_view authorization) const;

  // Re-reads the file (SIGHUP). On error the current table stays in force and the error is
  // returned. Returns the number of tokens loaded.
  absl::StatusOr<size_t> Reload();

  const std::string& path() const { return path_; }

 private:
  explicit Authenticator(std::string path) : path_(std::move(path)) {}
  std::shared_ptr<const TokenTable> table() const;

  const std::string path_;
  mutable std::mutex mu_;
  std::shared_ptr<const TokenTable> table_;
};

}  // namespace aaren

#endif  // AAREN_SERVER_AUTH_AUTHENTICATOR_H_
