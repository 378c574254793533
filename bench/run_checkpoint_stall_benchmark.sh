#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# What a large checkpoint costs the streams beside it (bench/RESULTS.md, "Durability: what a
# checkpoint holds back"). One aaren-server on demo-lm with `--durability checkpoint` over a
# fresh RocksDB directory; `aaren-cli bench --mode stream` runs STREAMS sessions (1 token per
# append) for DURATION while, after 2 s, `aaren-cli bench --mode sessions` makes SESSIONS new
# sessions (each a record for the next checkpoint). Prints the streams' tokens/s, p50, p99 and
# max append latency, and the same streams without the session burst (the baseline, same binary,
# same run). BASELINE_SERVER=<an aaren-server binary> measures it too, alternating.
# Run after `bash scripts/build.sh`. Environment: BUILD_DIR (default build), ROUNDS (default 2),
# STREAMS (default 4), SESSIONS (default 100000), DURATION (default 14s), INTERVAL (default 1s).
set -euo pipefail
cd "$(dirname "$0")/.."
build="${BUILD_DIR:-build}"
rounds="${ROUNDS:-2}"
streams="${STREAMS:-4}"
sessions="${SESSIONS:-100000}"
duration="${DURATION:-14s}"
interval="${INTERVAL:-1s}"
threads=2
out="$build/checkpoint-stall-bench"
mkdir -p "$out"
cli="$build/client/aaren-cli"
source bench/server_lib.sh

binaries=("$build/server/aaren-server")
names=(this)
if [ -n "${BASELINE_SERVER:-}" ]; then
  binaries=("$BASELINE_SERVER" "${binaries[@]}")
  names=(baseline this)
fi
ms=$(/usr/bin/python3 -c "import sys; s='$duration'; print(int(float(s[:-1])*1000) if s.endswith('s') else int(s))")
rows=()
for round in $(seq "$rounds"); do
  for i in "${!binaries[@]}"; do
    for burst in no yes; do
      server_bin="${binaries[$i]}"
      rm -rf "$out/store"
      start_server --model_dir models/demo-lm --state_store "$out/store" \
        --durability checkpoint --checkpoint_interval "$interval"
      "$cli" bench --target "$target" --model demo-lm --mode stream --sessions "$streams" \
        --tokens_per_append 1 --tokens_per_session 0 --duration "${ms}ms" --json \
        > "$out/stream.json" &
      bench_pid=$!
      if [ "$burst" = yes ]; then
        sleep 2
        "$cli" bench --target "$target" --model demo-lm --mode sessions --count "$sessions" \
          --cleanup=false > /dev/null
      fi
      wait "$bench_pid"
      stop_server
      rows+=("$round ${names[$i]} $burst $(/usr/bin/python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
r = r[0] if isinstance(r, list) else r
l = r["latency_us"]
print(r["tokens_per_s"], l["p50"], l["p99"], l["max"])' "$out/stream.json")")
    done
  done
done
printf '%s\n' "${rows[@]}" | /usr/bin/python3 -c '
import sys
print("| round | binary | sessions made meanwhile | stream tokens/s | p50 us | p99 us | max us |")
print("|---|---|---|---|---|---|---|")
for line in sys.stdin:
    r, name, burst, tps, p50, p99, mx = line.split()
    made = "'"$sessions"'" if burst == "yes" else "0"
    print(f"| {r} | {name} | {made} | {float(tps):,.0f} | {float(p50):,.0f} | {float(p99):,.0f} | {float(mx):,.0f} |")
'
