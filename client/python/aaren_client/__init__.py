# SPDX-License-Identifier: Apache-2.0
"""Python client of Aaren Serve (gRPC service ``aaren.v1.Aaren``).

::

    from aaren_client import AarenClient

    with AarenClient("localhost:50051") as c:
        print([m.name for m in c.list_models()])
        logits = c.score("demo-lm", [[10, 32, 23]])[0]      # float32 [3, 43]
        with c.stream(model="demo-lm") as s:
            out = s.append([10])                           # float32 [1, 43]

The generated stubs (``aaren.v1.aaren_pb2`` ...) must be importable: see ``_stubs`` (PYTHONPATH or
the AAREN_PYTHON_STUBS environment variable). Errors are :class:`AarenError` subclasses.
"""

from ._stubs import aaren_pb2, aaren_pb2_grpc, health_pb2, health_pb2_grpc
from .client import (
    DEFAULT_MAX_MESSAGE_BYTES,
    SESSION_ID_METADATA_KEY,
    AarenClient,
    AppendResult,
    GeneratedToken,
    GenerateStream,
    Mca,
    McaStats,
    PrefillResult,
    ScoreResult,
    features,
    outputs_array,
    tls_credentials,
    to_sequence,
    tokens,
)
from .errors import (
    Aborted,
    AarenError,
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    OutOfRange,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    from_rpc_error,
)
from .stream import StreamSession

__version__ = "0.2.0"

__all__ = [
    "AarenClient",
    "StreamSession",
    "AppendResult",
    "PrefillResult",
    "ScoreResult",
    "Mca",
    "McaStats",
    "GeneratedToken",
    "GenerateStream",
    "tls_credentials",
    "to_sequence",
    "tokens",
    "features",
    "outputs_array",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "SESSION_ID_METADATA_KEY",
    "AarenError",
    "InvalidArgument",
    "NotFound",
    "AlreadyExists",
    "Aborted",
    "FailedPrecondition",
    "ResourceExhausted",
    "OutOfRange",
    "PermissionDenied",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Cancelled",
    "DeadlineExceeded",
    "from_rpc_error",
    "aaren_pb2",
    "aaren_pb2_grpc",
    "health_pb2",
    "health_pb2_grpc",
]
