#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# aaren-cli and aaren-client-example end to end: starts the real aaren-server on an ephemeral
# loopback port with the demo models, runs the subcommands against it (health, models, score
# checked with tools/eval_demo.py --check, a session create/get/fork/export/import/generate/delete
# round trip, bench in stream and echo modes) and the example, then stops the server with SIGTERM
# and requires a clean exit.
#
# Environment (set by tests/client/CMakeLists.txt): AAREN_SERVER, AAREN_CLI,
# AAREN_CLIENT_EXAMPLE (binaries), AAREN_SOURCE_DIR (the checkout, for models/ and tools/).
set -euo pipefail

for var in AAREN_SERVER AAREN_CLI AAREN_CLIENT_EXAMPLE AAREN_SOURCE_DIR; do
  if [[ -z "${!var:-}" ]]; then
    echo "run_cli_e2e.sh: $var is not set" >&2
    exit 2
  fi
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/aaren-cli-e2e.XXXXXX")"
LM="$AAREN_SOURCE_DIR/models/demo-lm"
VOCAB="$LM/vocab.json"
SERVER_PID=""

cleanup() {
  if [[ -n "$SERVER_PID" ]]; then
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  echo "---- server log ----" >&2
  cat "$WORK/server.log" >&2 || true
  exit 1
}

step() { echo "== $*"; }

# Whether the server process is running (a child that exited stays a zombie until waited for,
# and kill -0 still succeeds on a zombie).
server_alive() {
  local state
  state="$(ps -o stat= -p "$SERVER_PID" 2>/dev/null)" || return 1
  [[ "$state" != Z* ]]
}

# cli SUBCOMMAND ARGS...: aaren-cli against the test server.
cli() {
  local command="$1"
  shift
  "$AAREN_CLI" "$command" --target="$TARGET" "$@"
}

# expect_status STATUS COMMAND...: runs COMMAND (stderr shown) and requires its exit status.
expect_status() {
  local want="$1"
  shift
  local got=0
  "$@" >"$WORK/out" || got=$?
  [[ "$got" == "$want" ]] || fail "exit status $got (want $want): $*"$'\n'"$(cat "$WORK/out")"
}

# ---- start the server ----
"$AAREN_SERVER" --host 127.0.0.1 --port 0 --port_file "$WORK/port" --threads 2 --metrics_port 0 --http_port 0 \
  --model_dir "$LM" --model_dir "$AAREN_SOURCE_DIR/models/demo-ts" --enable_echo \
  >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 600); do
  [[ -s "$WORK/port" ]] && break
  server_alive || fail "aaren-server exited during start-up"
  sleep 0.1
done
[[ -s "$WORK/port" ]] || fail "no port file after 60 s"
TARGET="127.0.0.1:$(tr -d '[:space:]' <"$WORK/port")"
echo "server pid $SERVER_PID at $TARGET"

# ---- health, models ----
step health
expect_status 0 cli health
grep -qx SERVING "$WORK/out" || fail "health printed: $(cat "$WORK/out")"
expect_status 0 cli health --service aaren.v1.Aaren

step models
expect_status 0 cli models --json
grep -q '"name": "demo-lm"' "$WORK/out" || fail "models --json lacks demo-lm"
grep -q '"name": "demo-ts"' "$WORK/out" || fail "models --json lacks demo-ts"
expect_status 0 cli models
grep -q '^demo-lm  *tokens\[43\]' "$WORK/out" || fail "models table: $(cat "$WORK/out")"

# ---- score, checked against metrics.json ----
step score
expect_status 0 cli score --model demo-lm --input "$LM/heldout.jsonl" --output "$WORK/lm.jsonl"
[[ "$(wc -l <"$WORK/lm.jsonl")" == "$(wc -l <"$LM/heldout.jsonl")" ]] || fail "score: line count"
(cd "$AAREN_SOURCE_DIR" && /usr/bin/python3 tools/eval_demo.py models/demo-lm "$WORK/lm.jsonl" \
  --check 1e-3) >"$WORK/metrics.json" || fail "eval_demo.py --check: $(cat "$WORK/metrics.json")"
cat "$WORK/metrics.json"
expect_status 2 cli score --model demo-lm --input "$WORK/no-such-file.jsonl" --output=-

# ---- sessions: create, get, fork, export, import, generate, delete ----
step session
expect_status 0 cli session create --model demo-lm --session_id e2e-a \
  --prefix_text "The cat sat on the mat. " --vocab "$VOCAB"
