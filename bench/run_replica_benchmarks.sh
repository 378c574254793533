#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Replicas over Redis (bench/RESULTS.md, "Replicas"), all in one run on this machine:
#   1. streaming tokens/s on demo-lm at 16 and 256 concurrent sessions (`aaren-cli bench --mode
#      stream`, closed loop, 1 token per append) for: one replica direct (the baseline), one
#      replica through nginx, three replicas through nginx; every replica with
#      --state_store=redis://... --durability=ack and a real redis-server (AOF, appendfsync
#      always). ROUNDS alternating rounds, ratio to the baseline. Everything shares this
#      machine's cores, so 3 replicas show the proxy's and Redis's overhead, not scaling;
#   2. Redis commits alone (store_bench --store redis://...): batches of 1, 16 and 256 records,
#      one compare-and-set script each, p50/p99;
#   3. failover: kill -9 of one of three replicas under 64 streams through nginx; the time from
#      the kill to each client's first acknowledged append on another replica
#      (server_replicas_test prints it).
# Run after `bash scripts/build.sh`. Environment: BUILD_DIR (default build), DURATION (default
# 10s), ROUNDS (default 3), THREADS (default 1 per replica).
set -euo pipefail
cd "$(dirname "$0")/.."
build="${BUILD_DIR:-build}"
duration="${DURATION:-10s}"
rounds="${ROUNDS:-3}"
threads="${THREADS:-1}"
out="$(realpath -m "$build/replica-bench")"
rm -rf "$out"
mkdir -p "$out/redis" "$out/nginx"
cli="$build/client/aaren-cli"
free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

redis_port=$(free_port)
redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$out/redis" --save "" \
  --appendonly yes --appendfsync always --daemonize no --logfile "$out/redis/redis.log" &
redis_pid=$!
for _ in $(seq 100); do redis-cli -p "$redis_port" ping 2> /dev/null | grep -q PONG && break; sleep 0.05; done
redis-cli -p "$redis_port" ping | grep -q PONG || { echo "redis-server did not start"; exit 1; }
store="redis://127.0.0.1:$redis_port/0"

pids=()
targets=()
start_replicas() {  # args: count
  pids=()
  targets=()
  for i in $(seq "$1"); do
    rm -f "$out/port$i"
    "$build/server/aaren-server" --host 127.0.0.1 --port 0 --port_file "$out/port$i" \
      --model_dir models/demo-lm --threads "$threads" --metrics_port 0 --http_port 0 \
      --state_store "$store" --durability ack --replica_id "bench-$i" 2> "$out/server$i.log" &
    pids+=($!)
  done
  for i in $(seq "$1"); do
    for _ in $(seq 600); do [ -s "$out/port$i" ] && break; sleep 0.1; done
    [ -s "$out/port$i" ] || { cat "$out/server$i.log"; exit 1; }
    targets+=("127.0.0.1:$(cat "$out/port$i")")
  done
}
stop_replicas() { kill -TERM "${pids[@]}"; wait "${pids[@]}" 2> /dev/null || true; }
nginx_pid=""
start_nginx() {  # args: upstreams
  nginx_port=$(free_port)
  NGINX_PREFIX="$out/nginx" deploy/nginx/render-config.sh "$nginx_port" "$@" > "$out/nginx/nginx.conf"
  nginx -p "$out/nginx" -c "$out/nginx/nginx.conf" &
  nginx_pid=$!
  sleep 0.5
}
stop_nginx() { kill -QUIT "$nginx_pid"; wait "$nginx_pid" 2> /dev/null || true; }
trap 'kill -TERM ${pids[*]:-} $redis_pid 2>/dev/null; [ -n "$nginx_pid" ] && kill -QUIT $nginx_pid 2>/dev/null; true' EXIT

bench() {  # args: name target
  for n in 16 256; do
    "$cli" bench --target "$2" --model demo-lm --mode stream --sessions "$n" \
      --tokens_per_session 0 --duration "$duration" --json > "$out/$1-$n-$round.json"
  done
}

echo "== 1. streaming: one replica direct / one through nginx / three through nginx (Redis, ack)"
for round in $(seq "$rounds"); do
  start_replicas 1
  bench direct "${targets[0]}"
  start_nginx "${targets[0]}"
  bench nginx1 "127.0.0.1:$nginx_port"
  stop_nginx
  stop_replicas
  start_replicas 3
  start_nginx "${targets[@]}"
  bench nginx3 "127.0.0.1:$nginx_port"
  stop_nginx
  stop_replicas
done
/usr/bin/python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def runs(config, n):
    return [json.load(open(f"{out}/{config}-{n}-{r}.json")) for r in range(1, rounds + 1)]
print(f"{'setup':>26} {'sessions':>8} {'tokens/s':>9} {'vs direct':>9} {'p50 us':>7} {'p99 us':>7}")
names = {"direct": "1 replica direct", "nginx1": "1 replica via nginx", "nginx3": "3 replicas via nginx"}
for n in (16, 256):
    base = statistics.median(r["tokens_per_s"] for r in runs("direct", n))
    for config in ("direct", "nginx1", "nginx3"):
        rs = runs(config, n)
        for r in rs:
            assert r["errors"] == 0, r
        tps = statistics.median(r["tokens_per_s"] for r in rs)
        lat = lambda q: statistics.median(r["latency_us"][q] for r in rs)
        print(f"{names[config]:>26} {n:>8} {tps:>9.0f} {tps / base:>9.2f} {lat('p50'):>7.0f} {lat('p99'):>7.0f}")
print(f"(median of {rounds} alternating rounds)")
PY

echo "== 2. Redis commits alone (one compare-and-set script per batch, appendfsync always)"
for n in 1 16 256; do
  redis-cli -p "$redis_port" flushall > /dev/null
  "$build/bench/store_bench" --mode commit --store "$store" --records "$n" --batches 500
done

echo "== 3. failover: kill -9 of one of 3 replicas under 64 streams through nginx"
AAREN_SERVER="$build/server/aaren-server" AAREN_SOURCE_DIR="$PWD" \
  "$build/tests/server/server_replicas_test" --gtest_filter='*Kill9*' | grep "kill -9"
