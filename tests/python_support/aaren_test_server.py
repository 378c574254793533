# SPDX-License-Identifier: Apache-2.0
"""The real aaren-server as a child process, for the pytest suites (python_client, metrics).

Environment: ``AAREN_SERVER`` (the binary; suites skip themselves when unset),
``AAREN_SOURCE_DIR`` (repository root), ``AAREN_SERVER_START_TIMEOUT`` (seconds to wait for
SERVING, default 90). ``setup_import_paths()`` makes ``aaren_client`` and the generated stubs
importable (``<dir of AAREN_SERVER>/../python`` when PYTHONPATH does not reach them).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Type

import pytest

REPO = Path(os.environ.get("AAREN_SOURCE_DIR") or Path(__file__).resolve().parents[2]).resolve()
SERVER_EXE = os.environ.get("AAREN_SERVER", "")


def setup_import_paths() -> None:
    client_dir = str(REPO / "client" / "python")
    if client_dir not in sys.path:
        sys.path.insert(0, client_dir)
    try:
        import aaren.v1.aaren_pb2  # noqa: F401
        return
    except ImportError:
        pass
    if SERVER_EXE:
        guess = Path(SERVER_EXE).resolve().parents[1] / "python"
        if (guess / "aaren" / "v1" / "aaren_pb2.py").is_file():
            sys.path.insert(0, str(guess))


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    log_path: Path
    cmd: List[str]
    port: int = 0
    target: str = ""
    metrics_port: int = 0

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def _read_port(port_file: Path) -> Optional[int]:
    try:
        s = port_file.read_text().strip()
    except OSError:
        return None
    return int(s) if s.isdigit() else None


def start_server(tmp: Path, extra_args: List[str], metrics_port: int = 0,
                 cls: Type[ServerProcess] = ServerProcess,
                 client_kwargs: Optional[dict] = None) -> ServerProcess:
    """Starts the server on the demo models, loopback, ephemeral gRPC port; waits for SERVING.

    Returns a `cls` (a ServerProcess subclass may add helpers). ``client_kwargs`` are passed to
    the AarenClient that waits for SERVING (e.g. ``tls_ca_file`` for a TLS server)."""
    from aaren_client import AarenClient, AarenError

    exe = Path(SERVER_EXE)
    if not exe.is_file():
        pytest.fail(f"AAREN_SERVER={SERVER_EXE!r} is not a file")
    port_file = tmp / "port"
    log_path = tmp / "server.log"
    cmd = [str(exe), "--host", "127.0.0.1", "--port", "0", "--port_file", str(port_file),
           "--metrics_port", str(metrics_port), "--http_port", "0",
           "--model_dir", str(REPO / "models" / "demo-lm"),
           "--model_dir", str(REPO / "models" / "demo-ts")] + list(extra_args)
    start_timeout = float(os.environ.get("AAREN_SERVER_START_TIMEOUT", "90"))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    srv = cls(proc, log_path, cmd, metrics_port=metrics_port)
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
        with AarenClient(srv.target, **(client_kwargs or {})) as c:
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


def stop_server(srv: ServerProcess) -> None:
    """SIGTERM, then asserts the server drained and exited with status 0."""
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
