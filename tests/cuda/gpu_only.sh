#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs a command only when a CUDA GPU is visible (and, with --tool NAME, only when NAME is on
# PATH); otherwise prints why and exits 77, which CTest reports as skipped.
# Usage: gpu_only.sh PROBE [--tool NAME] COMMAND...
set -uo pipefail
probe="$1"
shift
export PATH="$PATH:/usr/local/cuda/bin"
if [[ "${1:-}" == "--tool" ]]; then
  if ! command -v "$2" > /dev/null; then
    echo "SKIPPED: $2 is not installed"
    exit 77
  fi
  shift 2
fi
"$probe" || exit 77
exec "$@"
