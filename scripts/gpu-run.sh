#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs the GPU test suite and/or the CUDA benchmarks on a machine with a GPU, from the binaries
# scripts/gpu-bundle.sh put in gpu-bundle.tar.gz (carried there; the machine needs only a CUDA driver,
# the CUDA toolkit's libraries and, for the PyTorch baseline, python3 with torch).
# Usage: bash scripts/gpu-run.sh [tests|bench|sanitize|all]   (default all). Logs go to $OUT
# (default gpu-out/): gpu-tests.log, gpu-bench.log (bench/RESULTS.md's CUDA tables come from it),
# gpu-sanitize.log. STEP_TIMEOUT / BENCH_TIMEOUT bound each step / the benchmarks (seconds).
set -uo pipefail
cd "$(dirname "$0")/.."
mode="${1:-all}"
bundle="$PWD/gpu-bundle"
[[ -d "$bundle" ]] || tar -xzf gpu-bundle.tar.gz  # what scripts/gpu-bundle.sh makes to carry
out="${OUT:-$PWD/gpu-out}"
mkdir -p "$out"
# cuBLAS from the machine's CUDA install (any of the usual places, or torch's wheels).
cublas_dir=$(dirname "$( (ls /usr/local/cuda/lib64/libcublas.so.13* /usr/local/cuda*/lib64/libcublas.so.13* \
  /usr/local/cuda*/targets/x86_64-linux/lib/libcublas.so.13* /usr/lib/x86_64-linux-gnu/libcublas.so.13* \
  2> /dev/null; find / -xdev -name 'libcublas.so.13*' 2> /dev/null) | head -1)" 2> /dev/null)
export LD_LIBRARY_PATH="$bundle/lib:${cublas_dir:-/usr/local/cuda/lib64}:${LD_LIBRARY_PATH:-}"
export PATH="$PATH:/usr/local/cuda/bin"
export AAREN_SOURCE_DIR="$PWD"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
echo "cuBLAS from: ${cublas_dir:-not found}"

status=0
# Each step is bounded (STEP_TIMEOUT seconds, default 240) so one hang cannot eat the lease; a step
# cut off reports rc=124.
run() {  # run NAME COMMAND...: logs, and remembers a failure
  echo "=== $1"
  shift
  local t0=$SECONDS
  timeout -k 5 "${STEP_TIMEOUT:-240}" "$@"
  local rc=$?
  echo "=== ($((SECONDS - t0)) s)"
  echo "=== rc=$rc"
  [[ $rc -eq 0 || $rc -eq 77 ]] || status=1
}

if ! "$bundle/bin/cuda_probe"; then
  echo "nothing run: this machine has no usable GPU"
  exit 77
fi
# Order for a short lease: the functional tests, then the benchmarks, then compute-sanitizer (the
# slowest part), each with its own log.
if [[ "$mode" == tests || "$mode" == all ]]; then
  {
    run cuda_device_test "$bundle/bin/cuda_device_test"
    run cuda_backend_test "$bundle/bin/cuda_backend_test"
    run cublas_library_test "$bundle/bin/cublas_library_test"
    for t in server_rpc_test server_invariant_test server_bad_input_test server_concurrency_test server_mca_test \
      server_lifecycle_test; do
      AAREN_SERVER="$bundle/bin/aaren-server" AAREN_TEST_SERVER_ARGS=--device=cuda \
        run "$t --device=cuda" "$bundle/bin/$t"
    done
  } 2>&1 | tee "$out/gpu-tests.log"
fi
if [[ "$mode" == bench || "$mode" == all ]]; then
  BUNDLE="$bundle" timeout -k 5 "${BENCH_TIMEOUT:-420}" bash bench/run_cuda_benchmarks.sh 2>&1 \
    | tee "$out/gpu-bench.log"
fi
if [[ "$mode" == sanitize || "$mode" == all ]]; then
  for tool in memcheck racecheck synccheck; do
    run "compute-sanitizer $tool" compute-sanitizer --tool "$tool" --error-exitcode 1 \
      "$bundle/bin/cuda_backend_test" '--gtest_filter=-*LongSpans*:*Concurrent*'
  done 2>&1 | tee "$out/gpu-sanitize.log"
fi
grep -E "^=== rc=[^07]" "$out"/gpu-*.log > /dev/null 2>&1 && status=1
exit $status
