#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# KServe v2 / Triton protocol vs native aaren.v1 (bench/RESULTS.md, "KServe v2 / Triton
# protocol"), issue 15. One aaren-server (demo-lm, loopback, free ports) serves both sides in the
# same run:
#   1. v2: Triton's own perf_analyzer (tritonclient 2.51.0 wheel, scripts/tritonclient-venv.sh) in
#      sequence mode over ModelStreamInfer (--streaming), TOKENS_PER_REQUEST tokens per request
#      (--shape TOKENS:N --input-data zero), sequences of SEQUENCE_LENGTH requests
#      (--sequence-length-variation 0: START on the first, END on the last, so session creation
#      and deletion are 2 of every SEQUENCE_LENGTH requests), concurrency N = N sequences in
#      flight, each waiting for its reply (closed loop); time windows of WINDOW_MS, perf_analyzer's
#      default stability check (10 %, average latency and throughput; retried once at 30 % if it
#      does not settle within MAX_TRIALS windows), infer/s and p50/p99 from its --verbose-csv;
#   2. native: `aaren-cli bench --mode stream --sessions N --tokens_per_append TOKENS_PER_REQUEST`
#      over aaren.v1 Stream, N sessions each waiting for its reply (closed loop), for 3 x WINDOW_MS
#      (as long as the 3 windows perf_analyzer reports); inferences/s = appends/s (calls_per_s);
#   3. context: one non-streaming row, perf_analyzer over unary ModelInfer at GRPC_CONCURRENCY.
# Concurrency 1, 16 and 64 (CONCURRENCY), ROUNDS rounds alternating which side goes first; medians.
# Also the server's CPU time per inference (its /proc utime + stime over the client's whole run
# divided by aaren_tokens_appended_total's growth / tokens per request) and the client's, because
# client and server share this machine's cores and perf_analyzer is the heavier client; and the
# cores other processes took meanwhile (/proc/stat), since this machine is shared.
# Run after `bash scripts/build.sh` (about 3 minutes with the defaults). Environment: BUILD_DIR
# (default build), THREADS (backend threads, default 2), CONCURRENCY (default "1 16 64"), ROUNDS
# (default 2), WINDOW_MS (default 2000), MAX_TRIALS (default 8), SEQUENCE_LENGTH (default 128),
# TOKENS_PER_REQUEST (default 1), GRPC_CONCURRENCY (default 16; empty: no non-streaming row).
# Prints a markdown table; raw results go to $BUILD_DIR/v2-bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${BUILD_DIR:-build}"
threads="${THREADS:-2}"
concurrency="${CONCURRENCY:-1 16 64}"
rounds="${ROUNDS:-2}"
window_ms="${WINDOW_MS:-2000}"
max_trials="${MAX_TRIALS:-8}"
seq_len="${SEQUENCE_LENGTH:-128}"
tokens="${TOKENS_PER_REQUEST:-1}"
grpc_n="${GRPC_CONCURRENCY-16}"
out="$(realpath -m "$build/v2-bench")"
rm -rf "$out"
mkdir -p "$out"
cli="$build/client/aaren-cli"
native_duration="$((3 * window_ms))ms"

venv_lines="$(bash scripts/tritonclient-venv.sh)"
pa="$(sed -n 1p <<< "$venv_lines")/bin/perf_analyzer"
export LD_LIBRARY_PATH="$(sed -n 2p <<< "$venv_lines")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -x "$pa" ] || { echo "no perf_analyzer at $pa"; exit 1; }
"$pa" --version 2> /dev/null | head -1 || true

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
server_flags=()
server_help="$("$build/server/aaren-server" --helpfull 2>&1 || true)"
# REST is being added; its default port could collide with something else on this machine.
if grep -q -- '--http_port' <<< "$server_help"; then server_flags+=(--http_port=0); fi

