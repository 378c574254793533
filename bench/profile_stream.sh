#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Where a streamed token's server CPU goes: starts aaren-server on demo-lm, drives it with
# `aaren-cli bench --mode stream` (SESSIONS concurrent sessions, 1 token per append), samples the
# server with `perf record` for PROFILE_S seconds meanwhile, and prints the server's CPU per
# token split by component (kernel, libxsmm GEMM, the rest of Forward, gRPC + protobuf,
# malloc/copies, Abseil, our transport and engine code) and by thread.
# Needs perf (Debian's linux-perf; /usr/bin/perf) and permission to profile (root, or
# kernel.perf_event_paranoid <= 1). Environment: BUILD_DIR (default build), SESSIONS (16),
# PROFILE_S (10), THREADS (backend threads, 2), SERVER_FLAGS (more aaren-server flags, split on
# spaces, e.g. "--state_store DIR --durability ack"), CLIENT_FLAGS (more `aaren-cli bench` flags,
# e.g. the TLS ones). Output goes to $BUILD_DIR/profile-stream/.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${BUILD_DIR:-build}"
sessions="${SESSIONS:-16}"
profile_s="${PROFILE_S:-10}"
threads="${THREADS:-2}"
freq=999  # perf samples per second of CPU
out="$build/profile-stream"
perf="${PERF:-/usr/bin/perf}"
mkdir -p "$out"
[ -x "$perf" ] || { echo "profile_stream: $perf not found (apt-get install linux-perf)" >&2; exit 1; }

source bench/server_lib.sh
# shellcheck disable=SC2086 # SERVER_FLAGS is a list of flags
start_server --model_dir models/demo-lm ${SERVER_FLAGS:-}

# The client runs 2 s longer on each side than the profile, so the profile sees steady state.
"$build/client/aaren-cli" bench --target "$target" --model demo-lm --mode stream \
  --sessions "$sessions" --tokens_per_session 0 --duration "$((profile_s + 4))s" --json \
  ${CLIENT_FLAGS:-} \
  > "$out/stream.json" &
client_pid=$!
sleep 2
"$perf" record -q -F "$freq" -p "$server_pid" -o "$out/perf.data" -- sleep "$profile_s"
wait "$client_pid"
"$perf" script -i "$out/perf.data" -F tid,ip,sym,dso 2> /dev/null > "$out/samples.txt"

/usr/bin/python3 - "$out" "$profile_s" "$freq" <<'PY'
import collections, json, re, sys
out, seconds, freq = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
tokens_per_s = json.load(open(f"{out}/stream.json"))["tokens_per_s"]

def component(sym, dso):
    if dso.startswith("perf-"): return "Forward: libxsmm JIT GEMM"
    if dso.startswith(("libm.", "libgomp", "libopenblas")): return "Forward: libm, OpenMP, OpenBLAS"
    if dso == "aaren-server":
        if re.search(r"CpuBackend|PackedLinear|Gelu|LayerNorm|Scan|Attention|Sinus|Heads|Residual|libxsmm|internal_find_code", sym):
            return "Forward: our kernels, libxsmm dispatch"
        if re.search(r"Reactor|BoundedStream|Parse|Service|Interceptor|Metric|Registry|Series|Access|Auth|Tenant|grpc::", sym):
            return "transport: reactors, parsing, metrics"
        return "engine: scheduler, sessions, validation"
    if dso.startswith(("libssl", "libcrypto")): return "TLS: OpenSSL"
    if dso.startswith(("libgrpc", "libgpr", "libprotobuf", "libaddress_sorting", "libupb")):
        return "gRPC + protobuf (user space)"
    if dso == "[kernel.kallsyms]": return "kernel: syscalls, wake-ups, TCP loopback"
    if dso.startswith(("libc.", "libstdc++")): return "libc: malloc/free, memcpy"
    if dso.startswith("libabsl"): return "Abseil: Mutex, hashing"
    return "other: " + dso

by_component, by_thread, n = collections.Counter(), collections.Counter(), 0
for line in open(f"{out}/samples.txt"):
    m = re.match(r"\s*(\d+)\s+[0-9a-f]+\s+(.*)\s+\((.*)\)\s*$", line)
    if not m: continue
    tid, sym, dso = m.group(1), m.group(2).strip(), m.group(3).split("/")[-1]
    n += 1
    by_component[component(sym, dso)] += 1
    by_thread[tid] += 1
cores = n / freq / seconds
us_per_token = 1e6 * cores / tokens_per_s
print(f"{tokens_per_s:.0f} tokens/s; server CPU {cores:.2f} cores = {us_per_token:.1f} us "
      f"per token ({n} samples)")
print(f"{'share':>6} {'us/token':>9}  component")
for c, k in by_component.most_common():
    print(f"{100 * k / n:5.1f}% {us_per_token * k / n:9.1f}  {c}")
print("threads (share of samples):", ", ".join(f"{100 * k / n:.0f}%" for _, k in by_thread.most_common(6)))
PY
