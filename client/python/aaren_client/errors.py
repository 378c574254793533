# SPDX-License-Identifier: Apache-2.0
"""Errors raised by :mod:`aaren_client`.

Every failed RPC raises an :class:`AarenError` (never a bare :class:`grpc.RpcError`): the subclass
follows the gRPC status code (:class:`InvalidArgument`, :class:`NotFound`, :class:`Aborted`, ...),
``e.code`` is the :class:`grpc.StatusCode` and ``e.details`` the server's message (which names the
offending field, e.g. ``"input.tokens[3]: token id 99 out of range [0, 43)"``). The original
:class:`grpc.RpcError` is ``e.__cause__`` (and ``e.rpc_error``).
"""

from __future__ import annotations

import re
from typing import Dict, Optional, Type

import grpc

__all__ = [
    "AarenError",
    "Cancelled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
    "from_rpc_error",
]


class AarenError(Exception):
    """A failed Aaren RPC: ``code`` (grpc.StatusCode) and ``details`` (the server's message)."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, code: grpc.StatusCode, details: str, rpc_error: Optional[grpc.RpcError] = None):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.rpc_error = rpc_error

    @property
    def message(self) -> str:
        """Alias of ``details``."""
        return self.details


class Cancelled(AarenError):
    pass


class Unknown(AarenError):
    pass


class InvalidArgument(AarenError):
    pass


class DeadlineExceeded(AarenError):
    pass


class NotFound(AarenError):
    pass


class AlreadyExists(AarenError):
    pass


class PermissionDenied(AarenError):
    pass


class ResourceExhausted(AarenError):
    pass


class FailedPrecondition(AarenError):
    pass


class Aborted(AarenError):
    """``expected_position`` did not match. ``current_position`` is the session's position as named
    in the message (best effort: None when the message does not say ``position <n>``)."""

    @property
    def current_position(self) -> Optional[int]:
        d = self.details
        m = re.search(r"current position\D{0,8}(-?\d+)", d, re.IGNORECASE)
        if m is None:
            m = re.search(r"(?:is at|now at) position\D{0,8}(-?\d+)", d, re.IGNORECASE)
        return int(m.group(1)) if m else None


class OutOfRange(AarenError):
    pass


class Unimplemented(AarenError):
    pass


class Internal(AarenError):
    pass


class Unavailable(AarenError):
    pass


class DataLoss(AarenError):
    pass


class Unauthenticated(AarenError):
    pass


_BY_CODE: Dict[grpc.StatusCode, Type[AarenError]] = {
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.UNKNOWN: Unknown,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.INTERNAL: Internal,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DATA_LOSS: DataLoss,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
}

for _code, _cls in _BY_CODE.items():
    _cls.code = _code


def from_rpc_error(e: grpc.RpcError) -> AarenError:
    """The :class:`AarenError` subclass for a :class:`grpc.RpcError` (a grpc.Call)."""
    code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
    details = e.details() if hasattr(e, "details") else str(e)
    if code is None:
        code = grpc.StatusCode.UNKNOWN
    cls = _BY_CODE.get(code, AarenError)
    return cls(code, details or "", e)
