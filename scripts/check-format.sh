#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Fails if any tracked C++/CUDA file differs from .clang-format (Google base). Fix with
#   git ls-files '*.cc' '*.h' '*.cu' '*.cuh' | xargs clang-format -i
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files '*.cc' '*.h' '*.cu' '*.cuh')
clang-format --dry-run --Werror "${files[@]}"
echo "check-format: ${#files[@]} files formatted"
