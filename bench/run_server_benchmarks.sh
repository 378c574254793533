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
# The tick's arithmetic alone (one Forward of n one-token spans, one thread, the server idle):
# with it, the ceiling of stream / echo if a streamed token's transport cost only what an echo
# message does. n = 1 is one message in flight, everything serial: a token's round trip is at
# least echo's plus one Forward, so stream / echo <= 1 / (1 + echo/s x t_forward). n > 1 is
# CPU-bound (client and server share the cores): a token costs at least echo's CPU per message,
# cores / (echo/s), plus t_forward / n, so stream / echo <= 1 / (1 + echo/s x t_forward / (n x
# cores)). Both are upper bounds whatever the transport does; a ceiling under a goal says the goal
# needs a faster Forward, not a faster server.
"$build/bench/engine_bench" --benchmark_filter='BM_BackendStep' --benchmark_min_time=0.5 \
  --benchmark_repetitions=3 --benchmark_format=json > "$out/step.json"
/usr/bin/python3 - "$out" "$(nproc)" <<'PY'
import json, sys
out, cores = sys.argv[1], int(sys.argv[2])
step = {}
for b in json.load(open(f"{out}/step.json"))["benchmarks"]:
    if b.get("run_type") == "iteration":  # fastest repetition: noise only adds time
        n = int(b["name"].split("sessions:")[1].split("/")[0])
        t = b["real_time"] * {"us": 1e-6, "ms": 1e-3, "ns": 1e-9}[b["time_unit"]]
        step[n] = min(step.get(n, t), t)
print(f"{'sessions':>8} {'echo tok/s':>11} {'stream tok/s':>12} {'ratio':>6} {'p50 us':>8} "
      f"{'p99 us':>8} {'Forward us/tok':>14} {'ceiling':>8} {'ratio/ceiling':>13}")
for n in (1, 16, 64, 256):
    e = json.load(open(f"{out}/echo-{n}.json")); s = json.load(open(f"{out}/stream-{n}.json"))
    echo, ratio = e["tokens_per_s"], s["tokens_per_s"] / e["tokens_per_s"]
    ceiling = 1 / (1 + echo * step[n]) if n == 1 else 1 / (1 + echo * step[n] / (n * cores))
    print(f"{n:>8} {echo:>11.0f} {s['tokens_per_s']:>12.0f} {ratio:>6.2f} "
          f"{s['latency_us']['p50']:>8.0f} {s['latency_us']['p99']:>8.0f} "
          f"{step[n] / n * 1e6:>14.1f} {ceiling:>8.2f} {ratio / ceiling:>13.2f}")
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
