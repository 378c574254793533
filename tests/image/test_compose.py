# SPDX-License-Identifier: Apache-2.0
"""deploy/docker-compose.yml under podman-compose (Debian's 1.0.3), as far as it runs here:

* the whole file as podman-compose reads it (`--dry-run up`): every service becomes one
  `podman run` with the expected image, ports and existing bind mounts;
* the aaren service really started from the image just built (AAREN_IMAGE), on free host ports:
  SERVING, ListModels, /metrics, JSON logs; `down` removes it.

Not run here: the prometheus and grafana services (prom/prometheus and grafana/grafana cannot be
pulled without a registry; tests/deploy checks their configuration and a host Prometheus scrapes
the image in test_image.py), the `build:` section (test_image.py's image is built by
scripts/image-test.sh with the same Dockerfile and BASE=cpu), and `stop_grace_period`, which
podman-compose 1.0.3 does not pass to podman.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import IMAGE, PODMAN, REPO, Container, engine, wait_serving
from metrics_support import free_port, http_get, parse_exposition

COMPOSE_FILE = REPO / "deploy" / "docker-compose.yml"
PROJECT = f"aaren-image-test-{os.getpid()}"


def podman_compose(*args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    exe = shutil.which("podman-compose")
    if exe is None:
        pytest.fail("podman-compose (Debian package) is not installed")
    # Run with the same privileges as PODMAN (e.g. "sudo podman"), keeping the variables.
    prefix = PODMAN[:-1]
    if prefix == ["sudo"]:
        prefix = ["sudo", "--preserve-env=AAREN_IMAGE,AAREN_GRPC_PORT,AAREN_HTTP_PORT,AAREN_METRICS_PORT"]
    cmd = prefix + [exe, "-p", PROJECT, "-f", str(COMPOSE_FILE), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    if check and r.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited with {r.returncode}:\n{r.stdout}{r.stderr}")
    return r


def run_commands(dry_run_output: str) -> dict:
    """service name -> the argument list of the `podman run` podman-compose would execute."""
    runs = {}
    for line in dry_run_output.splitlines():
        if line.startswith("podman run "):
            args = shlex.split(line)[2:]
            labels = [a for a in args if a.startswith("com.docker.compose.service=")]
            runs[labels[0].split("=", 1)[1]] = args
    return runs


def flag_values(args: list, flag: str) -> list:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


@pytest.fixture
def compose_env() -> dict:
    return dict(os.environ, AAREN_IMAGE=IMAGE, AAREN_GRPC_PORT=str(free_port()),
                AAREN_HTTP_PORT=str(free_port()), AAREN_METRICS_PORT=str(free_port()))


def test_whole_file_as_podman_compose_reads_it(image, compose_env):
    r = podman_compose("--dry-run", "up", "--detach", "--no-build", env=compose_env)
    try:
        runs = run_commands(r.stdout)
        assert set(runs) == {"aaren", "prometheus", "grafana"}, r.stdout
        aaren = runs["aaren"]
        assert image in aaren, aaren
        assert flag_values(aaren, "-p") == [f"{compose_env['AAREN_GRPC_PORT']}:50051",
                                            f"{compose_env['AAREN_HTTP_PORT']}:8000",
                                            f"{compose_env['AAREN_METRICS_PORT']}:8002"]
        assert "--host=0.0.0.0" in aaren and "--log_format=json" in aaren
        assert "prom/prometheus:v2.55.1" in runs["prometheus"]
        assert "grafana/grafana:11.3.0" in runs["grafana"]
        for service, args in runs.items():
            for volume in flag_values(args, "-v"):
                source = volume.split(":")[0]
                if source.startswith("/"):
                    assert Path(source).exists(), f"{service}: {volume}"
                    assert volume.endswith(":ro"), f"{service}: config mounts are read-only"
    finally:
        # --dry-run still creates the project's network.
        engine("network", "rm", f"{PROJECT}_default", check=False)


def test_aaren_service_starts_from_the_built_image(image, compose_env):
    from aaren_client import AarenClient

    c = Container(f"{PROJECT}_aaren_1", int(compose_env["AAREN_GRPC_PORT"]),
                  int(compose_env["AAREN_METRICS_PORT"]))
    try:
        podman_compose("up", "--detach", "--no-build", "aaren", env=compose_env)
        wait_serving(c)
        with AarenClient(c.target) as client:
            assert sorted(m.name for m in client.list_models()) == ["demo-lm", "demo-ts"]
            assert client.score("demo-lm", [[1, 2, 3]])[0].shape == (3, 43)
        status, text = http_get(f"http://127.0.0.1:{c.metrics_port}/metrics")
        assert status == 200, text
        assert parse_exposition(text).value("aaren_requests_total", rpc="Score", code="OK") == 1
        # --log_format=json: every line the server wrote is a JSON object.
        lines = [l for l in engine("logs", c.name).stderr.splitlines() if l.strip()]
        lines += [l for l in engine("logs", c.name).stdout.splitlines() if l.strip()]
        assert lines and all(isinstance(json.loads(l), dict) for l in lines), lines[:5]
        assert c.inspect("{{.HostConfig.RestartPolicy.Name}}") == "unless-stopped"
    finally:
        podman_compose("down", env=compose_env, check=False)
        engine("network", "rm", f"{PROJECT}_default", check=False)
    assert engine("container", "exists", c.name, check=False).returncode != 0
