# SPDX-License-Identifier: Apache-2.0
"""AarenClient: a friendly synchronous client over the generated aaren.v1 gRPC stubs."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence as SequenceT, Union

import grpc
import numpy as np

from ._stubs import aaren_pb2, aaren_pb2_grpc, health_pb2, health_pb2_grpc
from .errors import AarenError, from_rpc_error

__all__ = [
    "AarenClient",
    "AppendResult",
    "PrefillResult",
    "ScoreResult",
    "Mca",
    "McaStats",
    "GeneratedToken",
    "GenerateStream",
    "to_sequence",
    "tokens",
    "features",
    "outputs_array",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "SESSION_ID_METADATA_KEY",
    "tls_credentials",
]

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# Routing metadata (DESIGN.md 7.3): every call that names a session carries
# ``aaren-session-id: ID`` so that a proxy in front of several replicas (nginx ``hash
# $http_aaren_session_id consistent``, Envoy ring_hash; deploy/) keeps a session on one replica.
SESSION_ID_METADATA_KEY = "aaren-session-id"

# The longest id the server accepts (ids match [A-Za-z0-9._-]{1,128}).
_MAX_SESSION_ID_LENGTH = 128


def _routable_session_id(session_id) -> bool:
    """Whether ``session_id`` goes out as the routing header: a non-empty str of at most 128
    printable ASCII characters (a legal gRPC metadata value). Any other id is one the server
    rejects anyway; sending no header lets the server's own error come back."""
    return (isinstance(session_id, str) and 0 < len(session_id) <= _MAX_SESSION_ID_LENGTH
            and all(" " <= c <= "~" for c in session_id))

# `timeout=_DEFAULT` means "the client's default timeout".
_DEFAULT: Any = object()

SequenceLike = Union["aaren_pb2.Sequence", SequenceT[int], SequenceT[SequenceT[float]], np.ndarray]

_OUTPUT_MODES = {
    "all": aaren_pb2.OUTPUT_MODE_ALL,
    "last": aaren_pb2.OUTPUT_MODE_LAST,
    "none": aaren_pb2.OUTPUT_MODE_NONE,
}


# ---- conversions ----


def tokens(values) -> "aaren_pb2.Sequence":
    """A token Sequence from any 1-D array-like of integer ids (no range check: the server's)."""
    a = np.asarray(values)
    if a.size and a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise ValueError("tokens: values must be integers")
    return aaren_pb2.Sequence(tokens=a.astype(np.int64).reshape(-1).tolist())


def features(values) -> "aaren_pb2.Sequence":
    """A features Sequence from an array-like [n, n_features] (or flat, row-major) of floats."""
    a = np.asarray(values, dtype=np.float32)
    return aaren_pb2.Sequence(features=a.reshape(-1).tolist())


def to_sequence(x: SequenceLike) -> "aaren_pb2.Sequence":
    """Converts one input to an ``aaren.v1.Sequence``.

    * an ``aaren_pb2.Sequence``: used as is;
    * a 2-D array-like ``[n, n_features]``: features (row-major float32);
    * a 1-D array-like of integers (or an int): token ids;
    * a 1-D array-like of floats (or a float): flat features (length ``n * n_features``);
    * empty: an empty Sequence (the server rejects it).

    Use :func:`tokens` / :func:`features` to force a kind.
    """
    if isinstance(x, aaren_pb2.Sequence):
        return x
    if isinstance(x, (str, bytes, bytearray)):
        raise TypeError(f"cannot make a Sequence from {type(x).__name__}")
    a = np.asarray(x)
    if a.size == 0:
        return aaren_pb2.Sequence()
    if a.dtype == object:
        raise TypeError("cannot make a Sequence from a ragged or non-numeric array")
    if a.ndim > 2:
        raise ValueError(f"a Sequence is 1-D (tokens) or 2-D (features [n, F]); got shape {a.shape}")
    if a.ndim == 2 or a.dtype.kind in "fc":
        if a.dtype.kind == "c":
            raise TypeError("complex features are not supported")
        return features(a)
    if a.dtype.kind in "iub":
        return tokens(a)
    raise TypeError(f"cannot make a Sequence from dtype {a.dtype}")


