#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Generates the Python stubs aaren_client needs, like the CMake target aaren_python_stubs, into
# OUT_DIR (default: this directory, so that `pip install client/python` packages them; the
# generated packages aaren/ and aaren_grpc_health/ are git-ignored here).
#   client/python/generate_stubs.sh [OUT_DIR]
# Needs protoc and grpc_python_plugin (Debian: protobuf-compiler, protobuf-compiler-grpc); set
# PROTOC / GRPC_PYTHON_PLUGIN to use others, AAREN_PROTO_DIR for the .proto sources (default
# <repo>/proto).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
proto_dir=${AAREN_PROTO_DIR:-$(cd "$here/../.." && pwd)/proto}
out=${1:-$here}
protoc=${PROTOC:-protoc}
plugin=${GRPC_PYTHON_PLUGIN:-$(command -v grpc_python_plugin || true)}
if [ -z "$plugin" ]; then
  echo "generate_stubs.sh: grpc_python_plugin not found (apt install protobuf-compiler-grpc)" >&2
  exit 1
fi
mkdir -p "$out/aaren/v1" "$out/aaren_grpc_health/v1"
"$protoc" --proto_path="$proto_dir" --proto_path="$here/proto" \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  --plugin=protoc-gen-grpc_python="$plugin" \
  "$proto_dir/aaren/v1/aaren.proto" "$proto_dir/aaren/v1/bench.proto" \
  "$here/proto/aaren_grpc_health/v1/health.proto"
touch "$out/aaren/__init__.py" "$out/aaren/v1/__init__.py" \
  "$out/aaren_grpc_health/__init__.py" "$out/aaren_grpc_health/v1/__init__.py"
echo "generated Python stubs in $out"
