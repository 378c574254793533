# SPDX-License-Identifier: Apache-2.0
"""Helpers of the metrics tests: a parser of the Prometheus text exposition format (0.0.4), a
free-port picker, polling and a plain HTTP GET. No third-party packages (prometheus_client is
not installed on the test machines)."""

from __future__ import annotations

import re
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Callable, Dict, FrozenSet, List, Optional, Tuple

import pytest

# ---- ports, polling, HTTP ----

def free_port() -> int:
    """A loopback TCP port that was free a moment ago (bind to 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred: Callable[[], object], timeout: float, what: str, interval: float = 0.02):
    """Polls ``pred`` until it returns something truthy (returned); fails after ``timeout`` s
    naming ``what`` and the last value seen."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def http_get(url: str, timeout: float = 10.0) -> Tuple[int, str]:
    """(status, body) of a GET; HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", errors="replace")


def get_metrics_at_once(port: int, n: int, timeout: float = 30.0) -> List[str]:
    """GETs /metrics on 127.0.0.1:port over ``n`` connections, sending every request before
    reading any response, so that the server handles them at the same moment; returns the
    bodies (each response must be 200)."""
    request = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    socks = [socket.create_connection(("127.0.0.1", port), timeout=timeout) for _ in range(n)]
    try:
        for s in socks:
            s.sendall(request)
        bodies = []
        for s in socks:
            chunks = []
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
            head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
            status = head.split(b"\r\n", 1)[0]
            assert status.split()[1:2] == [b"200"], f"GET /metrics: {status!r}"
            bodies.append(body.decode("utf-8"))
        return bodies
    finally:
        for s in socks:
            s.close()


# ---- the Prometheus text exposition format (0.0.4) ----

Labels = FrozenSet[Tuple[str, str]]

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE_RE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})?[ \t]+(\S+)(?:[ \t]+(-?\d+))?$")
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def _parse_labels(text: str, line: str) -> Labels:
    out: Dict[str, str] = {}
    pos = 0
    while pos < len(text):
        m = _LABEL_RE.match(text, pos)
        assert m is not None and m.end() > pos, f"bad label set in line {line!r}"
        name = m.group(1)
        assert name not in out, f"label {name!r} repeated in line {line!r}"
        out[name] = re.sub(r"\\.", lambda e: _UNESCAPE.get(e.group(0), e.group(0)), m.group(2))
        pos = m.end()
        if m.group(3) == "":
            break
    return frozenset(out.items())


def _parse_value(text: str, line: str) -> float:
    try:
        return float(text)  # also "+Inf", "-Inf", "NaN"
    except ValueError:
        raise AssertionError(f"bad sample value in line {line!r}") from None


@dataclass
class Scrape:
    """One parsed /metrics page: samples by (name, labels), TYPE and HELP by family."""

    text: str
    samples: Dict[Tuple[str, Labels], float] = field(default_factory=dict)
    types: Dict[str, str] = field(default_factory=dict)
    helps: Dict[str, str] = field(default_factory=dict)

    def get(self, name: str, default: Optional[float] = None, **labels: str) -> Optional[float]:
        """The value of the series with exactly these labels (``default`` when absent)."""
        return self.samples.get((name, frozenset(labels.items())), default)

    def value(self, name: str, **labels: str) -> float:
        """As :meth:`get`, but the series must exist."""
        v = self.get(name, None, **labels)
        assert v is not None, (f"no series {name}{labels or ''} in the scrape; "
                               f"{name} series: {self.series(name)}")
        return v

    def series(self, name: str) -> Dict[Labels, float]:
        """Every series of sample name ``name``: {labels: value}."""
        return {lab: v for (n, lab), v in self.samples.items() if n == name}

    def sum(self, name: str, **match: str) -> float:
        """The sum over the series of ``name`` whose labels include ``match``."""
        want = set(match.items())
        return sum(v for lab, v in self.series(name).items() if want <= set(lab))


def parse_exposition(text: str) -> Scrape:
    """Parses Prometheus text format 0.0.4: ``name{l="v",...} value [timestamp]`` lines, plus
    ``# TYPE`` / ``# HELP``; other comments and blank lines are skipped. A repeated series or
    TYPE, or a malformed line, fails the test."""
    scrape = Scrape(text)
    for line in text.split("\n"):
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("TYPE", "HELP"):
                table = scrape.types if parts[1] == "TYPE" else scrape.helps
                assert parts[2] not in table, f"second # {parts[1]} for {parts[2]}"
                table[parts[2]] = parts[3] if len(parts) > 3 else ""
            continue
        m = _SAMPLE_RE.match(line)
        assert m is not None, f"malformed sample line {line!r}"
        key = (m.group(1), _parse_labels(m.group(2) or "", line))
        assert key not in scrape.samples, f"series repeated: {line!r}"
        scrape.samples[key] = _parse_value(m.group(3), line)
    return scrape
