#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Configures and builds into $BUILD_DIR (default: build/). Extra arguments name targets to build
# (default: everything). Environment: BUILD_DIR, JOBS (default 2), CMAKE_ARGS (extra -D options,
# e.g. "-DAAREN_WITH_CUDA=OFF").
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${BUILD_DIR:-build}"
# shellcheck disable=SC2086
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release ${CMAKE_ARGS:-} > "$build_dir.configure.log" 2>&1 \
  || { cat "$build_dir.configure.log"; exit 1; }
grep -E "^-- Aaren" "$build_dir.configure.log" || true
targets=()
for t in "$@"; do targets+=(--target "$t"); done
cmake --build "$build_dir" -j "${JOBS:-2}" "${targets[@]}"
