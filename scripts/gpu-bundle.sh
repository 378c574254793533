#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the test and benchmark binaries for a machine with a GPU (sm_90, static CUDA runtime,
# portable x86-64-v3 CPU code) into $BUILD_DIR (default build-gpu/), then copies them with every
# non-system shared library they load into gpu-bundle/ (git-ignored), small enough to travel to
# the device machine (carry gpu-bundle.tar.gz). There: `bash scripts/gpu-run.sh tests|bench|all` (it sets LD_LIBRARY_PATH
# to gpu-bundle/lib plus that machine's CUDA libraries: cuBLAS comes from its CUDA install, ~600 MB,
# too big to carry; libcuda from its driver).
# Usage: bash scripts/gpu-bundle.sh [TARGET ...]   (default: every test and benchmark binary)
set -euo pipefail
cd "$(dirname "$0")/.."
export BUILD_DIR="${BUILD_DIR:-build-gpu}"
export CMAKE_ARGS="-DAAREN_WITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DAAREN_MARCH=x86-64-v3 ${CMAKE_ARGS:-}"
bash scripts/build.sh "$@"
bundle=gpu-bundle
rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/lib"
find "$BUILD_DIR/tests" "$BUILD_DIR/tests/cuda" "$BUILD_DIR/tests/server" "$BUILD_DIR/bench" \
  "$BUILD_DIR/tools" "$BUILD_DIR/server" "$BUILD_DIR/client" -maxdepth 1 -type f -perm -u+x \
  -exec cp {} "$bundle/bin/" \; 2> /dev/null || true
# Everything ldd resolves except the C library family and the driver, which the target has.
for bin in "$bundle"/bin/*; do
  ldd "$bin" | awk '/=> \//{print $3}'
done | sort -u | grep -v -E '/(libc|libm|libdl|libpthread|librt|ld-linux[^/]*|libcuda|libcublas|libcublasLt)\.so' \
  | xargs -r -I{} cp -L {} "$bundle/lib/"
# The carry limit is 64 MiB and the libraries alone are ~60 MB: travel as one gzip archive
# (~30 MB), which scripts/gpu-run.sh unpacks. Carry gpu-bundle.tar.gz.
tar -czf gpu-bundle.tar.gz "$bundle"
du -sh "$bundle" gpu-bundle.tar.gz
