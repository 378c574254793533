#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs dependencies, builds aaren-server and aaren-cli, and starts the server in the
# foreground on the bundled demo models (models/demo-lm, models/demo-ts) on port 50051.
# Extra arguments go to aaren-server (e.g. --port 6000 --log_format json). Stop it with Ctrl-C:
# it drains in-flight calls and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
BUILD_DIR="${BUILD_DIR:-build}" bash scripts/build.sh aaren-server aaren-cli
build_dir="${BUILD_DIR:-build}"
cat >&2 <<MSG
Starting aaren-server on the demo models. From another shell, try:
  $build_dir/client/aaren-cli models
  $build_dir/client/aaren-cli score --model demo-lm --input models/demo-lm/heldout.jsonl --output /tmp/out.jsonl
  echo "the quick brown fox" | $build_dir/client/aaren-cli stream --model demo-lm --text --vocab models/demo-lm/vocab.json
MSG
exec "$build_dir/server/aaren-server" "$@"
