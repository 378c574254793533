# SPDX-License-Identifier: Apache-2.0
# Aaren Serve image: aaren-server and aaren-cli with the bundled demo models.
#
#   docker build -t aaren-serve:0.4.0-cuda .                        # CUDA 13, Ubuntu 24.04
#   docker build --build-arg BASE=cpu -t aaren-serve:0.4.0-cpu .    # CPU only, Debian 12
#   docker run --rm -p 50051:50051 -p 8002:8002 aaren-serve:0.4.0-cpu
#   docker run --rm --gpus all -p 50051:50051 -p 8002:8002 aaren-serve:0.4.0-cuda
#
# BASE picks the builder and runtime images (each can be overridden with its own ARG below).
# Only the stages BASE selects are built, which needs BuildKit, the default builder since
# Docker 23 (with an older Docker: DOCKER_BUILDKIT=1).
#
# The builder runs the scripts CI runs: scripts/install-deps.sh, then scripts/test.sh, which
# checks formatting, builds everything and runs every test; a failing test fails the build. The
# runtime image gets the two binaries, the packages that provide the shared libraries they load
# (worked out by deploy/docker/stage-runtime.sh), and the demo models; it runs as a non-root
# user. Arguments after the image name replace CMD; with no --model_dir the server still serves
# the demo models from /opt/aaren/models (AAREN_DEFAULT_MODEL_DIRS below).

ARG BASE=cuda
ARG CUDA_BUILDER_IMAGE=nvidia/cuda:13.0.2-devel-ubuntu24.04
ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:13.0.2-runtime-ubuntu24.04
ARG CPU_BUILDER_IMAGE=debian:bookworm-slim
ARG CPU_RUNTIME_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------------------------------------
# Builder bases: what differs between the two variants.

