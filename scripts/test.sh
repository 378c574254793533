#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The test command: installs dependencies, checks formatting, builds everything (including the
# benchmarks, so they keep compiling) and runs every test (C++ GoogleTest, the AddressSanitizer
# loader fuzz test, and the Python/pytest suites) through CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/check-format.sh
bash scripts/build.sh
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j "${JOBS:-2}" --timeout 1500