def outputs_array(values, output_dim: int) -> np.ndarray:
    """Row-major repeated float outputs as a float32 array ``[rows, output_dim]``."""
    a = np.asarray(values, dtype=np.float32)
    if output_dim <= 0:
        return a.reshape(0, 0) if a.size == 0 else a.reshape(1, -1)
    return a.reshape(-1, int(output_dim))


def _output_mode(mode) -> int:
    if isinstance(mode, str):
        try:
            return _OUTPUT_MODES[mode.lower()]
        except KeyError:
            raise ValueError(f"output_mode must be one of {sorted(_OUTPUT_MODES)}, got {mode!r}") from None
    return int(mode)


@dataclass(frozen=True)
class Mca:
    """Monte-Carlo Attention options for a request (``mca=Mca(0.5, seed=7)``): ``alpha`` >= 0 is
    the precision knob (0: every sample, exact; larger: fewer samples, more error); the same
    ``seed`` and inputs give the same outputs however the tokens are sent."""

    alpha: float
    seed: int = 0

    def to_proto(self) -> "aaren_pb2.McaOptions":
        return aaren_pb2.McaOptions(enabled=True, alpha=float(self.alpha), seed=int(self.seed))


@dataclass(frozen=True)
class McaStats:
    """Value-projection FLOPs an operation spent, and what the exact projection costs (equal
    without MCA)."""

    value_flops: int
    value_flops_exact: int

    @property
    def fraction(self) -> float:
        """value_flops / value_flops_exact (1.0 when nothing was counted)."""
        return self.value_flops / self.value_flops_exact if self.value_flops_exact else 1.0

    @classmethod
    def from_proto(cls, s: "aaren_pb2.McaStats") -> "McaStats":
        return cls(int(s.value_flops), int(s.value_flops_exact))


def _mca(mca) -> Optional["aaren_pb2.McaOptions"]:
    """``mca=`` of every scoring / append method: None or False (the server's default), True
    (MCA with alpha 0), :class:`Mca`, a dict of McaOptions fields (``{"enabled": True,
    "alpha": 0.5, "seed": 1}``) or an ``aaren_pb2.McaOptions``."""
    if mca is None or mca is False:
        return None
    if mca is True:
        return aaren_pb2.McaOptions(enabled=True)
    if isinstance(mca, Mca):
        return mca.to_proto()
    if isinstance(mca, aaren_pb2.McaOptions):
        return mca
    if isinstance(mca, Mapping):
        return aaren_pb2.McaOptions(**mca)
    raise TypeError(f"mca: expected None, bool, Mca, dict or McaOptions, got {type(mca).__name__}")


def _append_request(session_id: str, inputs, expected_position, output_mode, mca) -> "aaren_pb2.AppendRequest":
    req = aaren_pb2.AppendRequest(
        session_id=session_id or "",
        input=to_sequence(inputs),
        output_mode=_output_mode(output_mode),
    )
    if expected_position is not None:
        req.expected_position = int(expected_position)
    m = _mca(mca)
    if m is not None:
        req.mca.CopyFrom(m)
    return req


# ---- results ----


@dataclass
class AppendResult:
    """The reply to an append: ``outputs`` is float32 ``[n, output_dim]`` (``[1, output_dim]`` for
    output_mode "last", ``[0, output_dim]`` for "none")."""

    outputs: np.ndarray
    position: int
    session_id: str
    replayed: bool
    output_dim: int
    mca_stats: Optional[McaStats] = None  # the appended tokens' value-projection FLOPs

    @classmethod
    def from_proto(cls, r: "aaren_pb2.AppendResponse") -> "AppendResult":
        return cls(
            outputs=outputs_array(r.outputs, r.output_dim),
            position=int(r.position),
            session_id=r.session_id,
            replayed=bool(r.replayed),
            output_dim=int(r.output_dim),
            mca_stats=McaStats.from_proto(r.mca_stats),
        )


@dataclass
class PrefillResult:
    """One sequence of :meth:`AarenClient.prefill`: the new session and its outputs."""

    session_id: str
    position: int
    outputs: np.ndarray
    mca_stats: Optional[McaStats] = None


@dataclass
class ScoreResult:
    """One sequence of :meth:`AarenClient.score_results`: its outputs (as :meth:`AarenClient.score`)
    and value-projection FLOPs."""

    outputs: np.ndarray
    position: int
    mca_stats: McaStats


