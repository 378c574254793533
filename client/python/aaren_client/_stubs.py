# SPDX-License-Identifier: Apache-2.0
"""Imports the generated protobuf / gRPC modules.

They are generated at build time (CMake target ``aaren_python_stubs`` into ``<build>/python``, or
``client/python/generate_stubs.sh [DIR]``) and found on ``sys.path``: either put the directory on
``PYTHONPATH`` (``PYTHONPATH=<build>/python:<repo>/client/python``) or name it in the environment
variable ``AAREN_PYTHON_STUBS`` (``os.pathsep``-separated list), which is prepended to ``sys.path``
when this module is first imported.

Health checking uses grpcio-health-checking's ``grpc_health.v1`` when it is installed, otherwise
the copy generated as ``aaren_grpc_health.v1`` (same wire names, ``/grpc.health.v1.Health/Check``).
"""

import os
import sys

_env = os.environ.get("AAREN_PYTHON_STUBS", "")
for _p in reversed([p for p in _env.split(os.pathsep) if p]):
    if _p not in sys.path:
        sys.path.insert(0, _p)

_HINT = (
    "aaren_client: the generated stubs (module aaren.v1.aaren_pb2) were not found. Build them "
    "(cmake --build <build> --target aaren_python_stubs, or client/python/generate_stubs.sh DIR) "
    "and put the directory on PYTHONPATH (e.g. PYTHONPATH=<build>/python:<repo>/client/python) or "
    "in AAREN_PYTHON_STUBS"
)

try:
    from aaren.v1 import aaren_pb2, aaren_pb2_grpc  # noqa: F401
    from aaren.v1 import bench_pb2, bench_pb2_grpc  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(f"{_HINT} ({e})") from e

try:
    from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: F401
except ImportError:
    try:
        from aaren_grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: F401
    except ImportError as e:  # pragma: no cover
        raise ImportError(f"{_HINT} ({e})") from e

__all__ = [
    "aaren_pb2",
    "aaren_pb2_grpc",
    "bench_pb2",
    "bench_pb2_grpc",
    "health_pb2",
    "health_pb2_grpc",
]
