#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the CPU image with podman and checks it from the host (tests/image): health, ListModels
# and Score through the published port (demo models, and a model directory mounted read-only),
# /metrics scraped by a real Prometheus, the non-root user, SIGTERM -> exit 0 within the drain
# timeout, and deploy/docker-compose.yml under podman-compose. Prints the build time and the
# image size. .ci/run runs it after the unit tests.
#
#   bash scripts/image-test.sh
#
# What it may change on this machine, each time saying so (and only when needed):
#   * apt-get installs podman, runc, podman-compose, debootstrap (Debian packages);
#   * writes /etc/containers/containers.conf.d/50-aaren-image-test.conf: runtime "runc" (crun
#     fails on hosts with hybrid cgroups) and default_ulimits = [] (the runtime may not raise
#     RLIMIT_NOFILE/NPROC in a sandbox);
#   * when debian:bookworm-slim can be neither found nor pulled, makes it locally with
#     debootstrap (--variant=minbase, build-image/rootfs) and `podman import` as
#     localhost/debian:bookworm-slim, which `FROM debian:bookworm-slim` then resolves to.
# Image layers go to podman's storage; within one run nothing is built twice.
#
# Environment:
#   IMAGE             tag to build and test (default aaren-serve:test-cpu)
#   METRICS_EXPORTER  prometheus-cpp | builtin | auto (default: prometheus-cpp when GitHub is
#                     reachable, else builtin; see the Dockerfile)
#   JOBS              parallel build jobs inside the image build (default: nproc)
#   SKIP_BUILD=1      test an image that is already built
#   BUILD_DIR         the host build (default build/): its aaren-cli and Python stubs are used,
#                     and built first when missing
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
image=${IMAGE:-aaren-serve:test-cpu}
build_dir=${BUILD_DIR:-build}
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
say() { echo "image-test: $*" >&2; }

# ---- podman ---------------------------------------------------------------------------------
packages=(podman runc podman-compose debootstrap)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing ${missing[*]} (apt-get)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" > /dev/null
fi
conf=/etc/containers/containers.conf.d/50-aaren-image-test.conf
want_conf='# Written by Aaren Serve scripts/image-test.sh.
[containers]
default_ulimits = []

[engine]
runtime = "runc"'
if [ "$(cat "$conf" 2>/dev/null)" != "$want_conf" ]; then
  say "writing $conf (runtime runc, default_ulimits = [])"
  $sudo mkdir -p "$(dirname "$conf")"
  printf '%s\n' "$want_conf" | $sudo tee "$conf" > /dev/null
fi
podman=(podman)
[ -n "$sudo" ] && podman=(sudo podman)

# ---- the base image ---------------------------------------------------------------------------
base=debian:bookworm-slim
if "${podman[@]}" image exists "$base"; then
  say "base image $base: present"
elif timeout 120 "${podman[@]}" pull --quiet "docker.io/library/$base" > /dev/null 2>&1; then
  say "base image $base: pulled"
else
  say "base image $base cannot be pulled: making localhost/$base with debootstrap"
  rootfs=$repo/build-image/rootfs
  $sudo rm -rf "$rootfs"
  mkdir -p "$(dirname "$rootfs")"
  t0=$SECONDS
  $sudo debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian \
    > "$repo/build-image/debootstrap.log" 2>&1 \
    || { tail -20 "$repo/build-image/debootstrap.log" >&2; exit 1; }
  $sudo rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  $sudo tar -C "$rootfs" -c . | "${podman[@]}" import \
    --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "localhost/$base" > /dev/null
  $sudo rm -rf "$rootfs"
  say "base image localhost/$base made in $((SECONDS - t0)) s"
fi

# ---- build ------------------------------------------------------------------------------------
exporter=${METRICS_EXPORTER:-auto}
if [ "$exporter" = auto ]; then
  if timeout 15 git ls-remote https://github.com/jupp0r/prometheus-cpp.git HEAD > /dev/null 2>&1; then
    exporter=prometheus-cpp
  else
    exporter=builtin
  fi
  say "METRICS_EXPORTER=auto: $exporter (GitHub $([ "$exporter" = builtin ] && echo "is not" || echo is) reachable)"
fi
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  git_sha=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
  say "building $image (BASE=cpu, METRICS_EXPORTER=$exporter, GIT_SHA=$git_sha)"
  t0=$SECONDS
  # --format docker keeps HEALTHCHECK (the OCI image format has no such field); --network=host
  # lets apt-get inside the build reach Debian's archive and the tests bind loopback.
  # The host's CA bundle, for pip inside the build (tests/kserve_v2 installs tritonclient from
  # PyPI): where the host reaches PyPI through a TLS-intercepting proxy, the base image's
  # certificates do not trust it. The Dockerfile points PIP_CERT at it when it is there.
  ca_bundle=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
  ca_mount=()
  [ -f "$ca_bundle" ] && ca_mount=(--volume "$ca_bundle:/run/aaren-pip-ca.crt:ro")
  "${podman[@]}" build --format docker --network=host --pull=never "${ca_mount[@]}" \
    --build-arg BASE=cpu --build-arg METRICS_EXPORTER="$exporter" \
    --build-arg GIT_SHA="$git_sha" --build-arg JOBS="${JOBS:-$(nproc)}" \
    --tag "$image" --file Dockerfile . > "$repo/build-image.log" 2>&1 \
    || { tail -20 "$repo/build-image.log" >&2
         # Last, so that a CI excerpt of the output's end shows them: each failing gtest case
         # with its assertion (file:line, expected and actual), or a compiler error.
         grep -E "^\S+:[0-9]+: Failure|Expected|Which is|Value of|Actual|\[  FAILED  \]|error:" \
           "$repo/build-image.log" | tail -24 >&2
         say "image build failed (log: build-image.log)"; exit 1; }
  build_s=$((SECONDS - t0))
  say "built $image in ${build_s} s (log: build-image.log)"
fi
size=$("${podman[@]}" image inspect --format '{{.Size}}' "$image")
say "image $image: $((size / 1000000)) MB ($size bytes)"

# ---- checks from the host ---------------------------------------------------------------------
if [ ! -x "$build_dir/client/aaren-cli" ] || [ ! -f "$build_dir/python/aaren/v1/aaren_pb2.py" ]; then
  say "building the host's aaren-cli and Python stubs ($build_dir)"
  BUILD_DIR="$build_dir" bash scripts/build.sh aaren-cli aaren_python_stubs
fi
PODMAN="${podman[*]}" AAREN_IMAGE="$image" AAREN_IMAGE_EXPORTER="$exporter" \
  AAREN_SOURCE_DIR="$repo" PYTHONPATH="$repo/$build_dir/python:$repo/client/python" \
  /usr/bin/python3 -m pytest -q -p no:cacheprovider -rA tests/image
say "passed: $image ($((size / 1000000)) MB${build_s:+, built in ${build_s} s})"
