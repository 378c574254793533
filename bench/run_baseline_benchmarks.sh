#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Aaren Serve against the baseline a user would pick instead: the PyTorch reference module served
# by Python grpcio with one state per session (bench/torch_stream_server.py), both driven by the
# same `aaren-cli bench --mode stream` (closed loop, 1 token per append, demo-lm) at 1, 16 and 64
# sessions, one server at a time on the same cores, in the same run. Prints tokens/s, p50/p99 and
# our tokens/s over the baseline's.
#
#   bash bench/run_baseline_benchmarks.sh    # DURATION (default 10s), THREADS (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
build="${BUILD_DIR:-build}"
duration="${DURATION:-10s}"
threads="${THREADS:-2}"
out="$build/baseline-bench"
mkdir -p "$out"
cli="$build/client/aaren-cli"
pid=""
trap 'kill -TERM "${pid:-0}" 2>/dev/null || true' EXIT

wait_port() {
  for _ in $(seq 200); do [ -s "$out/port" ] && return; sleep 0.1; done
  echo "run_baseline_benchmarks: no port from the server" >&2; exit 1
}
run_load() {  # args: name
  for n in 1 16 64; do
    "$cli" bench --target "127.0.0.1:$(cat "$out/port")" --model demo-lm --mode stream \
      --sessions "$n" --tokens_per_session 0 --duration "$duration" --json > "$out/$1-$n.json"
  done
  kill -TERM "$pid"; wait "$pid" || true; pid=""
}

rm -f "$out/port"
"$build/server/aaren-server" --host 127.0.0.1 --port 0 --port_file "$out/port" \
  --threads "$threads" --metrics_port 0 --http_port 0 --log_level warn \
  --model_dir models/demo-lm 2> "$out/aaren.log" &
pid=$!
wait_port
run_load aaren

rm -f "$out/port"
AAREN_PYTHON_STUBS="$build/python" /usr/bin/python3 bench/torch_stream_server.py \
  --model_dir models/demo-lm --port_file "$out/port" 2> "$out/torch.log" &
pid=$!
wait_port
run_load torch

/usr/bin/python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
print(f"{'sessions':>8} {'aaren tok/s':>12} {'p50/p99 us':>14} {'torch tok/s':>12} "
      f"{'p50/p99 us':>14} {'ratio':>6}")
for n in (1, 16, 64):
    a = json.load(open(f"{out}/aaren-{n}.json")); t = json.load(open(f"{out}/torch-{n}.json"))
    assert a["errors"] == 0 and t["errors"] == 0, (a["first_error"], t["first_error"])
    lat = lambda r: f"{r['latency_us']['p50']:.0f}/{r['latency_us']['p99']:.0f}"
    print(f"{n:>8} {a['tokens_per_s']:>12.0f} {lat(a):>14} {t['tokens_per_s']:>12.0f} "
          f"{lat(t):>14} {a['tokens_per_s'] / t['tokens_per_s']:>6.1f}")
PY
