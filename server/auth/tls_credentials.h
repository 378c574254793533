// SPDX-License-Identifier: Apache-2.0
// Server credentials from the TLS flags (README, "Security"): plaintext when no certificate is
// given; TLS with --tls_cert_file/--tls_key_file (PEM; the certificate file may hold the chain);
// mutual TLS when --tls_client_ca_file is set too (clients must present a certificate signed by
// one of those CAs, or the handshake fails). The files are read and checked once, at start-up:
// each error names its flag and file (unreadable, not PEM, key not matching the certificate).
#ifndef AAREN_SERVER_AUTH_TLS_CREDENTIALS_H_
#define AAREN_SERVER_AUTH_TLS_CREDENTIALS_H_

#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace aaren {

struct TlsFiles {
  std::string cert_file;       // --tls_cert_file
  std::string key_file;        // --tls_key_file
  std::string client_ca_file;  // --tls_client_ca_file
  bool enabled() const { return !cert_file.empty() || !key_file.empty(); }
};

// Insecure credentials when !files.enabled(); INVALID_ARGUMENT naming the flag when only one of
// cert and key is given, or a client CA without them.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& files);

// The contents of `path`, or NOT_FOUND naming `flag` and the path.
absl::StatusOr<std::string> ReadPemFile(const std::string& path, const char* flag);

}  // namespace aaren

#endif  // AAREN_SERVER_AUTH_TLS_CREDENTIALS_H_
