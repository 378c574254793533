# SPDX-License-Identifier: Apache-2.0
"""The REST port's HTTP transport: what it refuses before reading a body, and what it serves.

Raw ``http.client`` requests (headers tritonclient never sends) against the shared server: a
method other than GET/HEAD/POST is 405, a body of unknown size (chunked, compressed) is 411/415,
a Content-Length over the body limit is 413 at once (the body is never sent), a path outside /v2
is 404, JSON the v2 forms cannot hold is 400 naming the field; a JSON body far over cpp-httplib's
8 KiB form limit is served; each error is Triton's ``{"error": ...}`` object, and the server keeps
serving after all of them.
"""
import http.client
import json
import socket

import numpy as np
import pytest

from kserve_support import http_get, rel_err, TOLERANCE

LM = "demo-lm"


def _conn(rest_base: str) -> http.client.HTTPConnection:
    host, port = rest_base.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=10)


def _request(rest_base, method, path, body=None, headers=None):
    c = _conn(rest_base)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


def _error(body: bytes) -> str:
    doc = json.loads(body)
    assert set(doc) == {"error"}, doc
    return doc["error"]


def _infer_body(tokens):
    return json.dumps({"inputs": [{"name": "TOKENS", "shape": [len(tokens)], "datatype": "INT32",
                                   "data": list(tokens)}]}).encode()


@pytest.fixture(autouse=True)
def _server_still_serves(rest_base):
    yield
    status, _, _ = http_get(rest_base + "/v2/health/ready")
    assert status == 200, "the REST port stopped serving after this test's requests"


@pytest.mark.parametrize("method", ["PATCH", "DELETE", "PUT", "OPTIONS"])
def test_other_methods_are_405(rest_base, method):
    status, _, body = _request(rest_base, method, f"/v2/models/{LM}/infer", body=b"{}")
    assert status == 405, body
    assert method in _error(body)


def test_chunked_body_is_411(rest_base):
    c = _conn(rest_base)
    try:
        c.putrequest("POST", f"/v2/models/{LM}/infer")
        c.putheader("Transfer-Encoding", "chunked")
        c.putheader("Content-Type", "application/json")
        c.endheaders()
        c.send(b"2\r\n{}\r\n0\r\n\r\n")
        r = c.getresponse()
        status, body = r.status, r.read()
    finally:
        c.close()
    assert status == 411, body
    assert "Content-Length" in _error(body)


def test_compressed_body_is_415(rest_base):
    status, _, body = _request(rest_base, "POST", f"/v2/models/{LM}/infer", body=b"\x1f\x8b",
                               headers={"Content-Encoding": "gzip"})
    assert status == 415, body
    assert "Content-Encoding" in _error(body)


def test_content_length_over_the_limit_is_413_before_the_body(rest_base):
    # Headers only: the server must answer without waiting for 10^12 bytes.
    with socket.create_connection(tuple_addr(rest_base), timeout=10) as s:
        s.sendall((f"POST /v2/models/{LM}/infer HTTP/1.1\r\nHost: x\r\n"
                   "Content-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n")
                  .encode())
        head = _read_response(s)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert b"error" in head


def test_unparsable_content_length_is_refused(rest_base):
    with socket.create_connection(tuple_addr(rest_base), timeout=10) as s:
        s.sendall((f"POST /v2/models/{LM}/infer HTTP/1.1\r\nHost: x\r\n"
                   "Content-Length: 12abc\r\n\r\n").encode())
        head = _read_response(s)
    assert head.split(b" ")[1] in (b"400", b"413"), head[:200]


@pytest.mark.parametrize("path", ["/", "/metrics", "/v1/models/demo-lm", "/v2x/health/live",
                                  "/v2/models/%ff/ready", "/v2/nothing-here"])
def test_paths_outside_the_api_are_404(rest_base, path):
    status, _, body = _request(rest_base, "GET", path)
    assert status in (400, 404), (path, status, body)
    _error(body)


@pytest.mark.parametrize("doc, field", [
    ({"inputs": [{"name": "TOKENS", "shape": [1], "datatype": "INT32", "data": [{"a": 1}]}]},
     "inputs[0].data"),
    ({"inputs": [{"name": "TOKENS", "shape": [1], "datatype": "INT32",
                  "data": [18446744073709551615]}]}, "inputs[0].data"),
    ({"inputs": [{"name": "FEATURES", "shape": [1, 8], "datatype": "FP32",
                  "data": [1e300] * 8}]}, "inputs[0].data"),
    ({"inputs": {"name": "TOKENS"}}, "inputs"),
    ({"inputs": [{"name": "TOKENS", "shape": "2", "datatype": "INT32", "data": [1, 2]}]},
     "inputs[0].shape"),
])
def test_json_the_v2_forms_cannot_hold_is_400_naming_the_field(rest_base, doc, field):
    model = "demo-ts" if doc["inputs"] and isinstance(doc["inputs"], list) and \
        doc["inputs"][0]["name"] == "FEATURES" else LM
    status, _, body = _request(rest_base, "POST", f"/v2/models/{model}/infer",
                               body=json.dumps(doc).encode(),
                               headers={"Content-Type": "application/json"})
    assert status == 400, body
    assert field in _error(body), body


def test_invalid_json_is_400(rest_base):
    status, _, body = _request(rest_base, "POST", f"/v2/models/{LM}/infer", body=b'{"inputs": [',
                               headers={"Content-Type": "application/json"})
    assert status == 400, body
    _error(body)


def test_a_json_body_far_over_8_kib_is_served(rest_base, aaren):
    rng = np.random.default_rng()
    x = rng.integers(0, 43, size=6000).tolist()
    body = _infer_body(x)
    assert len(body) > 16 * 1024
    status, _, resp = _request(rest_base, "POST", f"/v2/models/{LM}/infer", body=body,
                               headers={"Content-Type": "application/json"})
    assert status == 200, resp[:500]
    (out,) = json.loads(resp)["outputs"]
    got = np.asarray(out["data"], np.float32).reshape(len(x), -1)
    assert rel_err(got, aaren.score_one(LM, x)) < TOLERANCE


def test_keep_alive_serves_several_requests_on_one_connection(rest_base):
    c = _conn(rest_base)
    try:
        for i in range(5):
            c.request("POST", f"/v2/models/{LM}/infer", body=_infer_body([1, 2, i]),
                      headers={"Content-Type": "application/json"})
            r = c.getresponse()
            assert r.status == 200, r.read()
            json.loads(r.read())
        c.request("GET", "/v2/health/live")
        assert c.getresponse().status == 200
    finally:
        c.close()


def tuple_addr(rest_base: str):
    host, port = rest_base.removeprefix("http://").split(":")
    return host, int(port)


def _read_response(s: socket.socket) -> bytes:
    """The reply's bytes until the server closes or 64 KiB arrive."""
    data = b""
    while len(data) < 65536:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        data += chunk
        if b"\r\n\r\n" in data:
            head, _, rest = data.partition(b"\r\n\r\n")
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    if len(rest) >= int(line.split(b":")[1]):
                        return data
    return data
