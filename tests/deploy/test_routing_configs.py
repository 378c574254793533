# SPDX-License-Identifier: Apache-2.0
"""The session-affinity proxies of deploy/ (DESIGN.md 7.3; deploy/README.md "Replicas"):

* deploy/envoy/envoy.yaml parses and routes every call by a ring hash of the aaren-session-id
  header, with no route timeout (long Streams), a stream idle timeout of at least an hour, one
  retry on UNAVAILABLE, HTTP/2 to the replicas, health checks and outlier detection (Envoy itself
  is not installed: structure only);
* deploy/nginx/render-config.sh turns deploy/nginx/aaren-grpc.conf into a standalone nginx.conf
  that `nginx -t` accepts, and a real nginx started from it on loopback sends every call of one
  session to one replica, spreads calls without the header over all of them, and lets one
  streaming call carry more than 64 MiB in all (nginx counts client_max_body_size over a whole
  call; upstreams are tiny in-process gRPC servers; skipped without nginx or grpcio).
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from concurrent import futures
from pathlib import Path

import pytest

from conftest import DEPLOY, GRPC_PORT, load_yaml, run

ENVOY = DEPLOY / "envoy" / "envoy.yaml"
NGINX_SNIPPET = DEPLOY / "nginx" / "aaren-grpc.conf"
RENDER = DEPLOY / "nginx" / "render-config.sh"
HEADER = "aaren-session-id"


# ---- Envoy ----

@pytest.fixture(scope="module")
def envoy() -> dict:
    return load_yaml(ENVOY)


@pytest.fixture(scope="module")
def connection_manager(envoy) -> dict:
    (listener,) = envoy["static_resources"]["listeners"]
    assert listener["address"]["socket_address"]["port_value"] == GRPC_PORT
    (chain,) = listener["filter_chains"]
    (hcm,) = chain["filters"]
    assert hcm["name"] == "envoy.filters.network.http_connection_manager"
    config = hcm["typed_config"]
    assert config["@type"].endswith("http_connection_manager.v3.HttpConnectionManager")
    return config


@pytest.fixture(scope="module")
def route(connection_manager) -> dict:
    (host,) = connection_manager["route_config"]["virtual_hosts"]
    (r,) = host["routes"]
    assert r["match"] == {"prefix": "/"}
    return r["route"]


@pytest.fixture(scope="module")
def cluster(envoy) -> dict:
    (c,) = envoy["static_resources"]["clusters"]
    return c


def seconds(duration: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)s", duration)
    assert m, f"not a proto Duration: {duration!r}"
    return float(m.group(1))


def test_envoy_listener_speaks_http2(connection_manager):
    assert connection_manager["codec_type"] == "HTTP2"
    (router,) = connection_manager["http_filters"]
    assert router["name"] == "envoy.filters.http.router"


def test_envoy_hashes_the_session_header_onto_a_ring(route, cluster):
    assert route["hash_policy"] == [{"header": {"header_name": HEADER}}]
    assert route["cluster"] == cluster["name"]
    assert cluster["lb_policy"] == "RING_HASH"


def test_envoy_lets_streams_live(route, connection_manager):
    # The default route timeout (15 s) and stream idle timeout (5 min) would end long Streams.
    assert seconds(route["timeout"]) == 0
    assert seconds(connection_manager["stream_idle_timeout"]) >= 3600


def test_envoy_retries_unavailable_once(route):
    retry = route["retry_policy"]
    conditions = retry["retry_on"].split(",")
    assert "unavailable" in conditions
    # Conditions where the call may already have been applied are not retried.
    assert not set(conditions) & {"reset", "5xx", "gateway-error", "cancelled"}
    assert retry["num_retries"] == 1


def test_envoy_cluster_talks_http2_with_health_checks_and_outlier_detection(cluster):
    options = cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert options["@type"].endswith("upstreams.http.v3.HttpProtocolOptions")
    assert "http2_protocol_options" in options["explicit_http_config"]
    assert cluster["type"] in {"STRICT_DNS", "STATIC"}
    (check,) = cluster["health_checks"]
    assert "grpc_health_check" in check
    assert cluster["outlier_detection"]


# ---- nginx ----

def render(prefix: Path, listen: str, *upstreams: str) -> Path:
    r = subprocess.run(["bash", str(RENDER), listen, *upstreams], capture_output=True, text=True,
                       timeout=30, env={"PATH": "/usr/bin:/bin", "NGINX_PREFIX": str(prefix)})
    assert r.returncode == 0, r.stderr
    conf = prefix / "nginx.conf"
    conf.write_text(r.stdout)
    return conf


@pytest.fixture(scope="module")
def nginx() -> str:
    exe = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if Path(p).is_file()), None)
    if not exe:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx-light)")
    return exe


def test_render_config_usage_errors(tmp_path):
    for args in ([], ["8080"], ["not-a-port", "127.0.0.1:1"], ["8080", "no-port"]):
        r = subprocess.run(["bash", str(RENDER), *args], capture_output=True, text=True,
                           timeout=30, env={"PATH": "/usr/bin:/bin", "NGINX_PREFIX": str(tmp_path)})
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr


def test_render_config_shellcheck_if_present():
    shellcheck = shutil.which("shellcheck")
    if not shellcheck:
        pytest.skip("shellcheck is not installed")
    r = run([shellcheck, str(RENDER)])
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_snippet_hashes_the_session_header():
    text = NGINX_SNIPPET.read_text(encoding="utf-8")
    directives = [l.split("#", 1)[0].strip() for l in text.splitlines()]
    assert "hash $http_aaren_session_id consistent;" in directives
    assert "grpc_pass grpc://aaren_replicas;" in directives
    assert "client_max_body_size 0;" in directives
    assert "grpc_next_upstream error timeout;" in directives
    for d in ("grpc_read_timeout 1h;", "grpc_send_timeout 1h;", "client_body_timeout 1h;"):
        assert d in directives


def test_rendered_config_is_the_snippet_with_other_replicas(tmp_path):
    conf = render(tmp_path, "18080", "127.0.0.1:50061", "[::1]:50062")
    rendered = conf.read_text()
    # One source of truth: every snippet line but the replaced ones is in the output.
    replaced = re.compile(r"^\s*(server \S+ max_fails|listen |access_log )")
    body = [l.strip() for l in rendered.splitlines()]
    for line in NGINX_SNIPPET.read_text(encoding="utf-8").splitlines():
        if line.strip() and not replaced.match(line):
            assert line.strip() in body, line
    assert "listen 127.0.0.1:18080 http2;" in body
    servers = [l for l in body if l.startswith("server ") and "max_fails" in l]
    assert servers == ["server 127.0.0.1:50061 max_fails=3 fail_timeout=10s;",
                       "server [::1]:50062 max_fails=3 fail_timeout=10s;"]
    assert "daemon off;" in body and "worker_processes 1;" in body
    assert f"pid {tmp_path}/nginx.pid;" in body
    assert f"access_log {tmp_path}/logs/aaren-grpc.access.log aaren_grpc;" in body
    assert (tmp_path / "logs").is_dir() and (tmp_path / "temp").is_dir()


def test_nginx_accepts_the_rendered_config(nginx, tmp_path):
    conf = render(tmp_path, "18080", "127.0.0.1:50061", "127.0.0.1:50062", "127.0.0.1:50063")
    r = run([nginx, "-t", "-p", str(tmp_path), "-c", str(conf)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "test is successful" in r.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "nginx exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"nginx is not listening on {port} after {timeout} s")


def test_nginx_keeps_each_session_on_one_replica(nginx, tmp_path):
    grpc = pytest.importorskip("grpc")

    # Each upstream answers /aaren.test.Who/Name with its own name, and /aaren.test.Who/Count
    # (client streaming) with the number of bytes it received (raw bytes, no stubs).
    def upstream(name: bytes):
        def who(request, context):
            return name

        def count(requests, context):
            return str(sum(len(r) for r in requests)).encode()
        handler = grpc.method_handlers_generic_handler(
            "aaren.test.Who", {"Name": grpc.unary_unary_rpc_method_handler(who),
                               "Count": grpc.stream_unary_rpc_method_handler(count)})
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        return server, port

    upstreams = [upstream(f"replica-{i}".encode()) for i in range(3)]
    listen = free_port()
    conf = render(tmp_path, str(listen), *(f"127.0.0.1:{port}" for _, port in upstreams))
    proc = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(conf)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_listening(listen, proc)
        with grpc.insecure_channel(f"127.0.0.1:{listen}") as channel:
            who = channel.unary_unary("/aaren.test.Who/Name")

            def replica(session_id=None) -> bytes:
                metadata = ((HEADER, session_id),) if session_id else None
                return who(b"", metadata=metadata, timeout=10)

            served = {}
            for i in range(30):
                sid = f"session-{i}"
                first = replica(sid)
                assert all(replica(sid) == first for _ in range(3)), sid
                served[sid] = first
            # Consistent hashing spreads sessions over the replicas...
            assert len(set(served.values())) >= 2, served
            # ...and calls without the header go round-robin.
            assert {replica() for _ in range(9)} == {f"replica-{i}".encode() for i in range(3)}

            # A long Stream adds up to more than the 64 MiB message limit: nginx must not cut it
            # (with client_max_body_size 64m this fails with HTTP 413 after 64 MiB).
            chunk = b"x" * (1 << 20)
            total = channel.stream_unary("/aaren.test.Who/Count")(
                iter([chunk] * 66), metadata=((HEADER, "long-stream"),), timeout=60)
            assert int(total) == 66 * len(chunk)
        log = (tmp_path / "logs" / "aaren-grpc.access.log").read_text()
        assert 'session="session-0"' in log and "upstream=127.0.0.1:" in log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for server, _ in upstreams:
            server.stop(None)
