# SPDX-License-Identifier: Apache-2.0
"""Helpers of the KServe v2 suite: the two tritonclient transports behind one small interface,
the demo models' shapes, fresh random inputs, relative errors, the oracle child process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pytest

REPO = Path(os.environ.get("AAREN_SOURCE_DIR") or Path(__file__).resolve().parents[2]).resolve()

# Relative error (max |a - b| / max |b|) allowed between two float32 paths of the server (v2 vs
# aaren.v1, ModelInfer vs ModelStreamInfer) and between the server and the float64 oracle.
TOLERANCE = 1e-5

LM, TS = "demo-lm", "demo-ts"

REST_SKIP = ("the aaren-server binary has no --http_port flag (REST v2 API not built yet): "
             "the HTTP half of the suite runs once it has")

# gRPC status names and the HTTP codes Triton maps them to (http_server.cc, HttpCodeFromError).
HTTP_STATUS = {"INVALID_ARGUMENT": "400", "NOT_FOUND": "404", "UNAVAILABLE": "503",
               "UNIMPLEMENTED": "501", "INTERNAL": "500", "RESOURCE_EXHAUSTED": "429",
               "DEADLINE_EXCEEDED": "504"}


def rel_err(a, b, scale=None) -> float:
    """max |a - b| over max |b|, or over ``scale`` when given: the magnitude of the whole output
    that ``b`` is a slice of (one near-zero row alone would turn float32 rounding into a large
    relative error)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, f"shapes differ: {a.shape} vs {b.shape}"
    denom = float(np.max(np.abs(b))) if scale is None else float(scale)
    return float(np.max(np.abs(a - b)) / max(denom, 1e-30))


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_seed() -> int:
    return int.from_bytes(os.urandom(4), "little")


# ---- the demo models ----

