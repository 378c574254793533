# SPDX-License-Identifier: Apache-2.0
"""StreamSession: the bidirectional Aaren.Stream RPC as a context manager."""

from __future__ import annotations

import queue
from typing import TYPE_CHECKING, Iterable, List, Optional

import grpc
import numpy as np

from ._stubs import aaren_pb2
from .client import AppendResult, _append_request
from .errors import AarenError, from_rpc_error

if TYPE_CHECKING:  # pragma: no cover
    from .client import AarenClient

__all__ = ["StreamSession"]

_CLOSE = object()


class StreamSession:
    """One Aaren.Stream call bound to one session.

    ::

        with client.stream(model="demo-lm") as s:      # creates a session (server-made id)
            logits = s.append([7, 26])                   # float32 [2, output_dim]
            print(s.session_id, s.position)              # ..., 2

    ``open()`` (done by ``with``) sends the OpenSession message: it attaches to ``session_id`` when
    it exists, or creates a session (empty ``session_id``, or ``create_if_missing``); ``session``
    holds the server's Session reply. :meth:`append` sends one append and waits for its reply (the
    outputs array; :meth:`append_result` gives the whole :class:`AppendResult`);
    :meth:`append_many` pipelines several. ``close()`` half-closes the stream and waits for the
    server's status; leaving a ``with`` block on an exception cancels the call instead. The session
    itself outlives the stream (until deleted or expired).

    The call carries the routing metadata ``aaren-session-id`` when ``session_id`` is given (attach,
    or create under a client-chosen id); a stream that creates its session under a server-made id
    carries none, since the id is unknown when the call starts.

    An error (:class:`AarenError`) ends the stream; the session keeps its state as of the last
    successful append. Not thread-safe: one thread per StreamSession.
    """

    def __init__(
        self,
        client: "AarenClient",
        model: str = "",
        session_id: str = "",
        create_if_missing: bool = False,
        idle_ttl_seconds: int = 0,
        timeout: Optional[float] = None,
    ):
        self._client = client
        self._open_request = aaren_pb2.OpenSession(
            session_id=session_id, model=model, create_if_missing=create_if_missing,
            idle_ttl_seconds=idle_ttl_seconds)
        self._timeout = timeout
        self._call = None
        self._requests: "queue.SimpleQueue" = queue.SimpleQueue()
        self._finished = False
        self.session: Optional["aaren_pb2.Session"] = None
        self.session_id: str = session_id
        self.position: Optional[int] = None
        self.last_result: Optional[AppendResult] = None

    # -- lifecycle --

    def _request_iterator(self, q: "queue.SimpleQueue"):
        while True:
            item = q.get()
            if item is _CLOSE:
                return
            yield item

    def open(self) -> "aaren_pb2.Session":
        """Opens the stream and the session; returns the Session reply."""
        if self._call is not None:
            raise RuntimeError("StreamSession is already open")
        # The routing header goes out with the call's headers, before the open message: only
        # when the id is known now (not for a session created under a server-made id).
        self._call = self._client.stub.Stream(
            self._request_iterator(self._requests), timeout=self._timeout,
            metadata=self._client._call_metadata(self._open_request.session_id))
        self._requests.put(aaren_pb2.StreamRequest(open=self._open_request))
        r = self._recv()
        if r.WhichOneof("response") != "session":
            self.cancel()
            raise AarenError(grpc.StatusCode.UNKNOWN,
                             f"Stream: expected a Session reply to open, got {r.WhichOneof('response')}")
        self.session = r.session
        self.session_id = r.session.session_id
        self.position = int(r.session.position)
        return self.session

    def close(self) -> None:
        """Half-closes the stream and waits for the server's final status (raising AarenError if
        it is not OK). Idempotent."""
        if self._call is None or self._finished:
            self._finished = True
            return
        self._finished = True
        self._requests.put(_CLOSE)
        try:
            for _ in self._call:  # replies to nothing: the server should send none
                pass
        except grpc.RpcError as e:
            raise from_rpc_error(e) from e

    def cancel(self) -> None:
        """Cancels the call (no status check)."""
        self._finished = True
        self._requests.put(_CLOSE)
        if self._call is not None:
            self._call.cancel()

    @property
    def is_open(self) -> bool:
        return self._call is not None and not self._finished

    def __enter__(self) -> "StreamSession":
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.cancel()

    # -- appends --

    def _recv(self) -> "aaren_pb2.StreamResponse":
        try:
            return next(self._call)
        except StopIteration:
            self._finished = True
            self._requests.put(_CLOSE)
            raise AarenError(grpc.StatusCode.UNKNOWN, "Stream: the server ended the stream early") from None
        except grpc.RpcError as e:
            self._finished = True
            self._requests.put(_CLOSE)
            raise from_rpc_error(e) from e

    def _check_open(self) -> None:
        if self._call is None:
            raise RuntimeError("StreamSession is not open (use `with` or call open())")
        if self._finished:
            raise RuntimeError("StreamSession is closed")

    def _send(self, inputs, expected_position, output_mode, mca) -> None:
        self._requests.put(aaren_pb2.StreamRequest(
            append=_append_request("", inputs, expected_position, output_mode, mca)))

    def _recv_append(self) -> AppendResult:
        r = self._recv()
        if r.WhichOneof("response") != "append":
            self.cancel()
            raise AarenError(grpc.StatusCode.UNKNOWN,
                             f"Stream: expected an AppendResponse, got {r.WhichOneof('response')}")
        res = AppendResult.from_proto(r.append)
        self.position = res.position
        self.last_result = res
        return res

    def append_result(self, inputs, expected_position: Optional[int] = None, output_mode="all",
                      mca=None) -> AppendResult:
        """Appends to the session and returns the whole :class:`AppendResult`."""
        self._check_open()
        self._send(inputs, expected_position, output_mode, mca)
        return self._recv_append()

    def append(self, inputs, expected_position: Optional[int] = None, output_mode="all",
               mca=None) -> np.ndarray:
        """Appends to the session; returns the outputs, float32 ``[n, output_dim]``."""
        return self.append_result(inputs, expected_position, output_mode, mca).outputs

    def append_many(self, inputs: Iterable, output_mode="all", mca=None) -> List[AppendResult]:
        """Sends every append before reading the replies (pipelined), in order."""
        self._check_open()
        n = 0
        for x in inputs:
            self._send(x, None, output_mode, mca)
            n += 1
        return [self._recv_append() for _ in range(n)]
