#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs what Aaren Serve needs to build, test and run, from Debian 12's archive only.
# Idempotent: apt-get runs only when a package is missing. Python code uses Debian's
# /usr/bin/python3 (torch, numpy, pytest from Debian), never the python3 first on PATH.
set -euo pipefail

PACKAGES=(
  build-essential cmake git pkg-config clang-format
  libabsl-dev nlohmann-json3-dev libeigen3-dev libopenblas-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc libspdlog-dev
  libcivetweb-dev prometheus python3-yaml libssl-dev openssl librocksdb-dev zlib1g-dev
  libhiredis-dev redis-server nginx-light libcpp-httplib-dev
  clang libclang-rt-14-dev libomp-14-dev
  python3-grpcio python3-protobuf
  python3 python3-numpy python3-torch python3-pytest python3-venv
  libb64-0d
  libdnnl-dev libxsmm-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "install-deps: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