@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # "tokens" or "features"
    input_name: str
    datatype: str
    n_features: int
    vocab_size: int
    output_dim: int

    @property
    def dir(self) -> Path:
        return REPO / "models" / self.name

    @property
    def dims(self) -> List[int]:
        return [-1] if self.kind == "tokens" else [-1, self.n_features]

    def random_input(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.kind == "tokens":
            return rng.integers(0, self.vocab_size, size=n).astype(np.int32)
        return rng.standard_normal((n, self.n_features)).astype(np.float32)

    def to_aaren(self, x: np.ndarray):
        """The input as aaren_client takes it (token list, or a [n, F] float32 array)."""
        return x.tolist() if self.kind == "tokens" else np.asarray(x, np.float32)

    def to_oracle(self, x: np.ndarray):
        return x.tolist()


def model_spec(name: str) -> ModelSpec:
    cfg = json.loads((REPO / "models" / name / "config.json").read_text())
    kind = cfg["input"]["kind"]
    return ModelSpec(name=name, kind=kind,
                     input_name="TOKENS" if kind == "tokens" else "FEATURES",
                     datatype="INT32" if kind == "tokens" else "FP32",
                     n_features=int(cfg["input"].get("n_features", 0)),
                     vocab_size=int(cfg["input"].get("vocab_size", 0)),
                     output_dim=int(cfg["output_dim"]))


# ---- the oracle ----

class Oracle:
    """float64 outputs of a model for one sequence, from tests/python_support/float64_oracle.py
    run in an interpreter that has torch (a child process, started once)."""

    def __init__(self, python: str):
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(
            [python, str(Path(__file__).with_name("oracle_worker.py"))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(REPO))
        first = self._read()
        if "error" in first:
            self.close()
            pytest.fail(f"the float64 oracle cannot run in {python}: {first['error']}")

    def _read(self) -> Dict[str, Any]:
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"oracle worker exited ({self._proc.poll()})")
        return json.loads(line)

    def __call__(self, spec: ModelSpec, x: np.ndarray) -> np.ndarray:
        with self._lock:
            self._proc.stdin.write(json.dumps({"model_dir": str(spec.dir),
                                               "input": spec.to_oracle(x)}) + "\n")
            self._proc.stdin.flush()
            reply = self._read()
        if "error" in reply:
            raise RuntimeError(f"oracle: {reply['error']}")
        return np.asarray(reply["outputs"], np.float64)

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


# ---- the two transports ----

def _ints(v):
    """gRPC's JSON gives int64 as strings, REST as numbers: both become ints."""
    if isinstance(v, list):
        return [int(x) for x in v]
    return int(v)


class V2:
    """One tritonclient client (``grpc`` or ``http``) on a server, with the calls the tests use
    in a transport-neutral form. ``mod`` is the tritonclient module, ``client`` the client."""

    def __init__(self, transport: str, url: str):
        self.transport = transport
        self.url = url
        if transport == "grpc":
            import tritonclient.grpc as mod
            self.client = mod.InferenceServerClient(url)
        else:
            import tritonclient.http as mod
            self.client = mod.InferenceServerClient(url, connection_timeout=30.0,
                                                    network_timeout=60.0)
        self.mod = mod

    def close(self) -> None:
        # Explicitly: tritonclient.grpc's __del__ at interpreter exit can hang in grpcio's
        # channel close.
        self.client.close()

    # -- status codes --

    def status(self, grpc_code: str) -> str:
        """What tritonclient's InferenceServerException.status() says for this gRPC code."""
        return f"StatusCode.{grpc_code}" if self.transport == "grpc" else HTTP_STATUS[grpc_code]

    @contextmanager
    def raises(self, grpc_code: str, *fragments: str):
        """Expects an InferenceServerException with the transport's form of ``grpc_code`` and a
        message containing every fragment (case-insensitive). Yields a list that gets the
        exception."""
        from tritonclient.utils import InferenceServerException

        box: List[Any] = []
        try:
            yield box
        except InferenceServerException as e:
            box.append(e)
            want = self.status(grpc_code)
            assert e.status() == want, (f"{self.transport}: status {e.status()!r}, expected "
                                        f"{want!r} ({grpc_code}); message: {e.message()!r}")
            for f in fragments:
                assert f.lower() in (e.message() or "").lower(), (
                    f"{self.transport}: message {e.message()!r} does not mention {f!r}")
        else:
            pytest.fail(f"{self.transport}: no error; expected {grpc_code} mentioning {fragments}")

    # -- metadata --

    def model_metadata(self, model: str) -> Dict[str, Any]:
        if self.transport == "grpc":
            return self.client.get_model_metadata(model, as_json=True)
        return self.client.get_model_metadata(model)

    def model_config(self, model: str) -> Dict[str, Any]:
        if self.transport == "grpc":
            return self.client.get_model_config(model, as_json=True)["config"]
        return self.client.get_model_config(model)

    def server_metadata(self) -> Dict[str, Any]:
        if self.transport == "grpc":
            return self.client.get_server_metadata(as_json=True)
        return self.client.get_server_metadata()

    def statistics(self, model: str = "") -> List[Dict[str, Any]]:
        if self.transport == "grpc":
            r = self.client.get_inference_statistics(model, as_json=True)
        else:
            r = self.client.get_inference_statistics(model)
        return r.get("model_stats", [])

    # -- inference --

    def input(self, name: str, x: np.ndarray, datatype: str, binary: bool = True):
        t = self.mod.InferInput(name, list(x.shape), datatype)
        if self.transport == "http":
            t.set_data_from_numpy(x, binary_data=binary)
        else:
            t.set_data_from_numpy(x)
        return t

    def infer(self, spec: ModelSpec, x: np.ndarray, *, model: Optional[str] = None,
              name: Optional[str] = None, datatype: Optional[str] = None, binary: bool = True,
              binary_output: Optional[bool] = None, sequence_id=0, start: bool = False,
              end: bool = False, parameters: Optional[dict] = None, request_id: str = ""):
        """ModelInfer of one input tensor (``x`` as given: its dtype must match ``datatype``).
        Returns the OUTPUTS array."""
        inp = self.input(name or spec.input_name, x, datatype or spec.datatype, binary)
        outputs = None
        if binary_output is not None and self.transport == "http":
            outputs = [self.mod.InferRequestedOutput("OUTPUTS", binary_data=binary_output)]
        # (gRPC: a deadline, so that a server that never answers fails the test, not hangs it;
        # the HTTP client has its network_timeout.)
        timeout = {"client_timeout": 120} if self.transport == "grpc" else {}
        r = self.client.infer(model or spec.name, [inp], outputs=outputs, request_id=request_id,
                              sequence_id=sequence_id, sequence_start=start, sequence_end=end,
                              parameters=parameters, **timeout)
        out = r.as_numpy("OUTPUTS")
        assert out is not None, f"{self.transport}: no OUTPUTS in {r.get_response()}"
        return out


def http_get(url: str, timeout: float = 10.0) -> Tuple[int, Dict[str, str], bytes]:
    req = urllib.request.Request(url, method="GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def http_post(url: str, body: bytes, headers: Optional[Dict[str, str]] = None,
              timeout: float = 30.0) -> Tuple[int, Dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def wait_until(pred, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - retried
            last = e
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what} (last error: {last!r})")


def ints(v):
    return _ints(v)


def venv_bin(name: str) -> Path:
    """A program of the interpreter's virtualenv (the suite runs in the tritonclient one)."""
    venv = os.environ.get("AAREN_TRITON_VENV") or sys.prefix
    return Path(venv) / "bin" / name
