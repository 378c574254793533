#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The CUDA benchmarks of bench/RESULTS.md, each with its baseline in the same run:
#  1. cuda_bench: scan kernel vs a device-to-device copy of the same bytes; step kernel vs its
#     bytes-moved bound at 1k/10k/100k sessions; whole-model Forward GPU vs CPU backend on demo-lm
#     and a D=1024, H=16, L=12 model;
#  2. PyTorch eager on the same GPU running the reference module (bench/pytorch_forward.py) on the
#     same shapes and inputs sizes as (1)'s scoring workload;
#  3. streaming through aaren-server --device=cuda with 10k concurrent sessions (aaren-cli bench),
#     and the echo service of the same message sizes as its baseline.
# Usage (on the GPU machine): BUNDLE=gpu-bundle bash bench/run_cuda_benchmarks.sh
# (scripts/gpu-run.sh bench sets everything up). Binaries come from $BUNDLE/bin.
set -uo pipefail
cd "$(dirname "$0")/.."
bin="${BUNDLE:-gpu-bundle}/bin"
py="${PYTHON:-python3}"
seqs="${SCORE_SEQUENCES:-8}"
toks="${SCORE_TOKENS:-4096}"

# Line-buffered (stdbuf) and one bounded run per section, so a section cut off by its timeout
# still leaves every line it printed.
for section in scan step forward; do
  echo "### cuda_bench $section"
  timeout -k 5 "${SECTION_TIMEOUT:-120}" stdbuf -oL "$bin/cuda_bench" --sections "$section" \
    --demo_lm models/demo-lm --score_sequences "$seqs" --score_tokens "$toks" --step_sessions 10000 \
    --cpu_repeats "${CPU_REPEATS:-1}"
  echo "### rc=$?"
done

echo "### pytorch eager on the GPU"
big=$(mktemp -d)
cat > "$big/config.json" << 'JSON'
{"model_type": "aaren", "d_model": 1024, "n_heads": 16, "n_layers": 12, "d_ff": 4096,
 "input": {"kind": "tokens", "vocab_size": 32000}, "output_dim": 1000, "position": "sinusoidal",
 "norm_eps": 1e-5}
JSON
for cfg in models/demo-lm/config.json "$big/config.json"; do
  echo "config: $cfg"
  timeout -k 5 "${SECTION_TIMEOUT:-120}" "$py" bench/pytorch_forward.py --device cuda --config "$cfg" --batch "$seqs" --tokens "$toks" \
    --repeats 5 --chunk_sizes 64,128,256,512 | tail -1
done

echo "### streaming through the server, 10k sessions"
dir=$(mktemp -d)
"$bin/aaren-server" --device=cuda --port 0 --port_file "$dir/port" --metrics_port 0 --http_port 0 \
  --enable_echo --max_sessions 16384 --log_level warn &
server=$!
for _ in $(seq 1 100); do [[ -s "$dir/port" ]] && break; sleep 0.2; done
addr="127.0.0.1:$(cat "$dir/port")"
for mode in stream echo; do
  echo "mode: $mode"
  timeout -k 5 "${SECTION_TIMEOUT:-120}" "$bin/aaren-cli" bench --target "$addr" --mode "$mode" --model demo-lm --sessions 10000 \
    --tokens_per_session 100 --json
done
kill -TERM "$server"
wait "$server"
