# SPDX-License-Identifier: Apache-2.0
"""pytest setup for the KServe v2 / Triton protocol suite (run.sh runs it in the tritonclient
virtualenv made by scripts/tritonclient-venv.sh).

Environment:

* ``AAREN_SERVER``: the ``aaren-server`` binary (the tests are skipped when unset);
* ``AAREN_SOURCE_DIR``: the repository root (default: two levels above this directory);
* ``PYTHONPATH``: the generated stubs ``<build>/python`` and ``client/python`` (aaren_client, the
  aaren.v1 reference side);
* ``AAREN_ORACLE_PYTHON``: an interpreter with torch for the float64 oracle (default
  /usr/bin/python3);
* ``AAREN_TRITON_VENV``, ``AAREN_PERF_ANALYZER_LD_LIBRARY_PATH``: set by run.sh (perf_analyzer
  and the directory of its libcudart.so.12).

Fixtures:

* ``server`` (session): ``aaren-server --host 127.0.0.1 --port 0 --port_file ... --metrics_port 0
  --threads 2`` on the demo models, plus ``--http_port <free port>`` when the binary has REST
  (``aaren-server --help=http_port``); SIGTERMed at the end (exit status 0 asserted);
* ``ttl_server`` (session, started on first use): the same with ``--session_idle_ttl 1s``;
* ``ack_server`` (session, started on first use): the same with ``--durability ack`` over
  RocksDB and ``--max_message_bytes 1048576``;
* ``rest``: whether the binary serves REST (``--http_port``);
* ``transport`` (``grpc``, ``http``; http skipped without REST) and ``v2``: a tritonclient client
  of that transport on ``server`` (``kserve_support.V2``);
* ``rest_base``: ``http://127.0.0.1:PORT`` of ``server``'s REST API (skipped without REST);
* ``aaren``: an ``AarenClient`` (aaren.v1) on ``server``; ``oracle``: the float64 oracle.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python_support"))
sys.path.insert(0, str(HERE))
from aaren_test_server import (SERVER_EXE, ServerProcess, setup_import_paths,  # noqa: E402
                               start_server as _start_process, stop_server as _stop)
from kserve_support import REST_SKIP, V2, Oracle, free_port, http_get, wait_until  # noqa: E402

setup_import_paths()

if not SERVER_EXE:
    # Nothing to test against: skip everything (collection included).
    collect_ignore_glob = ["test_*.py"]

def server_has_rest(exe: str) -> bool:
    """Whether the binary knows --http_port (absl's --help=SUBSTRING lists matching flags)."""
    r = subprocess.run([exe, "--help=http_port"], capture_output=True, text=True, timeout=60)
    return "--http_port" in (r.stdout + r.stderr)


class Server(ServerProcess):
    http_port: int = 0

    @property
    def grpc_url(self) -> str:
        return self.target

    @property
    def http_url(self) -> str:
        assert self.http_port, "this server has no REST port"
        return f"127.0.0.1:{self.http_port}"

    def url(self, transport: str) -> str:
        return self.grpc_url if transport == "grpc" else self.http_url


def start_v2_server(tmp: Path, rest: bool, extra: Optional[List[str]] = None) -> Server:
    args = ["--threads", "2"] + list(extra or [])
    http_port = 0
    if rest:
        # An explicit port on every server (the default, 8000, may be taken on a shared machine).
        # start_server passes --http_port 0 first; absl flags take the last occurrence.
        http_port = free_port()
        args += ["--http_port", str(http_port)]
    srv = _start_process(tmp, args, cls=Server)
    srv.http_port = http_port
    if http_port:
        def live():
            status, _, _ = http_get(f"http://127.0.0.1:{http_port}/v2/health/live", timeout=2)
            return status == 200
        try:
            wait_until(live, 30, f"GET /v2/health/live on port {http_port}")
        except BaseException:
            srv.proc.kill()
            srv.proc.wait()
            print(srv.log_tail(), file=sys.stderr)
            raise
    return srv


@pytest.fixture(scope="session")
def rest() -> bool:
    return server_has_rest(SERVER_EXE)


@pytest.fixture(scope="session")
def server(tmp_path_factory, rest):
    srv = start_v2_server(tmp_path_factory.mktemp("aaren-server"), rest)
    yield srv
    _stop(srv)


@pytest.fixture(scope="session")
def ttl_server(tmp_path_factory, rest):
    """Sessions expire after 1 s idle (the expiry sweep runs every second)."""
    srv = start_v2_server(tmp_path_factory.mktemp("aaren-server-ttl"), rest,
                          ["--session_idle_ttl", "1s"])
    yield srv
    _stop(srv)


@pytest.fixture(scope="session")
def ack_server(tmp_path_factory, rest):
    """--durability ack over RocksDB, with --max_message_bytes 1 MiB (replies over it are
    refused before any work)."""
    tmp = tmp_path_factory.mktemp("aaren-server-ack")
    srv = start_v2_server(tmp, rest, ["--durability", "ack", "--state_store",
                                      f"rocksdb:{tmp / 'store'}",
                                      "--max_message_bytes", str(1 << 20)])
    yield srv
    _stop(srv)


@pytest.fixture(params=["grpc", "http"])
def transport(request, rest) -> str:
    if request.param == "http" and not rest:
        pytest.skip(REST_SKIP)
    return request.param


@pytest.fixture
def rest_base(server, rest) -> str:
    """http://127.0.0.1:PORT of the shared server's REST API (skipped without REST)."""
    if not rest:
        pytest.skip(REST_SKIP)
    return f"http://{server.http_url}"


@pytest.fixture
def v2(server, transport):
    c = V2(transport, server.url(transport))
    yield c
    c.close()


@pytest.fixture(scope="session")
def aaren(server):
    from aaren_client import AarenClient

    with AarenClient(server.target, timeout=120) as c:
        yield c


@pytest.fixture(scope="session")
def oracle():
    o = Oracle(os.environ.get("AAREN_ORACLE_PYTHON", "/usr/bin/python3"))
    yield o
    o.close()
