#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The KServe v2 / Triton protocol suite (tests/kserve_v2) under CTest: makes (once) the
# tritonclient virtualenv with scripts/tritonclient-venv.sh (tritonclient[grpc,http] 2.51.0 and
# its perf_analyzer, libcudart from nvidia-cuda-runtime-cu12, numpy<2, pytest), then runs pytest
# with the virtualenv's interpreter. The float64 oracle runs in Debian's interpreter (torch).
#
#   tests/kserve_v2/run.sh [VENV_DIR] [pytest args...]   # VENV_DIR: default build/venv-tritonclient
#
# Environment (set by tests/kserve_v2/CMakeLists.txt): AAREN_SERVER (the binary), AAREN_SOURCE_DIR
# (the checkout), AAREN_PYTHONPATH (the generated stubs and client/python); optional
# AAREN_ORACLE_PYTHON (interpreter with torch for the oracle, default /usr/bin/python3).
set -euo pipefail

src="${AAREN_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}"
venv_dir="${1:-$src/build/venv-tritonclient}"
shift || true

# Two lines: the virtualenv, and the directory with libcudart.so.12 that perf_analyzer needs.
mapfile -t lines < <(bash "$src/scripts/tritonclient-venv.sh" "$venv_dir")
if [[ ${#lines[@]} -lt 2 || ! -x "${lines[0]}/bin/python" ]]; then
  echo "run.sh: scripts/tritonclient-venv.sh printed no virtualenv (got: ${lines[*]:-nothing})" >&2
  exit 2
fi
export AAREN_TRITON_VENV="${lines[0]}"
export AAREN_PERF_ANALYZER_LD_LIBRARY_PATH="${lines[1]}"
export AAREN_SOURCE_DIR="$src"
export PYTHONPATH="${AAREN_PYTHONPATH:-$src/build/python:$src/client/python}${PYTHONPATH:+:$PYTHONPATH}"
exec "$AAREN_TRITON_VENV/bin/python" -m pytest -q -p no:cacheprovider "$src/tests/kserve_v2" "$@"
