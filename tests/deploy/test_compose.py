# SPDX-License-Identifier: Apache-2.0
"""deploy/docker-compose.yml: parses, has the three services with pinned images and the right
ports, builds the CPU image from the root Dockerfile, and mounts files that exist. Variables are
read with their defaults, as compose does with none of them set. (tests/image runs the file
under podman-compose.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import COMPOSE_VARIABLE, DEPLOY, GRPC_PORT, METRICS_PORT, REPO, load_compose, load_yaml

COMPOSE = DEPLOY / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


def test_variables_are_documented():
    text = COMPOSE.read_text(encoding="utf-8")
    header = "".join(l for l in text.splitlines(keepends=True) if l.startswith("#"))
    for name, _ in COMPOSE_VARIABLE.findall(text):
        assert name in header, f"{name} is not described in the file's header"


def test_services(compose):
    assert set(compose["services"]) == {"aaren", "prometheus", "grafana"}


def test_aaren_builds_the_cpu_image_from_the_root_dockerfile(compose):
    aaren = compose["services"]["aaren"]
    build = aaren["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert context == REPO
    assert (context / build.get("dockerfile", "Dockerfile")).is_file()
    assert build["args"]["BASE"] == "cpu"
    assert aaren["image"].endswith("-cpu")
    assert f"{GRPC_PORT}:{GRPC_PORT}" in aaren["ports"]
    assert f"{METRICS_PORT}:{METRICS_PORT}" in aaren["ports"]
    command = aaren.get("command", [])
    assert f"--metrics_port={METRICS_PORT}" in command or "--metrics_port" not in " ".join(command)
    assert "--host=0.0.0.0" in command, "the server must listen beyond the container's loopback"


@pytest.mark.parametrize("service,repository", [("prometheus", "prom/prometheus"),
                                                ("grafana", "grafana/grafana")])
def test_official_images_are_pinned(compose, service, repository):
    image = compose["services"][service]["image"]
    name, _, tag = image.partition(":")
    assert name == repository
    assert tag and tag != "latest" and tag.lstrip("v")[:1].isdigit(), image


def bind_mounts(service: dict) -> list[tuple[Path, str]]:
    """(source on this machine, target in the container) of each bind mount."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append(((DEPLOY / source).resolve(), target))
    return mounts


def test_bind_mounts_exist(compose):
    for name, service in compose["services"].items():
        for source, target in bind_mounts(service):
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"
            assert REPO in source.parents, f"{name}: {source} is outside the repository"
            assert target.startswith("/")


def test_named_volumes_are_declared(compose):
    declared = set(compose.get("volumes") or {})
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, source


def test_prometheus_gets_its_config_and_rules_side_by_side(compose):
    prometheus = compose["services"]["prometheus"]
    targets = {source.name: target for source, target in bind_mounts(prometheus)}
    config_flag = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config = config_flag.split("=", 1)[1]
    assert targets["prometheus.yml"] == config
    # rule_files are relative to the config file's directory.
    rules = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")["rule_files"]
    for rule_file in rules:
        assert targets[rule_file] == str(Path(config).parent / rule_file)
    assert "9090:9090" in prometheus["ports"]


def test_grafana_is_provisioned(compose):
    grafana = compose["services"]["grafana"]
    targets = {str(source.relative_to(DEPLOY)): target for source, target in bind_mounts(grafana)}
    assert targets["grafana/provisioning/datasources"] == "/etc/grafana/provisioning/datasources"
    assert targets["grafana/provisioning/dashboards"] == "/etc/grafana/provisioning/dashboards"
    assert "grafana/dashboards" in targets
    assert "3000:3000" in grafana["ports"]
    home = grafana.get("environment", {}).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert home == targets["grafana/dashboards"] + "/aaren.json"


def test_scrape_target_is_the_aaren_service(compose):
    config = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "aaren"]
    (target,) = [t for sc in job["static_configs"] for t in sc["targets"]]
    host, port = target.split(":")
    assert host in compose["services"]
    assert any(p.split(":")[-1] == port for p in compose["services"][host]["ports"])
