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

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import pytest

from metrics_support import Scrape, free_port, http_get, parse_exposition

REPO = Path(os.environ.get("AAREN_SOURCE_DIR") or Path(__file__).resolve().parents[2]).resolve()
SERVER_EXE = os.environ.get("AAREN_SERVER", "")

_client_dir = str(REPO / "client" / "python")
if _client_dir not in sys.path:
    sys.path.insert(0, _client_dir)


def _stubs_importable() -> bool:
    try:
        import aaren.v1.aaren_pb2  # noqa: F401
        return True
    except ImportError:
        return False


if not _stubs_importable() and SERVER_EXE:
    _guess = Path(SERVER_EXE).resolve().parents[1] / "python"
    if (_guess / "aaren" / "v1" / "aaren_pb2.py").is_file():
        sys.path.insert(0, str(_guess))

if not SERVER_EXE:
    # Nothing to test against: skip everything (collection included, so missing stubs are fine).
    collect_ignore_glob = ["test_*.py"]


# ---- the server process ----

@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    target: str
    metrics_port: int
    log_path: Path
    cmd: List[str]

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def scrape_text(self) -> str:
        status, body = http_get(self.metrics_url)
        assert status == 200, f"GET {self.metrics_url}: HTTP {status}\n{body[:2000]}"
        return body

    def scrape(self) -> Scrape:
        return parse_exposition(self.scrape_text())


def _read_port(port_file: Path):
    try:
        text = port_file.read_text()
    except OSError:
        return None
    s = text.strip()
    return int(s) if s.isdigit() else None


def _start(tmp: Path, metrics_port: int, extra: List[str]) -> Server:
    from aaren_client import AarenClient, AarenError

    exe = Path(SERVER_EXE)
    if not exe.is_file():
        pytest.fail(f"AAREN_SERVER={SERVER_EXE!r} is not a file")
    port_file = tmp / "port"
    log_path = tmp / "server.log"
    cmd = [str(exe), "--host", "127.0.0.1", "--port", "0", "--port_file", str(port_file),
           "--metrics_port", str(metrics_port), "--threads", "2",
           "--model_dir", str(REPO / "models" / "demo-lm"),
           "--model_dir", str(REPO / "models" / "demo-ts")] + extra
    start_timeout = float(os.environ.get("AAREN_SERVER_START_TIMEOUT", "90"))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    srv = Server(proc, 0, "", metrics_port, log_path, cmd)
    try:
        deadline = time.monotonic() + start_timeout
        # The port file: wait until it holds a number that stays the same across two reads.
        prev = None
        while True:
            if proc.poll() is not None:
                pytest.fail(f"aaren-server exited with {proc.returncode} before writing its port "
                            f"file:\n{' '.join(cmd)}\n{srv.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"aaren-server wrote no port file in {start_timeout} s:\n"
                            f"{srv.log_tail()}")
            cur = _read_port(port_file)
            if cur is not None and cur == prev:
                break
            prev = cur
            time.sleep(0.02)
        assert 0 < cur < 65536, cur
        srv.port = cur
        srv.target = f"127.0.0.1:{cur}"
        with AarenClient(srv.target) as c:
            last = None
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"aaren-server exited with {proc.returncode} before SERVING:\n"
                                f"{srv.log_tail()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"aaren-server not SERVING after {start_timeout} s "
                                f"(last: {last}):\n{srv.log_tail()}")
                try:
                    last = c.health(timeout=2.0)
                    if last == "SERVING":
                        break
                except AarenError as e:
                    last = e
                time.sleep(0.02)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    return srv


def _stop(srv: Server) -> None:
    proc = srv.proc
    assert proc.poll() is None, (f"aaren-server died during the tests ({proc.returncode}):\n"
                                 f"{srv.log_tail()}")
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"aaren-server did not exit within 60 s of SIGTERM:\n{srv.log_tail()}")
    assert rc == 0, f"aaren-server exited with {rc} after SIGTERM:\n{srv.log_tail()}"


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
