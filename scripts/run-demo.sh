#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds aaren-score and runs it on the bundled demo-lm model: scores the model's held-out set
# (scan path), then prints the first output and the held-out accuracy recomputed from the outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh aaren-score
build_dir="${BUILD_DIR:-build}"
out="$build_dir/demo-lm.outputs.jsonl"
"$build_dir/tools/aaren-score" --model_dir models/demo-lm --input models/demo-lm/heldout.jsonl \
  --output "$out" "$@"
echo "outputs: $out ($(wc -l < "$out") sequences); first line begins:"
head -c 300 "$out"; echo " ..."
/usr/bin/python3 tools/eval_demo.py models/demo-lm "$out"
