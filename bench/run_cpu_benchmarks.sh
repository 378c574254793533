#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs the CPU benchmarks and their baselines in one go and prints the tables of bench/RESULTS.md:
#   streaming step vs KV-cache step by history; scan vs sequential recurrence vs memcpy; whole-model
#   forward vs the PyTorch reference module (same shape, same threads, same run); state bytes.
# Usage: bash bench/run_cpu_benchmarks.sh [BUILD_DIR]   (after scripts/build.sh). Takes ~5 min.
# Run on an otherwise idle machine: the figures are wall-clock.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"
out="$build/bench-results"
mkdir -p "$out"
"$build/bench/step_bench" --benchmark_format=json --benchmark_out="$out/step.json" \
  --benchmark_out_format=json --benchmark_min_time=0.5 > /dev/null
"$build/bench/scan_bench" --benchmark_format=json --benchmark_out="$out/scan.json" \
  --benchmark_out_format=json --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
  > /dev/null
for t in 1 2; do
  OMP_NUM_THREADS=$t OPENBLAS_NUM_THREADS=$t /usr/bin/python3 bench/pytorch_forward.py --threads "$t" \
    | tail -n 1 > "$out/pytorch_t$t.json"
done
"$build/bench/state_bytes_table" models/demo-lm models/demo-ts > "$out/state_bytes.md"
/usr/bin/python3 bench/summarize_cpu.py "$out"