class GeneratedToken(tuple):
    """One generated token: a ``(token, position)`` pair that also has ``.token``, ``.position``
    and ``.logprob`` (log-probability under the full softmax at temperature 1)."""

    def __new__(cls, token: int, position: int, logprob: float = 0.0):
        obj = super().__new__(cls, (int(token), int(position)))
        obj.logprob = float(logprob)
        return obj

    @property
    def token(self) -> int:
        return self[0]

    @property
    def position(self) -> int:
        return self[1]

    def __repr__(self) -> str:
        return f"GeneratedToken(token={self[0]}, position={self[1]}, logprob={self.logprob:.4f})"


class GenerateStream:
    """Iterator over a Generate call's tokens (:class:`GeneratedToken`, i.e. ``(token, position)``).

    Errors raise :class:`AarenError`. ``cancel()`` (or leaving a ``with`` block) stops the call
    early; iteration then just ends.
    """

    def __init__(self, call):
        self._call = call
        self._cancelled = False

    def __iter__(self) -> "GenerateStream":
        return self

    def __next__(self) -> GeneratedToken:
        try:
            r = next(self._call)
        except grpc.RpcError as e:
            if self._cancelled and e.code() == grpc.StatusCode.CANCELLED:
                raise StopIteration from None
            raise from_rpc_error(e) from e
        return GeneratedToken(r.token, r.position, r.logprob)

    def cancel(self) -> None:
        self._cancelled = True
        self._call.cancel()

    def __enter__(self) -> "GenerateStream":
        return self

    def __exit__(self, *exc) -> None:
        if not self._call.done():
            self.cancel()


# ---- the client ----


def tls_credentials(ca_file: Optional[str] = None, cert_file: Optional[str] = None,
                    key_file: Optional[str] = None) -> grpc.ChannelCredentials:
    """TLS channel credentials from PEM files: the CAs that verify the server (None: the system's
    roots), and this client's certificate and key for mutual TLS (both or neither)."""
    if bool(cert_file) != bool(key_file):
        raise ValueError("tls_cert_file and tls_key_file go together")

    def read(path):
        if not path:
            return None
        with open(path, "rb") as f:
            return f.read()

    return grpc.ssl_channel_credentials(root_certificates=read(ca_file),
                                        private_key=read(key_file),
                                        certificate_chain=read(cert_file))



