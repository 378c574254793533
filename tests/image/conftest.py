# SPDX-License-Identifier: Apache-2.0
"""pytest setup for the container-image tests (tests/image), which scripts/image-test.sh runs
after building the image. Everything is checked from the host: the container is started with
podman, its ports are published on 127.0.0.1, and the host's Python client, promtool-free
Prometheus and /proc look at it from outside.

Environment:

* ``AAREN_IMAGE``: the image to test (required; e.g. ``aaren-serve:test-cpu``);
* ``AAREN_IMAGE_EXPORTER``: the metrics exporter the image was built with (``builtin`` or
  ``prometheus-cpp``), checked against ``aaren_build_info{exporter}``;
* ``PODMAN``: the engine's command (default ``podman``; ``docker`` works too);
* ``AAREN_SOURCE_DIR``: the repository root; ``PYTHONPATH`` must reach the generated Python stubs
  (``build/python``) and ``client/python``.

Containers are named ``aaren-image-test-<pid>-<n>`` and removed at the end, also on failure (their
logs are printed first when a test fails).
"""

from __future__ import annotations

import itertools
import shlex
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import pytest

HERE = Path(__file__).resolve().parent
REPO = Path(os.environ.get("AAREN_SOURCE_DIR") or HERE.parents[1]).resolve()
sys.path.insert(0, str(REPO / "tests" / "python_support"))
sys.path.insert(0, str(REPO / "tests" / "metrics"))
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO / "client" / "python"))

from metrics_support import free_port  # noqa: E402

IMAGE = os.environ.get("AAREN_IMAGE", "")
PODMAN = shlex.split(os.environ.get("PODMAN", "podman"))  # e.g. "sudo podman"
GRPC_PORT = 50051    # the image's EXPOSEd ports
METRICS_PORT = 8002
IMAGE_UID = 10001    # the Dockerfile's USER
DRAIN_TIMEOUT_S = 15.0  # aaren-server's default --drain_timeout

_names = itertools.count()


def engine(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    """Runs `PODMAN args...`; with check, fails the test with its output on a non-zero exit."""
    r = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        pytest.fail(f"{' '.join(PODMAN + list(args))} exited with {r.returncode}:\n{r.stdout}{r.stderr}")
    return r


@dataclass
class Container:
    name: str
    grpc_port: int     # host side of the published 50051
    metrics_port: int  # host side of the published 8002

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def inspect(self, fmt: str) -> str:
        return engine("inspect", "--format", fmt, self.name).stdout.strip()

    def running(self) -> bool:
        r = engine("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return r.returncode == 0 and r.stdout.strip() == "true"

    def logs(self) -> str:
        r = engine("logs", self.name, check=False)
        return (r.stdout + r.stderr)[-6000:]

    def exec(self, *cmd: str, check: bool = False) -> subprocess.CompletedProcess:
        return engine("exec", self.name, *cmd, check=check)

    def host_pid(self) -> int:
        return int(self.inspect("{{.State.Pid}}"))


def wait_serving(c: Container, timeout: float = 90.0) -> None:
    """Polls the gRPC health service through the published port until SERVING."""
    from aaren_client import AarenClient, AarenError

    deadline = time.monotonic() + timeout
    last: object = None
    with AarenClient(c.target) as client:
        while True:
            if not c.running():
                pytest.fail(f"container {c.name} stopped before SERVING:\n{c.logs()}")
            try:
                last = client.health(timeout=2.0)
                if last == "SERVING":
                    return
            except AarenError as e:
                last = e
            if time.monotonic() > deadline:
                pytest.fail(f"{c.name} not SERVING through {c.target} after {timeout} s "
                            f"(last: {last}):\n{c.logs()}")
            time.sleep(0.1)


@pytest.fixture(scope="session")
def image() -> str:
    if not IMAGE:
        pytest.fail("AAREN_IMAGE is not set (scripts/image-test.sh sets it)")
    if shutil.which(PODMAN[-1]) is None:
        pytest.fail(f"{PODMAN[-1]} is not installed")
    engine("image", "inspect", "--format", "{{.Id}}", IMAGE)
    return IMAGE


@pytest.fixture(scope="session")
def start_container(image, request):
    """start(server_args=None, volumes=()) -> a running, SERVING Container of the image.
    server_args replace the image's CMD; volumes are `-v` specs. All are removed at the end."""
    started: List[Container] = []

    def start(server_args: Optional[List[str]] = None, volumes=()) -> Container:
        c = Container(f"aaren-image-test-{os.getpid()}-{next(_names)}", free_port(), free_port())
        cmd = ["run", "--detach", "--name", c.name,
               "--publish", f"127.0.0.1:{c.grpc_port}:{GRPC_PORT}",
               "--publish", f"127.0.0.1:{c.metrics_port}:{METRICS_PORT}"]
        for v in volumes:
            cmd += ["--volume", v]
        started.append(c)
        engine(*cmd, image, *(server_args or []))
        wait_serving(c)
        return c

    yield start
    for c in started:
        if request.session.testsfailed:
            print(f"\n---- logs of {c.name} ----\n{c.logs()}")
        engine("rm", "--force", c.name, check=False)


@pytest.fixture(scope="session")
def demo(start_container) -> Container:
    """The image as `docker run` starts it: its CMD, the bundled demo models."""
    return start_container()