grep -q 'position: 24' "$WORK/out" || fail "create: $(cat "$WORK/out")"
expect_status 0 cli session get --session_id e2e-a
grep -q 'session_id: "e2e-a"' "$WORK/out" || fail "get: $(cat "$WORK/out")"
grep -q 'position: 24' "$WORK/out" || fail "get: $(cat "$WORK/out")"
expect_status 0 cli session get --session_id e2e-a --json
grep -q '"position": "24"' "$WORK/out" || fail "get --json: $(cat "$WORK/out")"
expect_status 0 cli session fork --session_id e2e-a --new_session_id e2e-b
grep -q 'session_id: "e2e-b"' "$WORK/out" || fail "fork: $(cat "$WORK/out")"
expect_status 0 cli session fork --session_id e2e-a --new_session_id e2e-c
expect_status 0 cli session export --session_id e2e-a --file "$WORK/a.snapshot"
expect_status 0 cli session export --session_id e2e-a --file "$WORK/a.json" --format json
grep -q '"model": "demo-lm"' "$WORK/a.json" || fail "export --format json"
expect_status 0 cli session import --file "$WORK/a.snapshot" --session_id e2e-bin
grep -q 'position: 24' "$WORK/out" || fail "import binary: $(cat "$WORK/out")"
expect_status 0 cli session import --file "$WORK/a.json" --session_id e2e-json
grep -q 'position: 24' "$WORK/out" || fail "import json: $(cat "$WORK/out")"
expect_status 1 cli session create --model demo-lm --session_id e2e-a   # ALREADY_EXISTS
expect_status 2 cli session import --file "$WORK/lm.jsonl"                # not a snapshot

step generate
# Same state (two forks, two imports, the original) and same seed: the same sampled tokens.
for id in e2e-b e2e-c e2e-bin e2e-json e2e-a; do
  expect_status 0 cli generate --session_id "$id" --seed 7 --max_tokens 40 --temperature 0.8 \
    --vocab "$VOCAB"
  mv "$WORK/out" "$WORK/gen-$id.txt"
done
[[ -s "$WORK/gen-e2e-b.txt" ]] || fail "generate printed nothing"
for id in e2e-c e2e-bin e2e-json e2e-a; do
  cmp -s "$WORK/gen-e2e-b.txt" "$WORK/gen-$id.txt" ||
    fail "generate from $id differs: '$(cat "$WORK/gen-$id.txt")' vs '$(cat "$WORK/gen-e2e-b.txt")'"
done
echo "seed 7: $(cat "$WORK/gen-e2e-b.txt")"
expect_status 0 cli session get --session_id e2e-b
grep -q 'position: 64' "$WORK/out" || fail "after generate: $(cat "$WORK/out")"
expect_status 0 cli generate --model demo-lm --prompt_tokens "10 32 23" --max_tokens 5 \
  --show_tokens
[[ "$(wc -l <"$WORK/out")" == 5 ]] || fail "generate --show_tokens: $(cat "$WORK/out")"

step delete
for id in e2e-a e2e-b e2e-c e2e-bin e2e-json; do
  expect_status 0 cli session delete --session_id "$id"
done
expect_status 1 cli session get --session_id e2e-a   # NOT_FOUND
expect_status 2 cli session get                      # --session_id is required
expect_status 2 cli models --no_such_flag

# ---- stream ----
step stream
printf 'The cat\n' | expect_status 0 cli stream --model demo-lm --text --vocab "$VOCAB" --top 3
[[ "$(wc -l <"$WORK/out")" == 1 ]] || fail "stream: $(cat "$WORK/out")"

# ---- bench ----
step "bench stream"
expect_status 0 cli bench --model demo-lm --mode stream --sessions 16 --tokens_per_session 50 \
  --json
/usr/bin/python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
assert r["mode"] == "stream" and r["errors"] == 0 and r["calls"] == 800, r
assert r["latency_us"]["count"] == 800 and r["latency_us"]["p50"] > 0, r
' "$WORK/out" || fail "bench stream: $(cat "$WORK/out")"
step "bench echo"
expect_status 0 cli bench --model demo-lm --mode echo --sessions 16 --tokens_per_session 50
grep -q '^echo  *demo-lm  *16  *800 ' "$WORK/out" || fail "bench echo: $(cat "$WORK/out")"

# ---- the library's example ----
step aaren-client-example
expect_status 0 "$AAREN_CLIENT_EXAMPLE" "$TARGET" demo-lm
cat "$WORK/out"

# ---- shutdown ----
step shutdown
kill -TERM "$SERVER_PID"
for _ in $(seq 300); do
  server_alive || break
  sleep 0.1
done
server_alive && fail "aaren-server still running 30 s after SIGTERM"
status=0
wait "$SERVER_PID" || status=$?
SERVER_PID=""
[[ "$status" == 0 ]] || fail "aaren-server exited with status $status after SIGTERM"
echo "PASS"
