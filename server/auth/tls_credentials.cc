// SPDX-License-Identifier: Apache-2.0
#include "server/auth/tls_credentials.h"

#include <grpcpp/security/server_credentials.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace aaren {
namespace {

std::string OpenSslError() {
  const unsigned long e = ERR_get_error();  // NOLINT(runtime/int): OpenSSL's type
  if (e == 0) return "not PEM";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  ERR_clear_error();
  return buf;
}

// Checks the PEM texts with OpenSSL: a certificate, a private key, and that they belong together.
absl::Status CheckPair(const std::string& cert_pem, const std::string& key_pem,
                       const TlsFiles& files) {
  BIO* cert_bio = BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size()));
  X509* cert = PEM_read_bio_X509(cert_bio, nullptr, nullptr, nullptr);
  BIO_free(cert_bio);
  if (cert == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls_cert_file: ", files.cert_file, " holds no PEM certificate (", OpenSslError(), ")"));
  }
  BIO* key_bio = BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(key_bio, nullptr, nullptr, nullptr);
  BIO_free(key_bio);
  absl::Status st;
  if (key == nullptr) {
    st = absl::InvalidArgumentError(absl::StrCat("--tls_key_file: ", files.key_file,
                                                 " holds no unencrypted PEM private key (",
                                                 OpenSslError(), ")"));
  } else if (X509_check_private_key(cert, key) != 1) {
    ERR_clear_error();
    st = absl::InvalidArgumentError(absl::StrCat("--tls_key_file: ", files.key_file,
                                                 " is not the key of the certificate in ",
                                                 files.cert_file));
  }
  EVP_PKEY_free(key);
  X509_free(cert);
  return st;
}

absl::Status CheckCaBundle(const std::string& pem, const TlsFiles& files) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509* ca = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (ca == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("--tls_client_ca_file: ", files.client_ca_file,
                                                   " holds no PEM certificate (", OpenSslError(),
                                                   ")"));
  }
  X509_free(ca);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> ReadPemFile(const std::string& path, const char* flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(flag, ": cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& files) {
  if (!files.enabled()) {
    if (!files.client_ca_file.empty()) {
      return absl::InvalidArgumentError(
          "--tls_client_ca_file: mutual TLS needs --tls_cert_file and --tls_key_file too");
    }
    return grpc::InsecureServerCredentials();
  }
  if (files.cert_file.empty() || files.key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert_file and --tls_key_file: TLS needs both (the certificate and its key)");
  }
  absl::StatusOr<std::string> cert = ReadPemFile(files.cert_file, "--tls_cert_file");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPemFile(files.key_file, "--tls_key_file");
  if (!key.ok()) return key.status();
  if (absl::Status st = CheckPair(*cert, *key, files); !st.ok()) return st;
  grpc::SslServerCredentialsOptions options(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  options.pem_key_cert_pairs.push_back({*key, *cert});
  if (!files.client_ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadPemFile(files.client_ca_file, "--tls_client_ca_file");
    if (!ca.ok()) return ca.status();
    if (absl::Status st = CheckCaBundle(*ca, files); !st.ok()) return st;
    options.pem_root_certs = *ca;
    options.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(options);
}

}  // namespace aaren
