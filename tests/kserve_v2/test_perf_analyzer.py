# SPDX-License-Identifier: Apache-2.0
"""The real perf_analyzer (from the tritonclient 2.51.0 wheel) in sequence mode against the
server: gRPC with --streaming (async), unary gRPC and REST (--sync). Each run is one concurrency
level of a few 1 s windows; it must finish with status 0, report a throughput > 0 and print no
error."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tritonclient.grpc",
                    reason="no tritonclient (tests/kserve_v2/run.sh makes its virtualenv)")

import tritonclient.grpc as grpcclient  # noqa: E402

from kserve_support import LM, REST_SKIP, venv_bin  # noqa: E402

TIMEOUT_S = 90


def _perf_env():
    env = dict(os.environ)
    lib = os.environ.get("AAREN_PERF_ANALYZER_LD_LIBRARY_PATH", "")
    if not lib:
        # The virtualenv's nvidia-cuda-runtime-cu12 (libcudart.so.12), as tritonclient-venv.sh
        # prints it.
        found = sorted(Path(sys.prefix).glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib"))
        lib = str(found[0]) if found else ""
    if lib:
        env["LD_LIBRARY_PATH"] = lib + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    return env


def _request_counts(server) -> str:
    """The server's own count of LM's successful and failed requests (ModelStatistics), so that
    a failure report says whether perf_analyzer's error was the first one the server gave."""
    try:
        with grpcclient.InferenceServerClient(server.grpc_url) as c:
            s = c.get_inference_statistics(LM).model_stats[0].inference_stats
            return f"success {s.success.count}, fail {s.fail.count}"
    except Exception as e:  # noqa: BLE001 (a diagnostic only)
        return f"unavailable ({e})"


@pytest.fixture(scope="module")
def perf_analyzer():
    exe = venv_bin("perf_analyzer")
    if not exe.is_file():
        pytest.skip(f"no perf_analyzer at {exe} (scripts/tritonclient-venv.sh installs it)")
    return exe


@pytest.mark.parametrize("mode", ["grpc", "grpc-streaming", "http"])
def test_perf_analyzer_sequences(perf_analyzer, server, rest, mode):
    if mode == "http" and not rest:
        pytest.skip(REST_SKIP)
    protocol = "http" if mode == "http" else "grpc"
    url = server.http_url if protocol == "http" else server.grpc_url
    cmd = [str(perf_analyzer), "-m", LM, "-u", url, "-i", protocol,
           "--shape", "TOKENS:4", "--input-data", "zero", "--sequence-length", "8",
           "--concurrency-range", "4", "--measurement-interval", "1000",
           # Three windows within a factor of 10 count as stable: a loaded 2-core machine must
           # not turn this into a stability search.
           "--stability-percentage", "999", "--max-trials", "6"]
    if mode == "grpc-streaming":
        cmd.append("--streaming")
    else:
        # Unary gRPC and REST run synchronously. perf_analyzer's default (async) ends every
        # ongoing sequence at exit with an END sent at once on its own RPC or connection, while
        # the sequence's previous request may still be in flight: no server can order requests
        # that arrive on different connections, so an END that overtakes it deletes the
        # sequence and that request fails "must specify the START flag" (Triton's own server
        # answers the same). A stream keeps one sequence's requests in order (the server runs
        # them one after another), so --streaming keeps the async client.
        cmd.append("--sync")
    before = _request_counts(server)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=_perf_env())
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"perf_analyzer ran over {TIMEOUT_S} s: {' '.join(cmd)}\n{e.stdout}\n{e.stderr}")
    out = r.stdout + r.stderr
    errors = [line for line in out.splitlines() if re.search(r"error|failed", line, re.IGNORECASE)]
    what = (f"mode {mode}: {' '.join(cmd)}\nexit {r.returncode}\n"
            f"error lines ({len(errors)}):\n" + "\n".join(errors[:20]) +
            f"\nserver requests of {LM} before: {before}; after: {_request_counts(server)}\n"
            f"{out}\n--- server log ---\n{server.log_tail(3000)}")
    assert r.returncode == 0, what
    # perf_analyzer reports failed requests as "Thread [i] had error: ..." / "Failed to ...".
    assert not re.search(r"error|failed", out, re.IGNORECASE), what
    m = re.search(r"Throughput:\s*([0-9.]+)\s*infer/sec", out)
    assert m and float(m.group(1)) > 0, what
    m = re.search(r"Sequence count:\s*(\d+)", out)
    assert m and int(m.group(1)) > 0, what
    # The server side of the report comes from ModelStatistics.
    m = re.search(r"Successful request count:\s*(\d+)", out)
    assert m and int(m.group(1)) > 0, what
