# SPDX-License-Identifier: Apache-2.0
"""deploy/k8s: every manifest parses and has what Kubernetes and the Prometheus Operator need,
and the objects refer to each other (labels, selectors, port names) consistently."""

from __future__ import annotations

import re

import pytest

from conftest import DEPLOY, GRPC_PORT, METRICS_PORT, REPO, load_compose, load_yaml, load_yaml_all

K8S = DEPLOY / "k8s"
EXPECTED_KINDS = {
    "deployment.yaml": ("apps/v1", "Deployment"),
    "service.yaml": ("v1", "Service"),
    "servicemonitor.yaml": ("monitoring.coreos.com/v1", "ServiceMonitor"),
    "pdb.yaml": ("policy/v1", "PodDisruptionBudget"),
}


@pytest.fixture(scope="module")
def objects() -> dict[str, dict]:
    found = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in load_yaml_all(path):
            found[doc["kind"]] = doc
    return found


@pytest.fixture(scope="module")
def deployment(objects):
    return objects["Deployment"]


@pytest.fixture(scope="module")
def container(deployment):
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("filename", sorted(EXPECTED_KINDS))
def test_manifest_parses_with_required_fields(filename):
    docs = load_yaml_all(K8S / filename)
    assert len(docs) == 1
    (doc,) = docs
    assert (doc["apiVersion"], doc["kind"]) == EXPECTED_KINDS[filename]
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
    assert doc["spec"]


def test_every_manifest_is_known():
    assert {p.name for p in K8S.glob("*.yaml")} == set(EXPECTED_KINDS)
    assert not list(K8S.glob("*.yml")), "use .yaml for manifests"


def test_deployment_selector_matches_template(deployment):
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selects(selector, deployment["spec"]["template"]["metadata"]["labels"])


def test_container_ports(container):
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": GRPC_PORT, "metrics": METRICS_PORT}
    args = container["args"]
    assert f"--port={GRPC_PORT}" in args and f"--metrics_port={METRICS_PORT}" in args
    assert "--host=0.0.0.0" in args


def test_container_image_matches_compose_and_version(container):
    compose = load_compose()
    assert container["image"] == compose["services"]["aaren"]["image"]
    version = re.search(r"project\(aaren_serve VERSION ([0-9.]+)",
                        (REPO / "CMakeLists.txt").read_text()).group(1)
    tag = container["image"].rsplit(":", 1)[1]
    assert tag.startswith(version + "-"), f"image tag {tag} vs project version {version}"


@pytest.mark.parametrize("probe", ["readinessProbe", "livenessProbe", "startupProbe"])
def test_grpc_probes(container, probe):
    spec = container[probe]
    assert spec["grpc"]["port"] == GRPC_PORT
    assert set(spec) & {"httpGet", "tcpSocket", "exec"} == set()


def test_resources(container):
    requests = container["resources"]["requests"]
    limits = container["resources"]["limits"]
    assert requests["cpu"] and requests["memory"]
    assert limits["memory"]
    # --threads follows the CPU request: the default (one per core) counts the node's cores.
    threads = next(a for a in container["args"] if a.startswith("--threads="))
    assert threads.split("=")[1] == str(requests["cpu"])


def test_runs_as_the_image_user(deployment, container):
    pod = deployment["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] != 0
    dockerfile = (REPO / "Dockerfile").read_text()
    (user,) = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert user.split(":")[0] == str(pod["runAsUser"])
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_termination_grace_covers_the_drain(deployment, container):
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    drain = next(a for a in container["args"] if a.startswith("--drain_timeout="))
    drain_s = int(drain.split("=")[1].rstrip("s"))
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    sleep_s = int(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0
    assert grace > drain_s + sleep_s


def test_service_selects_the_pods_and_exposes_both_ports(objects, deployment):
    service = objects["Service"]
    assert selects(service["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"])
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(ports) == {"grpc", "metrics"}
    assert ports["grpc"]["port"] == GRPC_PORT and ports["metrics"]["port"] == METRICS_PORT
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    container_ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for name, port in ports.items():
        target = port.get("targetPort", port["port"])
        assert target == name or target == container_ports[name]


def test_servicemonitor_scrapes_the_metrics_port(objects):
    monitor = objects["ServiceMonitor"]
    service = objects["Service"]
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint["path"] == "/metrics"
    assert "metrics" in {p["name"] for p in service["spec"]["ports"]}


def test_pdb(objects, deployment):
    pdb = objects["PodDisruptionBudget"]
    assert pdb["spec"]["minAvailable"] == 1
    assert selects(pdb["spec"]["selector"]["matchLabels"],
                   deployment["spec"]["template"]["metadata"]["labels"])
    # With replicas == minAvailable a node drain would wait forever.
    assert deployment["spec"]["replicas"] > pdb["spec"]["minAvailable"]


def test_gpu_variant_is_documented():
    assert "nvidia.com/gpu" in (K8S / "deployment.yaml").read_text()
