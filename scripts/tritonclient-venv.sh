#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Makes (once) the virtualenv with the Triton/KServe v2 clients from PyPI: tritonclient 2.51.0
# (the gRPC and HTTP Python clients, and the real perf_analyzer binary, which the wheel installs
# into the virtualenv's bin/), pytest, and libcudart.so.12 from nvidia-cuda-runtime-cu12 (which
# perf_analyzer links against; no GPU is needed). Debian's libb64-0d comes from install-deps.sh.
#
#   bash scripts/tritonclient-venv.sh [DIR]    # DIR: default build/venv-tritonclient
#
# Prints two lines: the virtualenv's directory, and the LD_LIBRARY_PATH entry perf_analyzer
# needs. Idempotent: a virtualenv whose marker file is there is reused as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-${BUILD_DIR:-build}/venv-tritonclient}"
marker="$dir/.aaren-tritonclient-2.51.0"
if [ ! -f "$marker" ]; then
  rm -rf "$dir"
  /usr/bin/python3 -m venv "$dir" >&2
  "$dir/bin/pip" install -q --disable-pip-version-check \
    "tritonclient[grpc,http]==2.51.0" "nvidia-cuda-runtime-cu12==12.9.79" \
    "numpy<2" "pytest" >&2
  touch "$marker"
fi
dir="$(cd "$dir" && pwd)"
cudart="$(ls -d "$dir"/lib/python3*/site-packages/nvidia/cuda_runtime/lib)"
echo "$dir"
echo "$cudart"
