# SPDX-License-Identifier: Apache-2.0
"""pytest setup for the Python client's end-to-end tests.

Environment:

* ``AAREN_SERVER``: path of the ``aaren-server`` binary (the tests are skipped when unset);
* ``AAREN_SOURCE_DIR``: the repository root (default: two levels above this directory);
* ``PYTHONPATH`` (or ``AAREN_PYTHON_STUBS``): must reach the generated stubs ``<build>/python``;
  when they are not importable, ``<dir of AAREN_SERVER>/../python`` is tried;
* ``AAREN_SERVER_ARGS``: extra server flags (shell syntax), ``AAREN_SERVER_START_TIMEOUT``: seconds
  to wait for SERVING (default 90).

The session-wide ``server`` fixture starts ``aaren-server --host 127.0.0.1 --port 0 --port_file
<tmp>/port --model_dir <repo>/models/demo-lm --model_dir <repo>/models/demo-ts``, waits for the port
file and for the gRPC health check to say SERVING, and at the end stops it with SIGTERM and asserts
that it exits with status 0.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

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


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    target: str
    log_path: Path

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def _read_port(port_file: Path):
    try:
        text = port_file.read_text()
    except OSError:
        return None
    s = text.strip()
    return int(s) if s.isdigit() else None


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    from aaren_client import AarenClient, AarenError

    exe = Path(SERVER_EXE)
    if not exe.is_file():
        pytest.fail(f"AAREN_SERVER={SERVER_EXE!r} is not a file")
    tmp = tmp_path_factory.mktemp("aaren-server")
    port_file = tmp / "port"
    log_path = tmp / "server.log"
    cmd = [str(exe), "--host", "127.0.0.1", "--port", "0", "--port_file", str(port_file),
           "--metrics_port", "0",
           "--model_dir", str(REPO / "models" / "demo-lm"),
           "--model_dir", str(REPO / "models" / "demo-ts")]
    cmd += shlex.split(os.environ.get("AAREN_SERVER_ARGS", ""))
    start_timeout = float(os.environ.get("AAREN_SERVER_START_TIMEOUT", "90"))

    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    srv = Server(proc, 0, "", log_path)
    try:
        deadline = time.monotonic() + start_timeout
        # The port file: wait until it holds a number that stays the same across two reads.
        port, prev = None, None
        while True:
            if proc.poll() is not None:
                pytest.fail(f"aaren-server exited with {proc.returncode} before writing its port file:\n"
                            f"{' '.join(cmd)}\n{srv.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"aaren-server wrote no port file in {start_timeout} s:\n{srv.log_tail()}")
            cur = _read_port(port_file)
            if cur is not None and cur == prev:
                port = cur
                break
            prev = cur
            time.sleep(0.05)
        assert 0 < port < 65536, port
        srv.port = port
        srv.target = f"127.0.0.1:{port}"
        # The health check.
        with AarenClient(srv.target) as c:
            last = None
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"aaren-server exited with {proc.returncode} before SERVING:\n{srv.log_tail()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"aaren-server not SERVING after {start_timeout} s (last: {last}):\n"
                                f"{srv.log_tail()}")
                try:
                    last = c.health(timeout=2.0)
                    if last == "SERVING":
                        break
                except AarenError as e:
                    last = e
                time.sleep(0.05)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise

    yield srv

    # Graceful shutdown: SIGTERM, then exit status 0.
    assert proc.poll() is None, f"aaren-server died during the tests ({proc.returncode}):\n{srv.log_tail()}"
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"aaren-server did not exit within 60 s of SIGTERM:\n{srv.log_tail()}")
    assert rc == 0, f"aaren-server exited with {rc} after SIGTERM:\n{srv.log_tail()}"


@pytest.fixture(scope="session")
def client(server):
    from aaren_client import AarenClient

    with AarenClient(server.target, timeout=120) as c:
        yield c
