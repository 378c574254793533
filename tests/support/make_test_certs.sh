#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Makes a throwaway PKI for the TLS tests and benchmarks with openssl (P-256 keys, 1 day):
#   DIR/ca.pem              the test CA
#   DIR/server.pem, .key    the server's certificate (SAN DNS:localhost, IP:127.0.0.1) by the CA
#   DIR/client.pem, .key    a client certificate by the CA (mutual TLS)
#   DIR/rogue-ca.pem        another CA
#   DIR/rogue-client.pem, .key  a client certificate by the other CA (must be refused)
#
#   make_test_certs.sh DIR
set -euo pipefail
dir=${1:?usage: make_test_certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
ossl() { openssl "$@" 2>/dev/null; }
key() { ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
ca() {  # NAME
  key "$1.key"
  ossl req -x509 -new -key "$1.key" -out "$1.pem" -days 1 -subj "/CN=aaren test $1" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign"
}
leaf() {  # NAME CA EXTENSIONS
  key "$1.key"
  ossl req -new -key "$1.key" -out "$1.csr" -subj "/CN=aaren test $1"
  printf '%s\n' "$3" > "$1.ext"
  ossl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -out "$1.pem" \
    -days 1 -extfile "$1.ext"
  rm -f "$1.csr" "$1.ext"
}
ca ca
ca rogue-ca
leaf server ca "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
leaf client ca "extendedKeyUsage=clientAuth"
leaf rogue-client rogue-ca "extendedKeyUsage=clientAuth"
rm -f ./*.srl
