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
# Repetitions, reported by their minimum (shared machines add noise, never remove time), and
# randomly interleaved across benchmarks so that a slow spell of the host hits all of them alike.
interleave=--benchmark_enable_random_interleaving=true
"$build/bench/step_bench" --benchmark_filter=AarenStep --benchmark_repetitions=10 $interleave \
  --benchmark_min_time=0.2 --benchmark_out="$out/step_aaren.json" --benchmark_out_format=json \
  > /dev/null
"$build/bench/step_bench" --benchmark_filter=KvCacheStep --benchmark_repetitions=3 \
  --benchmark_out="$out/step_kv.json" --benchmark_out_format=json > /dev/null
# The memory-bound scan/memcpy figures run in their own process, apart from the whole-model runs
# (gigabytes of activations), which otherwise perturb them.
"$build/bench/scan_bench" --benchmark_filter='Scan|Memcpy|Probe' --benchmark_repetitions=5 \
  $interleave --benchmark_out="$out/scan.json" --benchmark_out_format=json > /dev/null
"$build/bench/scan_bench" --benchmark_filter='ModelForward' --benchmark_repetitions=5 \
  $interleave --benchmark_out="$out/model.json" --benchmark_out_format=json > /dev/null
for t in 1 2; do
  OMP_NUM_THREADS=$t OPENBLAS_NUM_THREADS=$t /usr/bin/python3 bench/pytorch_forward.py --threads "$t" --chunk_sizes 128,256 \
    | tail -n 1 > "$out/pytorch_t$t.json"
done
"$build/bench/state_bytes_table" models/demo-lm models/demo-ts > "$out/state_bytes.md"
/usr/bin/python3 bench/summarize_cpu.py "$out"