start_server() {
  rm -f "$out/port"
  metrics_port=$(free_port)
  "$build/server/aaren-server" --host 127.0.0.1 --port 0 --port_file "$out/port" \
    --model_dir models/demo-lm --threads "$threads" --metrics_host 127.0.0.1 \
    --metrics_port "$metrics_port" --log_level warn "${server_flags[@]}" 2> "$out/server.log" &
  server_pid=$!
  for _ in $(seq 600); do [ -s "$out/port" ] && break; sleep 0.1; done
  [ -s "$out/port" ] || { cat "$out/server.log"; exit 1; }
  target="127.0.0.1:$(cat "$out/port")"
}
stop_server() { kill -TERM "$server_pid"; wait "$server_pid" || true; }
trap 'kill -TERM "${server_pid:-0}" 2>/dev/null || true' EXIT

# Server CPU ticks (utime + stime) and tokens applied, before and after each client run.
server_ticks() { awk '{print $14 + $15}' "/proc/$server_pid/stat"; }
server_tokens() {
  curl -s "http://127.0.0.1:$metrics_port/metrics" |
    awk '/^aaren_tokens_appended_total\{model="demo-lm"\}/ {print $2}'
}
# All cores' busy ticks (user nice system irq softirq, not idle, iowait or steal): what is left
# after the server and the client is other work on this shared machine (builds, tests).
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
begin() { t0=$(server_ticks); k0=$(server_tokens); b0=$(busy_ticks); }
finish() {  # args: name; writes NAME.meta: server ticks, tokens applied, all busy ticks
  echo "$(($(server_ticks) - t0)) $(/usr/bin/python3 -c "print(int($(server_tokens) - $k0))")" \
    "$(($(busy_ticks) - b0))" > "$out/$1.meta"
}

native() {  # args: n round
  local name="native-$1-$2"
  begin
  /usr/bin/time -f '%U %S %e' -o "$out/$name.time" "$cli" bench --target "$target" \
    --model demo-lm --mode stream --sessions "$1" --tokens_per_append "$tokens" \
    --tokens_per_session 0 --duration "$native_duration" --json > "$out/$name.json" \
    2> "$out/$name.log"
  finish "$name"
}
v2() {  # args: kind(stream|grpc) n round
  local name="v2$1-$2-$3" flags=() s
  [ "$1" = stream ] && flags=(--streaming)
  for s in 10 30; do
    begin
    if /usr/bin/time -f '%U %S %e' -o "$out/$name.time" "$pa" -m demo-lm -u "$target" -i grpc \
      "${flags[@]}" --shape "TOKENS:$tokens" --input-data zero --sequence-length "$seq_len" \
      --sequence-length-variation 0 --concurrency-range "$2" \
      --measurement-interval "$window_ms" --stability-percentage "$s" --max-trials "$max_trials" \
      -f "$out/$name.csv" --verbose-csv > "$out/$name.log" 2>&1; then
      finish "$name"
      echo "$s" > "$out/$name.stability"
      return
    fi
    echo "  perf_analyzer $1 at $2 (round $3) failed at --stability-percentage $s:" \
      "$(grep -v '^ *$' "$out/$name.log" | tail -1)"
  done
}

echo "== v2 (perf_analyzer, sequence mode) vs native (aaren-cli bench --mode stream), demo-lm,"
echo "   $tokens token(s) per request, sequences of $seq_len, windows of $window_ms ms," \
  "native $native_duration, $rounds rounds, server --threads $threads ${server_flags[*]}"
start_server
curl -s "http://127.0.0.1:$metrics_port/metrics" | grep '^aaren_build_info' || true
"$cli" bench --target "$target" --model demo-lm --mode stream --sessions 4 \
  --tokens_per_session 0 --duration 1s > /dev/null 2>&1  # warm-up
for round in $(seq "$rounds"); do
  for n in $concurrency; do
    if [ $((round % 2)) = 1 ]; then native "$n" "$round"; v2 stream "$n" "$round"
    else v2 stream "$n" "$round"; native "$n" "$round"; fi
  done
  if [ -n "$grpc_n" ]; then
    v2 grpc "$grpc_n" "$round"
    case " $concurrency " in *" $grpc_n "*) ;; *) native "$grpc_n" "$round" ;; esac
  fi