FROM ${CUDA_BUILDER_IMAGE} AS builder-cuda
ARG DEBIAN_FRONTEND=noninteractive
ENV AAREN_WITH_CUDA=ON
# Assumption: scripts/install-deps.sh names Debian 12 packages, and each of them exists under
# the same name on Ubuntu 24.04 (main and universe, both enabled in the CUDA images), in newer
# versions: g++ 13, CMake 3.28, gRPC 1.51, protobuf 3.21, Abseil 20220623, python3-torch 2.x.
# One difference matters: scripts/check-format.sh compares with Debian 12's clang-format 14, and
# Ubuntu's default clang-format (18) formats some constructs differently, so clang-format-14 is
# put first on PATH.
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends clang-format-14 \
 && ln -s /usr/bin/clang-format-14 /usr/local/bin/clang-format \
 && rm -rf /var/lib/apt/lists/*

FROM ${CPU_BUILDER_IMAGE} AS builder-cpu
ENV AAREN_WITH_CUDA=OFF

# ---------------------------------------------------------------------------------------------
# Builder: dependencies, prometheus-cpp, then build and test exactly as CI does.

FROM builder-${BASE} AS builder
ARG DEBIAN_FRONTEND=noninteractive
WORKDIR /src

# Only the dependency script first, so this layer is reused until the script changes. (Each ARG
# is declared just before the first step that uses it: a RUN after an ARG whose value changed,
# such as GIT_SHA, is never taken from the layer cache.)
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN bash scripts/install-deps.sh

# Parallel compile and test jobs (prometheus-cpp, scripts/build.sh, scripts/test.sh).
ARG JOBS=2
ARG PROMETHEUS_CPP_VERSION=v1.2.4

# The metrics exporter behind server/metrics/metrics_registry.h (both serve the same series):
#   prometheus-cpp  (default) prometheus-cpp, pinned release, cloned from GitHub and built here;
#   builtin         the server's own exporter on Debian's civetweb: nothing is fetched but Debian
#                   packages, so the image builds where GitHub cannot be reached.
# aaren_build_info{exporter} says which one an image has.
ARG METRICS_EXPORTER=prometheus-cpp
# prometheus-cpp (not packaged by Debian 12): core + pull, against the distribution's civetweb;
# static libraries, so the runtime image needs no copy of them. Installed into /usr/local, where
# find_package(prometheus-cpp CONFIG) finds it. `civetweb` (the executable) is needed as well as
# libcivetweb-dev: the -dev package's CMake config imports /usr/bin/civetweb, and
# find_package(civetweb) fails without it.
RUN case "${METRICS_EXPORTER}" in \
      builtin) echo "METRICS_EXPORTER=builtin: prometheus-cpp is not fetched" ;; \
      prometheus-cpp) \
        apt-get update -qq \
        && apt-get install -y -qq --no-install-recommends ca-certificates git cmake g++ make \
             libcivetweb-dev civetweb \
        && git clone --quiet --depth 1 --branch "${PROMETHEUS_CPP_VERSION}" \
             https://github.com/jupp0r/prometheus-cpp.git /tmp/prometheus-cpp \
        && cmake -S /tmp/prometheus-cpp -B /tmp/prometheus-cpp/build -DCMAKE_BUILD_TYPE=Release \
             -DBUILD_SHARED_LIBS=OFF -DCMAKE_POSITION_INDEPENDENT_CODE=ON \
             -DENABLE_PULL=ON -DENABLE_PUSH=OFF -DENABLE_COMPRESSION=OFF -DENABLE_TESTING=OFF \
             -DUSE_THIRDPARTY_LIBRARIES=OFF -DGENERATE_PKGCONFIG=OFF \
        && cmake --build /tmp/prometheus-cpp/build -j "${JOBS}" \
        && cmake --install /tmp/prometheus-cpp/build --prefix /usr/local \
        && rm -rf /tmp/prometheus-cpp /var/lib/apt/lists/* ;; \
      *) echo "METRICS_EXPORTER must be prometheus-cpp or builtin, got '${METRICS_EXPORTER}'" >&2; \
         exit 1 ;; \
    esac

COPY . .
# -march= for the CPU code. Not "native": the image runs on machines other than the builder.
ARG AAREN_MARCH=x86-64-v3
# The commit the image is built from, for aaren_build_info (the context has no .git):
#   docker build --build-arg GIT_SHA=$(git rev-parse --short=12 HEAD) ...
ARG GIT_SHA=unknown
# The build context has no .git (.dockerignore) and scripts/check-format.sh lists the sources
# with `git ls-files`: a throwaway index of the context gives it the same list.
RUN git init --quiet && git add --all

# Release build into build/ and every test, as CI runs them. The KServe v2 tests install
# tritonclient from PyPI into a virtualenv: behind a TLS-intercepting proxy, mount the CA bundle
# that trusts it at /run/aaren-pip-ca.crt for the build (podman build -v
# /etc/ssl/certs/ca-certificates.crt:/run/aaren-pip-ca.crt:ro ...; scripts/image-test.sh does),
# and pip uses it.
RUN if [ -f /run/aaren-pip-ca.crt ]; then export PIP_CERT=/run/aaren-pip-ca.crt; fi; \
    CMAKE_ARGS="-DAAREN_WITH_CUDA=${AAREN_WITH_CUDA} -DAAREN_MARCH=${AAREN_MARCH} \
-DAAREN_GIT_SHA=${GIT_SHA} \
-DAAREN_DEFAULT_MODEL_DIRS=/opt/aaren/models/demo-lm,/opt/aaren/models/demo-ts" \
    JOBS="${JOBS}" bash scripts/test.sh

RUN bash deploy/docker/stage-runtime.sh /staging/root /staging/packages.txt \
      build/server/aaren-server build/client/aaren-cli

# ---------------------------------------------------------------------------------------------
# Runtime bases: the CUDA runtime image provides libcudart and cuBLAS; libcuda comes from the
# host's driver through the NVIDIA container toolkit (docker run --gpus all).

FROM ${CUDA_RUNTIME_IMAGE} AS runtime-cuda
FROM ${CPU_RUNTIME_IMAGE} AS runtime-cpu

# ---------------------------------------------------------------------------------------------
# Runtime: the binaries, their shared libraries, the demo models, a non-root user.

FROM runtime-${BASE} AS runtime
ARG DEBIAN_FRONTEND=noninteractive
ARG VERSION=0.4.0
LABEL org.opencontainers.image.title="aaren-serve" \
      org.opencontainers.image.description="gRPC inference server for Aaren (attention as an RNN) models" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /staging/packages.txt /tmp/runtime-packages.txt
RUN apt-get update -qq \
 && xargs --arg-file=/tmp/runtime-packages.txt \
      apt-get install -y -qq --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt
COPY --from=builder /staging/root/ /
RUN ldconfig

COPY models/demo-lm /opt/aaren/models/demo-lm
COPY models/demo-ts /opt/aaren/models/demo-ts

# A fixed numeric uid, so that Kubernetes' runAsNonRoot can verify it.
RUN groupadd --gid 10001 aaren \
 && useradd --uid 10001 --gid aaren --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin aaren \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/aaren
# Mount a volume here for --state_store (README "Durability"); a new named volume takes this
# directory's owner, so the non-root server can write it.
USER 10001:10001
WORKDIR /opt/aaren

# gRPC (aaren.v1.Aaren, grpc.health.v1.Health, reflection) and Prometheus metrics (/metrics).
EXPOSE 50051 8000 8002

# SERVING once the models are loaded; NOT_SERVING while draining after SIGTERM.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["aaren-cli", "health", "--target", "localhost:50051", "--timeout", "4s"]

# SIGTERM (docker stop) drains in-flight calls for --drain_timeout (15s) and exits 0: give
# `docker stop` a longer grace period (-t 30).
ENTRYPOINT ["aaren-server"]
CMD ["--model_dir", "/opt/aaren/models/demo-lm", "--model_dir", "/opt/aaren/models/demo-ts", \
     "--host", "0.0.0.0"]
