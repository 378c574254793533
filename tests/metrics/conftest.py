# SPDX-License-Identifier: Apache-2.0
"""pytest setup for the Prometheus metrics tests (test_metrics.py).

Environment (as tests/python_client):

* ``AAREN_SERVER``: path of the ``aaren-server`` binary (the tests are skipped when unset);
* ``AAREN_SOURCE_DIR``: the repository root (default: two levels above this directory);
* ``PYTHONPATH``: must reach the generated stubs ``<build>/python`` and ``client/python``; when
  the stubs are not importable, ``<dir of AAREN_SERVER>/../python`` is tried;
* ``AAREN_SERVER_START_TIMEOUT``: seconds to wait for SERVING (default 90).

Fixtures:

* ``server`` (session): ``aaren-server --host 127.0.0.1 --port 0 --port_file <tmp>/port
  --metrics_port <free port> --threads 2 --model_dir models/demo-lm --model_dir models/demo-ts
  --max_sessions 4``, started once, SIGTERMed at the end (exit status 0 asserted);
* ``client``: an ``AarenClient`` on it;
* ``start_server``: a factory for extra servers (e.g. ``--metrics_port 0``), stopped the same way;
* ``server_exe``: the binary's path.

The exposition parser and the small helpers live in metrics_support.py.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python_support"))
from aaren_test_server import (REPO, SERVER_EXE, ServerProcess, setup_import_paths,  # noqa: E402
                               start_server as _start_process, stop_server as _stop)
from metrics_support import Scrape, free_port, http_get, parse_exposition  # noqa: E402

setup_import_paths()

if not SERVER_EXE:
    # Nothing to test against: skip everything (collection included, so missing stubs are fine).
    collect_ignore_glob = ["test_*.py"]


class Server(ServerProcess):
    """A server with its metrics endpoint."""

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def scrape_text(self) -> str:
        status, body = http_get(self.metrics_url)
        assert status == 200, f"GET {self.metrics_url}: HTTP {status}\n{body[:2000]}"
        return body

    def scrape(self) -> Scrape:
        return parse_exposition(self.scrape_text())


def _start(tmp: Path, metrics_port: int, extra: List[str]) -> Server:
    return _start_process(tmp, ["--threads", "2"] + extra, metrics_port=metrics_port, cls=Server)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def server_exe() -> Path:
    exe = Path(SERVER_EXE)
    if not exe.is_file():
        pytest.fail(f"AAREN_SERVER={SERVER_EXE!r} is not a file")
    return exe


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The shared server: 4 state-pool slots, metrics on a free loopback port."""
    srv = _start(tmp_path_factory.mktemp("aaren-server"), free_port(), ["--max_sessions", "4"])
    yield srv
    _stop(srv)


@pytest.fixture(scope="session")
def client(server):
    from aaren_client import AarenClient

    with AarenClient(server.target, timeout=120) as c:
        yield c


@pytest.fixture
def start_server(tmp_path_factory):
    """start_server(metrics_port, extra_flags) -> Server; stopped (and checked) at teardown."""
    started: List[Server] = []

    def start(metrics_port: int, extra: Optional[List[str]] = None) -> Server:
        srv = _start(tmp_path_factory.mktemp("aaren-server-extra"), metrics_port, extra or [])
        started.append(srv)
        return srv

    yield start
    for srv in started:
        _stop(srv)
