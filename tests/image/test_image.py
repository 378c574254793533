# SPDX-License-Identifier: Apache-2.0
"""The built image, run as a user runs it and checked from the host (scripts/image-test.sh):

* the gRPC health service says SERVING through the published port, and the image's own
  HEALTHCHECK (kept by building with --format docker) passes;
* ListModels and Score through the published port on the bundled demo models, and on a model
  directory mounted read-only with -v and served with --model_dir; Score equals the independent
  float64 oracle on fresh random inputs;
* /metrics through the published port, scraped by a real Prometheus on the host;
* aaren-server runs as the image's non-root uid (seen in the host's /proc);
* SIGTERM (`podman stop`) drains and the container exits 0 within the drain timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import DRAIN_TIMEOUT_S, IMAGE_UID, REPO, engine
from metrics_support import free_port, http_get, wait_until

LM, TS = "demo-lm", "demo-ts"
EXPORTER = os.environ.get("AAREN_IMAGE_EXPORTER", "")
# Relative error (max norm) of the server's float32 outputs against the float64 oracle: the
# project's CPU-vs-oracle target (README, Numerics).
TOLERANCE = 1e-5


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def model_config(model_dir: Path) -> dict:
    return json.loads((model_dir / "config.json").read_text())


def check_score_against_oracle(target: str, model: str, model_dir: Path) -> None:
    """Scores fresh random sequences through `target` and compares them with the float64 oracle
    of the same model directory, read on the host."""
    from aaren_client import AarenClient
    from aaren_torch import load_model_dir
    from float64_oracle import oracle_forward

    seed = int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    cfg = model_config(model_dir)
    n_seq, n = 3, 48
    if cfg["input"]["kind"] == "tokens":
        x = rng.integers(0, cfg["input"]["vocab_size"], size=(n_seq, n))
        sequences = [row.tolist() for row in x]
        oracle_in = torch.from_numpy(x)
    else:
        x = rng.standard_normal((n_seq, n, cfg["input"]["n_features"])).astype(np.float32)
        sequences = list(x)
        oracle_in = torch.from_numpy(x)
    with AarenClient(target, timeout=60) as client:
        got = client.score(model, sequences)
    want, _ = oracle_forward(load_model_dir(model_dir), oracle_in)
    assert len(got) == n_seq
    for i, (g, w) in enumerate(zip(got, want.numpy())):
        assert g.shape == (n, cfg["output_dim"]), g.shape
        err = rel_err(g, w)
        assert err < TOLERANCE, f"{model} sequence {i} (seed {seed}): relative error {err:.3g}"


# ---- health ----

def test_health_serving_through_the_published_port(demo):
    from aaren_client import AarenClient

    with AarenClient(demo.target) as client:
        assert client.health() == "SERVING"
        assert client.health(service="aaren.v1.Aaren") == "SERVING"


def test_image_healthcheck_passes(demo):
    # The HEALTHCHECK survives only in the Docker image format (OCI has no such field).
    assert "aaren-cli" in demo.inspect("{{json .Config.Healthcheck}}")
    r = engine("healthcheck", "run", demo.name, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert demo.inspect("{{.State.Health.Status}}") == "healthy"


# ---- ListModels and Score: the demo models ----

def test_list_models_demo(demo):
    from aaren_client import AarenClient

    with AarenClient(demo.target) as client:
        models = {m.name: m for m in client.list_models()}
    assert sorted(models) == [LM, TS]
    for name in (LM, TS):
        cfg = model_config(REPO / "models" / name)
        d_head = cfg["d_model"] // cfg["n_heads"]
        assert models[name].state_bytes == cfg["n_layers"] * cfg["n_heads"] * (2 + d_head) * 4 + 8
        assert models[name].backend == "cpu"


@pytest.mark.parametrize("model", [LM, TS])
def test_score_demo_matches_float64_oracle(demo, model):
    check_score_against_oracle(demo.target, model, REPO / "models" / model)


# ---- a user's model directory, mounted read-only ----

@pytest.fixture(scope="module")
def user_model(start_container, tmp_path_factory):
    """demo-ts copied to a host directory under another name, mounted at /models/<name>:ro and
    served alone with --model_dir. Returns (container, host model dir, name)."""
    name = "my-model"
    host_dir = tmp_path_factory.mktemp("models") / name
    shutil.copytree(REPO / "models" / TS, host_dir)
    # The container's user (uid 10001) must be able to read it.
    host_dir.parent.chmod(0o755)
    host_dir.chmod(0o755)
    for f in host_dir.iterdir():
        f.chmod(0o644)
    c = start_container(["--model_dir", f"/models/{name}", "--host", "0.0.0.0"],
                        volumes=[f"{host_dir}:/models/{name}:ro"])
    return c, host_dir, name


def test_user_model_is_served_alone(user_model):
    from aaren_client import AarenClient

    c, _, name = user_model
    with AarenClient(c.target) as client:
        assert [m.name for m in client.list_models()] == [name]


def test_user_model_score_matches_float64_oracle(user_model):
    c, host_dir, name = user_model
    check_score_against_oracle(c.target, name, host_dir)


def test_user_model_mount_is_read_only(user_model):
    c, host_dir, name = user_model
    r = c.exec("touch", f"/models/{name}/written-by-the-container")
    assert r.returncode != 0
    assert "Read-only file system" in r.stderr, r.stderr
    assert not (host_dir / "written-by-the-container").exists()


# ---- metrics: a real Prometheus on the host scrapes the published port ----

@pytest.fixture
def prometheus(demo, tmp_path):
    exe = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(exe).is_file():
        pytest.fail("prometheus (Debian's prometheus package) is not installed")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n"
        "  - job_name: aaren-image\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{demo.metrics_port}']\n")
    log_path = tmp_path / "prometheus.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [exe, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"

    def ready():
        assert proc.poll() is None, log_path.read_text()[-4000:]
        try:
            return http_get(base + "/-/ready", timeout=2)[0] == 200
        except OSError:
            return False

    try:
        wait_until(ready, 60, "Prometheus /-/ready", interval=0.1)
        yield base, log_path
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def query(base: str, promql: str) -> list:
    status, body = http_get(f"{base}/api/v1/query?query={urllib.parse.quote(promql)}", timeout=5)
    assert status == 200, body
    return json.loads(body)["data"]["result"]


def test_metrics_scraped_by_prometheus(demo, prometheus):
    base, log_path = prometheus
    # Score calls this test makes itself, so the scraped counter must reach at least them.
    from aaren_client import AarenClient

    with AarenClient(demo.target) as client:
        for _ in range(3):
            client.score(LM, [[1, 2, 3]])
    status, text = http_get(f"http://127.0.0.1:{demo.metrics_port}/metrics")
    assert status == 200 and "aaren_requests_total" in text

    def scraped():
        up = query(base, 'up{job="aaren-image"}')
        ok = query(base, 'aaren_requests_total{job="aaren-image",rpc="Score",code="OK"}')
        done = (len(up) == 1 and up[0]["value"][1] == "1" and len(ok) == 1
                and float(ok[0]["value"][1]) >= 3)
        return (up, ok) if done else None

    try:
        wait_until(scraped, 30, "Prometheus to scrape the container (up == 1, 3 Score calls)",
                   interval=0.25)
    except BaseException:
        print(log_path.read_text(errors="replace")[-4000:])
        raise
    (info,) = query(base, 'aaren_build_info{job="aaren-image"}')
    assert info["metric"]["backend"] == "cpu"
    if EXPORTER:
        assert info["metric"]["exporter"] == EXPORTER


# ---- the process: non-root ----

def test_server_runs_as_the_non_root_user(demo):
    pid = demo.host_pid()
    proc = Path(f"/proc/{pid}")
    assert (proc / "comm").read_text().strip() == "aaren-server"
    status = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines())
    uids = [int(u) for u in status["Uid"].split()]  # real, effective, saved, filesystem
    gids = [int(g) for g in status["Gid"].split()]
    assert uids == [IMAGE_UID] * 4, uids
    assert gids == [IMAGE_UID] * 4, gids
    assert demo.inspect("{{.Config.User}}") == f"{IMAGE_UID}:{IMAGE_UID}"
    r = demo.exec("id", "-u")
    assert r.returncode == 0 and r.stdout.strip() == str(IMAGE_UID)


# ---- SIGTERM ----

def test_sigterm_drains_and_exits_zero_within_the_drain_timeout(start_container):
    c = start_container()
    t0 = time.monotonic()
    # SIGTERM, then SIGKILL only after 30 s: an exit before that is the server's own.
    engine("stop", "--time", "30", c.name, timeout=60)
    elapsed = time.monotonic() - t0
    print(f"\nSIGTERM to exit: {elapsed:.2f} s")
    assert c.inspect("{{.State.ExitCode}}") == "0", c.logs()
    assert elapsed < DRAIN_TIMEOUT_S, f"{elapsed:.1f} s"
    logs = c.logs()
    assert "draining" in logs and "stopped" in logs, logs