done
stop_server

/usr/bin/python3 - "$out" "$rounds" "$concurrency" "$grpc_n" "$tokens" "$(getconf CLK_TCK)" <<'PY'
import csv, json, os, statistics, sys
out, rounds, conc, grpc_n, tokens, hz = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), \
    sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
med = statistics.median

def cpu(name):
    # server and client CPU microseconds per inference over the client's whole run, and the
    # cores other processes used meanwhile
    ticks, toks, busy = map(int, open(f"{out}/{name}.meta").read().split())
    user, system, wall = map(float, open(f"{out}/{name}.time").read().split()[-3:])
    infers = max(toks / tokens, 1)
    others = max(busy / hz - ticks / hz - user - system, 0) / wall
    return ticks / hz * 1e6 / infers, (user + system) * 1e6 / infers, others

def native(n):
    rs = []
    for r in range(1, rounds + 1):
        j = json.load(open(f"{out}/native-{n}-{r}.json"))
        assert j["errors"] == 0, j
        rs.append((j["calls_per_s"], j["latency_us"]["p50"], j["latency_us"]["p99"],
                   *cpu(f"native-{n}-{r}")))
    return [med(x) for x in zip(*rs)] if rs else None

def v2(kind, n):
    rs, loose = [], 0
    for r in range(1, rounds + 1):
        name = f"v2{kind}-{n}-{r}"
        if not os.path.exists(f"{out}/{name}.stability"):
            continue  # failed twice; reported above
        loose += open(f"{out}/{name}.stability").read().strip() != "10"
        row = next(csv.DictReader(open(f"{out}/{name}.csv")))
        rs.append((float(row["Inferences/Second"]), float(row["p50 latency"]),
                   float(row["p99 latency"]), *cpu(name),
                   float(row["Server Queue"]), float(row["Server Compute Infer"])))
        assert row["Concurrency"] == str(n), row
    return ([med(x) for x in zip(*rs)] if rs else None), len(rs), loose

print()
print("| concurrency | v2 call | perf_analyzer infer/s | p50 us | p99 us | native appends/s "
      "| p50 us | p99 us | v2 / native | server CPU us/infer v2 / native "
      "| native / v2 server CPU | client CPU us/infer v2 / native |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
rows = [(n, "stream") for n in conc] + ([(grpc_n, "grpc")] if grpc_n else [])
notes = []
for n, kind in rows:
    nat = native(n)
    v, ok, loose = v2(kind, n)
    call = "ModelStreamInfer" if kind == "stream" else "ModelInfer (unary)"
    if v is None:
        print(f"| {n} | {call} | failed | | | {nat[0]:,.0f} | {nat[1]:,.0f} | {nat[2]:,.0f} "
              "| | | | |")
        continue
    mark = "" if ok == rounds and not loose else " *"
    if mark:
        notes.append(f"{n} {call}: {ok} of {rounds} rounds measured, {loose} of them only "
                     f"stable at 30 %")
    print(f"| {n} | {call} | {v[0]:,.0f}{mark} | {v[1]:,.0f} | {v[2]:,.0f} | {nat[0]:,.0f} "
          f"| {nat[1]:,.0f} | {nat[2]:,.0f} | **{v[0] / nat[0]:.2f}** "
          f"| {v[3]:.0f} / {nat[3]:.0f} | {nat[3] / v[3]:.2f} | {v[4]:.0f} / {nat[4]:.0f} |")
    notes.append(f"{n} {call}: perf_analyzer's server-side split: queue {v[6]:.0f} us, "
                 f"compute infer {v[7]:.0f} us; other processes meanwhile: {v[5]:.2f} cores "
                 f"(v2), {nat[5]:.2f} (native)")
print()
for line in notes:
    print(line)
print(f"(median of {rounds} rounds alternating which side runs first; goal v2 / native >= 0.8; "
      "native / v2 server CPU: the ratio to expect were the server alone on its cores)")
PY