class AarenClient:
    """Synchronous client of an Aaren Serve server (service ``aaren.v1.Aaren``).

    ``target``: ``host:port``. ``timeout``: default deadline in seconds of unary calls and
    Generate (None: no deadline; streams take their own). ``max_message_bytes``: the channel's send
    and receive limits. ``channel``: use this channel instead of making one (``target``,
    ``max_message_bytes``, ``credentials`` and ``options`` are then ignored). ``credentials``:
    grpc.ChannelCredentials for a TLS channel (default insecure). ``tls_ca_file``: a PEM file of CA
    certificates: connect with TLS and verify the server against them (a server started with
    ``--tls_cert_file``); ``tls_cert_file``/``tls_key_file``: this client's certificate and key for
    a server that requires mutual TLS. ``token``: bearer token for a server started with
    ``--auth_tokens_file``, sent as ``authorization: Bearer TOKEN`` on every call (default: the
    ``AAREN_TOKEN`` environment variable, if set). ``options``: extra channel options.

    Every call that names a session (create_session with an id, append, get/delete/fork/export
    and import_session with an id, generate, and a stream whose ``session_id`` is given) carries
    the metadata ``aaren-session-id: ID`` for proxies that route by session; calls without a
    known id (list_models, score, prefill, health, a server-made id) carry none.

    Every failed RPC raises an :class:`~aaren_client.errors.AarenError` subclass carrying
    ``code`` (grpc.StatusCode) and ``details``. Messages (ModelInfo, Session, SessionSnapshot)
    are the generated protobuf classes; outputs are numpy float32 arrays ``[n, output_dim]``.
    Use it as a context manager or call :meth:`close`. Thread-safe (as gRPC channels are), except
    for each :class:`StreamSession`.
    """

    def __init__(
        self,
        target: str = "localhost:50051",
        timeout: Optional[float] = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        *,
        channel: Optional[grpc.Channel] = None,
        credentials: Optional[grpc.ChannelCredentials] = None,
        options: Optional[List[tuple]] = None,
        tls_ca_file: Optional[str] = None,
        tls_cert_file: Optional[str] = None,
        tls_key_file: Optional[str] = None,
        token: Optional[str] = None,
    ):
        self.target = target
        self.timeout = timeout
        self.max_message_bytes = max_message_bytes
        self._own_channel = channel is None
        if token is None:
            token = os.environ.get("AAREN_TOKEN") or None
        # Sent on every call; _call_metadata adds the per-call routing header.
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        if credentials is None and (tls_ca_file or tls_cert_file or tls_key_file):
            credentials = tls_credentials(tls_ca_file, tls_cert_file, tls_key_file)
        if channel is None:
            opts = [
                ("grpc.max_send_message_length", int(max_message_bytes)),
                ("grpc.max_receive_message_length", int(max_message_bytes)),
            ]
            opts += list(options or [])
            if credentials is not None:
                channel = grpc.secure_channel(target, credentials, options=opts)
            else:
                channel = grpc.insecure_channel(target, options=opts)
        self.channel = channel
        self.stub = aaren_pb2_grpc.AarenStub(channel)
        self.health_stub = health_pb2_grpc.HealthStub(channel)
        self._models: Optional[Dict[str, Any]] = None

    # -- plumbing --

    def close(self) -> None:
        """Closes the channel (when this client made it)."""
        if self._own_channel:
            self.channel.close()

    def __enter__(self) -> "AarenClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AarenClient(target={self.target!r}, timeout={self.timeout!r})"

    def _timeout(self, timeout):
        return self.timeout if timeout is _DEFAULT else timeout

    def _call_metadata(self, session_id: str = ""):
        """The metadata of one call: ``authorization`` (with a token) and, for a call that names
        a session, ``aaren-session-id``; None when there is neither."""
        metadata = list(self._metadata or ())
        if _routable_session_id(session_id):
            metadata.append((SESSION_ID_METADATA_KEY, session_id))
        return tuple(metadata) or None

    def _unary(self, method, request, timeout, session_id: str = ""):
        try:
            return method(request, timeout=self._timeout(timeout),
                          metadata=self._call_metadata(session_id))
        except grpc.RpcError as e:
            raise from_rpc_error(e) from e

    # -- health --

    def health(self, service: str = "", timeout=_DEFAULT) -> str:
        """The standard gRPC health check: "SERVING", "NOT_SERVING", "UNKNOWN", ... for
        ``service`` ("" = the whole server, "aaren.v1.Aaren" = the service)."""
        r = self._unary(self.health_stub.Check, health_pb2.HealthCheckRequest(service=service), timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)

    def wait_until_serving(self, timeout: float = 30.0, service: str = "", poll_interval: float = 0.05) -> None:
        """Polls :meth:`health` until it says SERVING; raises TimeoutError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.target}: not SERVING after {timeout} s (last: {last})")
            try:
                last = self.health(service, timeout=min(left, 2.0))
                if last == "SERVING":
                    return
            except AarenError as e:
                last = e
            time.sleep(min(poll_interval, max(0.0, deadline - time.monotonic())))

    # -- models --

    def list_models(self, timeout=_DEFAULT) -> List["aaren_pb2.ModelInfo"]:
        """The served models (ModelInfo messages, sorted by name)."""
        r = self._unary(self.stub.ListModels, aaren_pb2.ListModelsRequest(), timeout)
        models = list(r.models)
        self._models = {m.name: m for m in models}
        return models

    def model_info(self, name: str, refresh: bool = False) -> "aaren_pb2.ModelInfo":
        """ModelInfo of one model (cached after the first ListModels). KeyError if not served."""
        if self._models is None or refresh or name not in self._models:
            self.list_models()
        try:
            return self._models[name]  # type: ignore[index]
        except KeyError:
            raise KeyError(f"model {name!r} is not served by {self.target} "
                           f"(served: {sorted(self._models or {})})") from None

    # -- scoring --

    def _score(self, model, sequences, output_mode, mca, prefill, idle_ttl_seconds, timeout):
        # `sequences` is a list of sequences (or a [B, N] token / [B, N, F] features array).
        if isinstance(sequences, aaren_pb2.Sequence) or (
                isinstance(sequences, np.ndarray) and (sequences.ndim < 2 or (
                    sequences.ndim == 2 and sequences.dtype.kind == "f"))):
            raise TypeError("`sequences` is a list of sequences; for one sequence use score_one "
                            "or pass [sequence]")
        req = aaren_pb2.ScoreRequest(
            model=model,
            sequences=[to_sequence(s) for s in sequences],
            output_mode=_output_mode(output_mode),
            prefill=prefill,
            idle_ttl_seconds=idle_ttl_seconds,
        )
        m = _mca(mca)
        if m is not None:
            req.mca.CopyFrom(m)
        return self._unary(self.stub.Score, req, timeout)

    def score(
        self,
        model: str,
        sequences: Iterable[SequenceLike],
        output_mode="all",
        mca=None,
        timeout=_DEFAULT,
    ) -> List[np.ndarray]:
        """Scores whole sequences (parallel scan, no session): one float32 array per sequence,
        ``[n, output_dim]`` (output_mode "all"), ``[1, output_dim]`` ("last") or
        ``[0, output_dim]`` ("none"). Each sequence is a list / array of token ids, or a 2-D array
        ``[n, n_features]`` (see :func:`to_sequence`)."""
        r = self._score(model, sequences, output_mode, mca, False, 0, timeout)
        return [outputs_array(x.outputs, x.output_dim) for x in r.results]

    def score_results(
        self,
        model: str,
        sequences: Iterable[SequenceLike],
        output_mode="all",
        mca=None,
        timeout=_DEFAULT,
    ) -> List[ScoreResult]:
        """:meth:`score`, also returning each sequence's :class:`McaStats` (e.g. with
        ``mca=Mca(0.5)``: how much of the exact value-projection cost was spent)."""
        r = self._score(model, sequences, output_mode, mca, False, 0, timeout)
        return [ScoreResult(outputs_array(x.outputs, x.output_dim), int(x.position),
                            McaStats.from_proto(x.mca_stats)) for x in r.results]

    def score_one(self, model: str, sequence: SequenceLike, output_mode="all", mca=None,
                  timeout=_DEFAULT) -> np.ndarray:
        """:meth:`score` of one sequence."""
        return self.score(model, [sequence], output_mode, mca, timeout)[0]

    def prefill(
        self,
        model: str,
        sequences: Iterable[SequenceLike],
        output_mode="none",
        idle_ttl_seconds: int = 0,
        mca=None,
        timeout=_DEFAULT,
    ) -> List[PrefillResult]:
        """Score with prefill: each sequence becomes a live session (server-made id) whose state is
        the sequence's final state. Returns session ids, positions and outputs."""
        r = self._score(model, sequences, output_mode, mca, True, idle_ttl_seconds, timeout)
        return [PrefillResult(x.session_id, int(x.position), outputs_array(x.outputs, x.output_dim),
                              McaStats.from_proto(x.mca_stats))
                for x in r.results]

    # -- sessions --

    def create_session(
        self,
        model: str,
        session_id: str = "",
        prefix: Optional[SequenceLike] = None,
        idle_ttl_seconds: int = 0,
        timeout=_DEFAULT,
        mca=None,
    ) -> "aaren_pb2.Session":
        """Creates a session (server-made id when ``session_id`` is empty), optionally seeded
        with ``prefix`` (one parallel-scan pass, with ``mca`` if given)."""
        req = aaren_pb2.CreateSessionRequest(model=model, session_id=session_id,
                                             idle_ttl_seconds=idle_ttl_seconds)
        if prefix is not None:
            req.prefix.CopyFrom(to_sequence(prefix))
        m = _mca(mca)
        if m is not None:
            req.mca.CopyFrom(m)
        return self._unary(self.stub.CreateSession, req, timeout, session_id)

    def append(
        self,
        session_id: str,
        inputs: SequenceLike,
        expected_position: Optional[int] = None,
        output_mode="all",
        mca=None,
        timeout=_DEFAULT,
    ) -> AppendResult:
        """Appends tokens (or feature rows) to a session. With ``expected_position``, the append
        applies only at that position and a retry of the last applied append returns the cached
        response (``replayed=True``); a mismatch raises :class:`~aaren_client.errors.Aborted`."""
        req = _append_request(session_id, inputs, expected_position, output_mode, mca)
        return AppendResult.from_proto(self._unary(self.stub.Append, req, timeout, session_id))

    def get_session(self, session_id: str, timeout=_DEFAULT) -> "aaren_pb2.Session":
        return self._unary(self.stub.GetSession, aaren_pb2.GetSessionRequest(session_id=session_id),
                           timeout, session_id)

    def delete_session(self, session_id: str, timeout=_DEFAULT) -> None:
        self._unary(self.stub.DeleteSession, aaren_pb2.DeleteSessionRequest(session_id=session_id),
                    timeout, session_id)

    def fork_session(self, session_id: str, new_session_id: str = "", idle_ttl_seconds: int = 0,
                     timeout=_DEFAULT) -> "aaren_pb2.Session":
        """Copies a session's state into a new session (server-made id when empty)."""
        req = aaren_pb2.ForkSessionRequest(session_id=session_id, new_session_id=new_session_id,
                                           idle_ttl_seconds=idle_ttl_seconds)
        return self._unary(self.stub.ForkSession, req, timeout, session_id)  # routed by the source

    def export_session(self, session_id: str, timeout=_DEFAULT) -> "aaren_pb2.SessionSnapshot":
        """The session's state as a SessionSnapshot (``.SerializeToString()`` for bytes)."""
        req = aaren_pb2.ExportSessionRequest(session_id=session_id)
        return self._unary(self.stub.ExportSession, req, timeout, session_id).snapshot

    def import_session(self, snapshot, session_id: str = "", idle_ttl_seconds: int = 0,
                       timeout=_DEFAULT) -> "aaren_pb2.Session":
        """Creates a session from a SessionSnapshot (or its serialized bytes)."""
        if isinstance(snapshot, (bytes, bytearray, memoryview)):
            snapshot = aaren_pb2.SessionSnapshot.FromString(bytes(snapshot))
        req = aaren_pb2.ImportSessionRequest(snapshot=snapshot, session_id=session_id,
                                             idle_ttl_seconds=idle_ttl_seconds)
        return self._unary(self.stub.ImportSession, req, timeout, session_id)

    # -- generation and streaming --

    def generate(
        self,
        session_id: str,
        max_tokens: int,
        temperature: float = 0.0,
        top_k: int = 0,
        seed: int = 0,
        prompt: Optional[SequenceLike] = None,
        stop_tokens: Iterable[int] = (),
        timeout=_DEFAULT,
    ) -> GenerateStream:
        """Samples ``max_tokens`` tokens into the session: an iterator of ``(token, position)``
        (:class:`GeneratedToken`, which also has ``.logprob``). temperature 0 = greedy."""
        req = aaren_pb2.GenerateRequest(
            session_id=session_id,
            max_tokens=int(max_tokens),
            temperature=float(temperature),
            top_k=int(top_k),
            seed=int(seed),
            stop_tokens=[int(t) for t in stop_tokens],
        )
        if prompt is not None:
            req.prompt.CopyFrom(to_sequence(prompt))
        try:
            call = self.stub.Generate(req, timeout=self._timeout(timeout),
                                      metadata=self._call_metadata(session_id))
        except grpc.RpcError as e:  # pragma: no cover - grpc raises on iteration
            raise from_rpc_error(e) from e
        return GenerateStream(call)

    def stream(
        self,
        model: str = "",
        session_id: str = "",
        create_if_missing: bool = False,
        idle_ttl_seconds: int = 0,
        timeout: Optional[float] = None,
    ) -> "StreamSession":
        """A :class:`StreamSession` (not yet opened; use it in a ``with`` block or call ``open``).
        Attaches to ``session_id``, or creates a session (empty id, or ``create_if_missing``)."""
        from .stream import StreamSession

        return StreamSession(self, model=model, session_id=session_id,
                             create_if_missing=create_if_missing,
                             idle_ttl_seconds=idle_ttl_seconds, timeout=timeout)


from .stream import StreamSession  # noqa: E402  (circular: stream uses the helpers above)
