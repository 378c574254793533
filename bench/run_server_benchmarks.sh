#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Server benchmarks (the tables of bench/RESULTS.md, "gRPC server"): starts aaren-server on the
# demo models with the echo service, then measures with `aaren-cli bench`:
#   1. streaming tokens/s at 1, 16, 64 and 256 concurrent sessions beside the echo stream of the same
#      message sizes (gRPC's ceiling here), with p50/p99 append latency;
#   2. Score throughput, 64 sequences x 1k tokens, beside the in-process backend call and the
#      in-process engine (engine_bench) measured in the same run;
#   3. server RSS with 100k idle sessions vs 100k x state_bytes.
# Run after `bash scripts/build.sh`. Environment: BUILD_DIR (default build), DURATION (default 10s),
# THREADS (backend threads, default 2). Prints everything; results go to $BUILD_DIR/server-bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${BUILD_DIR:-build}"
duration="${DURATION:-10s}"
threads="${THREADS:-2}"
out="$build/server-bench"
mkdir -p "$out"
cli="$build/client/aaren-cli"

source bench/server_lib.sh

echo "== 1. streaming vs echo (demo-lm, closed loop, 1 token per append) =="
start_server --enable_echo
for n in 1 16 64 256; do
  for mode in echo stream; do
    "$cli" bench --target "$target" --model demo-lm --mode "$mode" --sessions "$n" \
      --tokens_per_session 0 --duration "$duration" --json > "$out/$mode-$n.json"
  done
done
/usr/bin/python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
print(f"{'sessions':>8} {'echo tok/s':>11} {'stream tok/s':>12} {'ratio':>6} {'p50 us':>8} {'p99 us':>8}")
for n in (1, 16, 64, 256):
    e = json.load(open(f"{out}/echo-{n}.json")); s = json.load(open(f"{out}/stream-{n}.json"))
    print(f"{n:>8} {e['tokens_per_s']:>11.0f} {s['tokens_per_s']:>12.0f} "
          f"{s['tokens_per_s'] / e['tokens_per_s']:>6.2f} {s['latency_us']['p50']:>8.0f} "
          f"{s['latency_us']['p99']:>8.0f}")
PY

echo "== 2. Score, 64 x 1024 tokens (demo-lm) =="
"$cli" bench --target "$target" --model demo-lm --mode score --sequences 64 --length 1024 \
  --rounds 5 --batch_sequences 64 --in_flight 1 --output_mode all
stop_server
"$build/bench/engine_bench" --benchmark_min_time=2 --benchmark_repetitions=3 \
  --benchmark_report_aggregates_only=true

echo "== 3. RSS with 100k idle sessions (demo-lm) =="
start_server --model_dir models/demo-lm
rss() { awk '/VmRSS/ {print $2 * 1024}' "/proc/$server_pid/status"; }
base=$(rss)
"$cli" bench --target "$target" --model demo-lm --mode sessions --count 100000 --cleanup=false
sleep 1
after=$(rss)
# A second 100k: the marginal cost, without the first calls' one-time growth (gRPC's and the
# allocator's caches, the first slabs and hash-table sizes).
"$cli" bench --target "$target" --model demo-lm --mode sessions --count 100000 --cleanup=false
sleep 1
after2=$(rss)
state_bytes=$("$cli" models --target "$target" --json | /usr/bin/python3 -c \
  'import json,sys; print([m for m in json.load(sys.stdin)["models"] if m["name"]=="demo-lm"][0]["state_bytes"])')
/usr/bin/python3 -c "
base, after, after2, sb = $base, $after, $after2, $state_bytes
n = 100000
print(f'RSS idle server {base/1e6:.1f} MB; with {n} sessions {after/1e6:.1f} MB; with {2*n} {after2/1e6:.1f} MB')
print(f'RSS / (n x state_bytes {sb}) = {after/(n*sb):.3f}; (RSS - idle RSS) / (n x state_bytes) = {(after-base)/(n*sb):.3f}')
print(f'second {n}: (RSS growth) / (n x state_bytes) = {(after2-after)/(n*sb):.3f}')
"
stop_server
