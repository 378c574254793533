#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Security overhead (bench/RESULTS.md, "Security"): streaming tokens/s through aaren-server on
# demo-lm at 16 and 256 concurrent sessions, plaintext without tokens vs mutual TLS with a bearer
# token on every call, with `aaren-cli bench --mode stream` (closed loop, 1 token per append),
# each configuration measured ROUNDS times, alternating, in the same run. Certificates come from
# tests/support/make_test_certs.sh. Run after `bash scripts/build.sh`. Environment: BUILD_DIR
# (default build), DURATION (default 10s), ROUNDS (default 3), THREADS (default 2), CONFIGS
# (default "plain token tls secure": also tokens alone and TLS alone, to split the cost).
set -euo pipefail
cd "$(dirname "$0")/.."
build="${BUILD_DIR:-build}"
duration="${DURATION:-10s}"
rounds="${ROUNDS:-3}"
threads="${THREADS:-2}"
configs="${CONFIGS:-plain token tls secure}"
out="$build/security-bench"
rm -rf "$out"
mkdir -p "$out"
cli="$build/client/aaren-cli"
bash tests/support/make_test_certs.sh "$out/pki" > /dev/null
token="bench-token-0123456789abcdef"
printf 'bench %s\n' "$token" > "$out/tokens"

source bench/server_lib.sh

pki="$out/pki"
tls_server=(--tls_cert_file "$pki/server.pem" --tls_key_file "$pki/server.key")
mtls_client=(--tls_ca_file "$pki/ca.pem" --tls_cert_file "$pki/client.pem"
             --tls_key_file "$pki/client.key")
# plain: no TLS, no tokens. token: tokens only. tls: server-authenticated TLS only.
# secure: mutual TLS and a token (the headline).
for round in $(seq "$rounds"); do
  for config in $configs; do
    case "$config" in
      plain) server=(); client=() ;;
      token) server=(--auth_tokens_file "$out/tokens"); client=(--token "$token") ;;
      tls) server=("${tls_server[@]}"); client=(--tls_ca_file "$pki/ca.pem") ;;
      secure) server=("${tls_server[@]}" --tls_client_ca_file "$pki/ca.pem"
                      --auth_tokens_file "$out/tokens")
              client=("${mtls_client[@]}" --token "$token") ;;
      *) echo "unknown configuration $config" >&2; exit 2 ;;
    esac
    start_server --model_dir models/demo-lm "${server[@]}"
    for n in 16 256; do
      "$cli" bench --target "$target" "${client[@]}" --model demo-lm --mode stream \
        --sessions "$n" --tokens_per_session 0 --duration "$duration" --json \
        > "$out/$config-$n-$round.json"
    done
    stop_server
  done
done
/usr/bin/python3 - "$out" "$rounds" $configs <<'PY'
import json, statistics, sys
out, rounds, configs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def runs(config, n):
    return [json.load(open(f"{out}/{config}-{n}-{r}.json")) for r in range(1, rounds + 1)]
print(f"{'config':>7} {'sessions':>8} {'tokens/s':>9} {'vs plain':>8} {'p50 us':>7} {'p99 us':>7}")
for n in (16, 256):
    base = statistics.median(r["tokens_per_s"] for r in runs("plain", n))
    for config in configs:
        rs = runs(config, n)
        for r in rs:
            assert r["errors"] == 0, r
        tps = statistics.median(r["tokens_per_s"] for r in rs)
        lat = lambda q: statistics.median(r["latency_us"][q] for r in rs)
        print(f"{config:>7} {n:>8} {tps:>9.0f} {tps / base:>8.2f} {lat('p50'):>7.0f} {lat('p99'):>7.0f}")
print(f"(median of {rounds} alternating rounds per configuration)")
PY
