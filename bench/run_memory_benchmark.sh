#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Idle-session memory (bench/RESULTS.md, "Memory: 100k idle sessions"): starts aaren-server on
# demo-lm, makes 100k sessions with `aaren-cli bench --mode sessions` (each with a 1-token
# prefix), then 100k more, and reads the server's VmRSS before and after each. Prints RSS growth /
# (100k x state_bytes) for the first 100k (from an idle server) and the second (the marginal cost,
# without the first calls' one-time growth: gRPC's and the allocator's caches, the first slabs).
# BASELINE_SERVER=<an aaren-server binary> measures it too, alternating, in the same run.
# Run after `bash scripts/build.sh`. Environment: BUILD_DIR (default build), ROUNDS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
build="${BUILD_DIR:-build}"
rounds="${ROUNDS:-2}"
threads=2
out="$build/memory-bench"
mkdir -p "$out"
cli="$build/client/aaren-cli"
source bench/server_lib.sh

rss() { awk '/VmRSS/ {print $2 * 1024}' "/proc/$server_pid/status"; }
make_sessions() {
  "$cli" bench --target "$target" --model demo-lm --mode sessions --count 100000 \
    --cleanup=false > /dev/null
  sleep 1
}

binaries=("$build/server/aaren-server")
names=(this)
if [ -n "${BASELINE_SERVER:-}" ]; then
  binaries=("$BASELINE_SERVER" "${binaries[@]}")
  names=(baseline this)
fi
rows=()
for round in $(seq "$rounds"); do
  for i in "${!binaries[@]}"; do
    server_bin="${binaries[$i]}"
    start_server --model_dir models/demo-lm
    base=$(rss)
    make_sessions
    after=$(rss)
    make_sessions
    after2=$(rss)
    state_bytes=$("$cli" models --target "$target" --json | /usr/bin/python3 -c \
      'import json,sys; print([m for m in json.load(sys.stdin)["models"] if m["name"]=="demo-lm"][0]["state_bytes"])')
    stop_server
    rows+=("$round ${names[$i]} $base $after $after2 $state_bytes")
  done
done
printf '%s\n' "${rows[@]}" | /usr/bin/python3 -c '
import sys
n = 100000
print("| round | binary | idle RSS | 100k sessions | 200k sessions | first 100k | second 100k |")
print("|---|---|---|---|---|---|---|")
for line in sys.stdin:
    r, name, base, a1, a2, sb = line.split()
    base, a1, a2, sb = int(base), int(a1), int(a2), int(sb)
    print(f"| {r} | {name} | {base/1e6:.1f} MB | {a1/1e6:.1f} MB | {a2/1e6:.1f} MB | "
          f"{(a1-base)/(n*sb):.3f} | {(a2-a1)/(n*sb):.3f} |")
'
