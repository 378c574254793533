#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Durability costs (bench/RESULTS.md, "Durability"), all in one run on this machine's disk:
#   1. streaming tokens/s through aaren-server on demo-lm at 16 and 256 concurrent sessions
#      (`aaren-cli bench --mode stream`, closed loop, 1 token per append) with --durability none,
#      checkpoint and ack (a fresh RocksDB store each time), and ack-memory (ack over
#      --state_store memory:, the engine's share of ack's cost without RocksDB), ROUNDS
#      alternating rounds; ratio to none; the server's own store commit counts and durations
#      from /metrics;
#   2. RocksDbStore::Commit alone (store_bench): batches of 16 and 256 records, p50/p99;
#   3. SESSIONS (default 1M) stored sessions: bytes on disk per session vs state_bytes after
#      compaction, and the time aaren-server takes to recover them (its "sessions recovered" log).
# Run after `bash scripts/build.sh`. Environment: BUILD_DIR (default build), DURATION (default
# 10s), ROUNDS (default 3), THREADS (default 2), SESSIONS (default 1000000), STORE_ROOT (where the
# stores go; default $BUILD_DIR/durability-bench, i.e. the disk the build is on), BASELINE_SERVER
# (another aaren-server binary, e.g. one built from an older commit: adds "ack-baseline", that
# binary with --durability ack, to every round of part 1, so a change is measured in the same run).
set -euo pipefail
cd "$(dirname "$0")/.."
build="${BUILD_DIR:-build}"
duration="${DURATION:-10s}"
rounds="${ROUNDS:-3}"
threads="${THREADS:-2}"
sessions="${SESSIONS:-1000000}"
out="${STORE_ROOT:-$build/durability-bench}"
rm -rf "$out"
mkdir -p "$out"
cli="$build/client/aaren-cli"
df -h "$out" | tail -1 | awk '{print "disk: " $1 " (" $2 ", " $4 " free)"}'

configs=(none checkpoint ack ack-memory)
[ -n "${BASELINE_SERVER:-}" ] && configs+=(ack-baseline)
server_bin="$build/server/aaren-server"

start_server() {  # args: extra flags
  rm -f "$out/port"
  metrics_port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$server_bin" --host 127.0.0.1 --port 0 --port_file "$out/port" \
    --model_dir models/demo-lm --threads "$threads" --metrics_host 127.0.0.1 \
    --metrics_port "$metrics_port" --http_port 0 "$@" 2> "$out/server.log" &
  server_pid=$!
  for _ in $(seq 600); do [ -s "$out/port" ] && break; sleep 0.1; done
  [ -s "$out/port" ] || { cat "$out/server.log"; exit 1; }
  target="127.0.0.1:$(cat "$out/port")"
}
stop_server() { kill -TERM "$server_pid"; wait "$server_pid"; }
trap 'kill -TERM "${server_pid:-0}" 2>/dev/null || true' EXIT

echo "== 1. streaming with none / checkpoint / ack"
for round in $(seq "$rounds"); do
  for config in "${configs[@]}"; do
    rm -rf "$out/store"
    server_bin="$build/server/aaren-server"
    case "$config" in
      none) flags=() ;;
      ack-memory) flags=(--state_store memory: --durability ack) ;;
      ack-baseline) flags=(--state_store "$out/store" --durability ack); server_bin="$BASELINE_SERVER" ;;
      *) flags=(--state_store "$out/store" --durability "$config") ;;
    esac
    start_server "${flags[@]}"
    for n in 16 256; do
      "$cli" bench --target "$target" --model demo-lm --mode stream --sessions "$n" \
        --tokens_per_session 0 --duration "$duration" --json > "$out/$config-$n-$round.json"
    done
    curl -s "http://127.0.0.1:$metrics_port/metrics" > "$out/$config-$round.metrics"
    stop_server
  done
done
server_bin="$build/server/aaren-server"
/usr/bin/python3 - "$out" "$rounds" "${configs[@]}" <<'PY'
import json, re, statistics, sys
out, rounds, configs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def runs(config, n):
    return [json.load(open(f"{out}/{config}-{n}-{r}.json")) for r in range(1, rounds + 1)]
print(f"{'durability':>10} {'sessions':>8} {'tokens/s':>9} {'vs none':>7} {'p50 us':>7} {'p99 us':>7}")
for n in (16, 256):
    base = statistics.median(r["tokens_per_s"] for r in runs("none", n))
    for config in configs:
        rs = runs(config, n)
        for r in rs:
            assert r["errors"] == 0, r
        tps = statistics.median(r["tokens_per_s"] for r in rs)
        lat = lambda q: statistics.median(r["latency_us"][q] for r in rs)
        print(f"{config:>10} {n:>8} {tps:>9.0f} {tps / base:>7.2f} {lat('p50'):>7.0f} {lat('p99'):>7.0f}")
def metric(text, name, labels=""):
    m = re.search(r"^" + re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "") + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else float("nan")
for config in configs[1:]:
    text = open(f"{out}/{config}-{rounds}.metrics").read()
    commits = metric(text, "aaren_store_commits_total", 'result="ok"')
    records = metric(text, "aaren_store_records_written_total")
    seconds = metric(text, "aaren_store_commit_duration_seconds_sum")
    print(f"server, {config}, last round: {commits:.0f} commits, {records / max(commits, 1):.1f} "
          f"records per commit, mean commit {1e3 * seconds / max(commits, 1):.2f} ms")
print(f"(median of {rounds} alternating rounds)")
PY

echo "== 2. RocksDbStore::Commit alone (one WriteBatch + WAL fsync)"
for n in 1 16 256; do
  rm -rf "$out/commit-store"
  "$build/bench/store_bench" --mode commit --dir "$out/commit-store" --records "$n" --batches 500
done

echo "== 3. $sessions stored sessions: bytes on disk, recovery time"
rm -rf "$out/big-store"
"$build/bench/store_bench" --mode populate --dir "$out/big-store" --sessions "$sessions"
start_server --state_store "$out/big-store" --durability ack --host_tier_sessions $((sessions + 1000))
grep "sessions recovered" "$out/server.log"
ps -o rss= -p "$server_pid" | awk '{printf "server RSS after recovery: %.0f MB\n", $1 / 1024}'
stop_server
rm -rf "$out"
