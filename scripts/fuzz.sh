#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the libFuzzer harnesses of tests/fuzz (request validation, snapshot import, the model
# loader) with clang, the whole project under AddressSanitizer + UndefinedBehaviorSanitizer with
# coverage, and runs each for a bounded time from its committed corpus (tests/fuzz/corpus/NAME).
# New inputs a run finds go to $FUZZ_BUILD_DIR/corpus/NAME, not into the repository. A crash, a
# sanitizer report or a broken property fails the script and leaves the input as
# $FUZZ_BUILD_DIR/crash-NAME-* (reproduce: $FUZZ_BUILD_DIR/tests/fuzz/NAME FILE).
#
#   bash scripts/fuzz.sh            # build, then AAREN_FUZZ_SECONDS (default 60) per harness
#   bash scripts/fuzz.sh --seeds    # build, then rewrite the seed corpora (commit the result)
#
# Environment: AAREN_FUZZ_SECONDS, FUZZ_BUILD_DIR (default build-fuzz), JOBS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
build=${FUZZ_BUILD_DIR:-build-fuzz}
seconds=${AAREN_FUZZ_SECONDS:-60}
sanitize="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CC=clang CXX=clang++ cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DAAREN_WITH_CUDA=OFF -DAAREN_BUILD_TESTS=OFF -DAAREN_BUILD_BENCH=OFF -DAAREN_BUILD_CLIENT=OFF \
  -DAAREN_BUILD_FUZZERS=ON \
  "-DCMAKE_CXX_FLAGS=$sanitize -fsanitize=fuzzer-no-link" \
  "-DCMAKE_EXE_LINKER_FLAGS=$sanitize" > "$build.configure.log" 2>&1 \
  || { cat "$build.configure.log"; exit 1; }
harnesses=(fuzz_requests fuzz_snapshot fuzz_model_loader)
cmake --build "$build" -j "${JOBS:-2}" --target "${harnesses[@]}" fuzz_seeds
export AAREN_SOURCE_DIR="$repo"
# Leaks at exit are the harnesses' process-wide engine, kept on purpose.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

if [ "${1:-}" = "--seeds" ]; then
  rm -rf tests/fuzz/corpus
  "$build/tests/fuzz/fuzz_seeds" tests/fuzz/corpus
  find tests/fuzz/corpus -type f | sort
  exit 0
fi

status=0
for name in "${harnesses[@]}"; do
  work="$build/corpus/$name"
  mkdir -p "$work"
  echo "fuzz: $name for ${seconds} s (corpus tests/fuzz/corpus/$name)"
  # libFuzzer caps inputs at the largest seed unless told: the loader's configs may be large
  # (a 200 KB deeply nested config.json once crashed the server).
  max_len=()
  [ "$name" = fuzz_model_loader ] && max_len=(-max_len=262144)
  if ! "$build/tests/fuzz/$name" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 \
         "${max_len[@]}" \
         -print_final_stats=1 -artifact_prefix="$build/crash-$name-" \
         "$work" "tests/fuzz/corpus/$name" > "$build/$name.log" 2>&1; then
    tail -60 "$build/$name.log"
    echo "fuzz: $name FAILED; the input is in $build/crash-$name-*" >&2
    status=1
  else
    grep -E "^stat::number_of_executed_units|^stat::new_units_added" "$build/$name.log" \
      | sed "s/^/fuzz: $name: /"
  fi
done
exit $status
