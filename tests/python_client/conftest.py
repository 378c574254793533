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
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python_support"))
from aaren_test_server import (REPO, SERVER_EXE, setup_import_paths, start_server,  # noqa: E402
                               stop_server)

setup_import_paths()

if not SERVER_EXE:
    # Nothing to test against: skip everything (collection included, so missing stubs are fine).
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("aaren-server"),
                       shlex.split(os.environ.get("AAREN_SERVER_ARGS", "")))
    yield srv
    # Graceful shutdown: SIGTERM, then exit status 0.
    stop_server(srv)


@pytest.fixture(scope="session")
def client(server):
    from aaren_client import AarenClient

    with AarenClient(server.target, timeout=120) as c:
        yield c
