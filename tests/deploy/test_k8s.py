# SPDX-License-Identifier: Apache-2.0
"""deploy/k8s: every manifest parses and has what Kubernetes and the Prometheus Operator need,
and the objects refer to each other (labels, selectors, port names) consistently: three replicas
sharing the Redis StatefulSet, the headless Service the Envoy proxy resolves, the proxy's
ConfigMap generated from deploy/envoy/envoy.yaml by deploy/kustomization.yaml (`kubectl
kustomize` builds it when kubectl is installed)."""

from __future__ import annotations

import re
import shutil
from pathlib import PurePosixPath

import pytest
import yaml

from conftest import (DEPLOY, GRPC_PORT, METRICS_PORT, REPO, load_compose, load_yaml, load_yaml_all,
                      run)

K8S = DEPLOY / "k8s"
KUSTOMIZATION = DEPLOY / "kustomization.yaml"
ENVOY_CONFIG = DEPLOY / "envoy" / "envoy.yaml"
# file -> its documents' (apiVersion, kind, name), in order.
EXPECTED_OBJECTS = {
    "deployment.yaml": [("apps/v1", "Deployment", "aaren-serve")],
    "service.yaml": [("v1", "Service", "aaren-serve")],
    "service-headless.yaml": [("v1", "Service", "aaren-serve-headless")],
    "servicemonitor.yaml": [("monitoring.coreos.com/v1", "ServiceMonitor", "aaren-serve")],
    "pdb.yaml": [("policy/v1", "PodDisruptionBudget", "aaren-serve")],
    "redis.yaml": [("apps/v1", "StatefulSet", "aaren-redis"), ("v1", "Service", "aaren-redis")],
    "redis-secret.example.yaml": [("v1", "Secret", "aaren-redis-auth")],
    "proxy-envoy.yaml": [("apps/v1", "Deployment", "aaren-proxy"),
                         ("v1", "Service", "aaren-proxy")],
}
# Left out of the kustomization on purpose (see its header).
NOT_IN_KUSTOMIZATION = {"redis-secret.example.yaml", "servicemonitor.yaml"}
REDIS_SECRET = ("aaren-redis-auth", "password")


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], dict]:
    """Every object of deploy/k8s by (kind, name)."""
    found = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in load_yaml_all(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in found, f"{key} is defined twice"
            found[key] = doc
    return found


@pytest.fixture(scope="module")
def deployment(objects):
    return objects[("Deployment", "aaren-serve")]


@pytest.fixture(scope="module")
def container(deployment):
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


@pytest.fixture(scope="module")
def service(objects):
    return objects[("Service", "aaren-serve")]


@pytest.fixture(scope="module")
def redis(objects):
    return objects[("StatefulSet", "aaren-redis")]


@pytest.fixture(scope="module")
def redis_container(redis):
    (c,) = redis["spec"]["template"]["spec"]["containers"]
    return c


@pytest.fixture(scope="module")
def proxy(objects):
    return objects[("Deployment", "aaren-proxy")]


@pytest.fixture(scope="module")
def envoy_config() -> dict:
    return load_yaml(ENVOY_CONFIG)


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_labels(workload: dict) -> dict:
    return workload["spec"]["template"]["metadata"]["labels"]


def flag(container: dict, name: str) -> str:
    """The value of --name=VALUE in the container's args (exactly one)."""
    (value,) = [a.split("=", 1)[1] for a in container["args"] if a.startswith(f"--{name}=")]
    return value


def env_secret(container: dict, name: str) -> tuple[str, str]:
    (env,) = [e for e in container.get("env", []) if e["name"] == name]
    ref = env["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


@pytest.mark.parametrize("filename", sorted(EXPECTED_OBJECTS))
def test_manifest_parses_with_required_fields(filename):
    docs = load_yaml_all(K8S / filename)
    assert [(d["apiVersion"], d["kind"], d["metadata"]["name"]) for d in docs] == \
        EXPECTED_OBJECTS[filename]
    for doc in docs:
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
        assert doc["stringData"] if doc["kind"] == "Secret" else doc["spec"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "aaren"


def test_every_manifest_is_known():
    assert {p.name for p in K8S.glob("*.yaml")} == set(EXPECTED_OBJECTS)
    assert not list(K8S.glob("*.yml")), "use .yaml for manifests"


@pytest.mark.parametrize("key", [("Deployment", "aaren-serve"), ("Deployment", "aaren-proxy"),
                                 ("StatefulSet", "aaren-redis")])
def test_workload_selector_matches_template(objects, key):
    workload = objects[key]
    assert selects(workload["spec"]["selector"]["matchLabels"], pod_labels(workload))


def test_container_ports(container):
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": GRPC_PORT, "http": 8000, "metrics": METRICS_PORT}
    args = container["args"]
    assert f"--port={GRPC_PORT}" in args and f"--metrics_port={METRICS_PORT}" in args
    assert "--http_port=8000" in args
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


def test_service_selects_the_pods_and_exposes_every_port(service, deployment):
    assert selects(service["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"])
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(ports) == {"grpc", "http", "metrics"}
    assert ports["grpc"]["port"] == GRPC_PORT and ports["metrics"]["port"] == METRICS_PORT
    assert ports["http"]["port"] == 8000  # the KServe v2 REST API (--http_port)
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    container_ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for name, port in ports.items():
        target = port.get("targetPort", port["port"])
        assert target == name or target == container_ports[name]


def test_servicemonitor_scrapes_the_metrics_port(objects, service):
    monitor = objects[("ServiceMonitor", "aaren-serve")]
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint["path"] == "/metrics"
    assert "metrics" in {p["name"] for p in service["spec"]["ports"]}
    # Only this Service: a second one selecting the same pods would scrape each of them twice.
    scraped = [name for (kind, name), doc in objects.items() if kind == "Service"
               and selects(monitor["spec"]["selector"]["matchLabels"], doc["metadata"]["labels"])]
    assert scraped == ["aaren-serve"]


def test_pdb(objects, deployment):
    pdb = objects[("PodDisruptionBudget", "aaren-serve")]
    assert pdb["spec"]["minAvailable"] == 2
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels(deployment))
    # With replicas == minAvailable a node drain would wait forever.
    assert deployment["spec"]["replicas"] > pdb["spec"]["minAvailable"]


def test_gpu_variant_is_documented():
    assert "nvidia.com/gpu" in (K8S / "deployment.yaml").read_text()


# ---- Replicas sharing Redis (DESIGN.md 7.3; deploy/README.md "Replicas") ----

def test_three_replicas_share_redis_with_ack_durability(deployment, container, objects):
    assert deployment["spec"]["replicas"] == 3
    store = flag(container, "state_store")
    m = re.fullmatch(r"redis://([a-z0-9-]+):(\d+)(/\d+)?", store)
    assert m, store
    redis_service = objects[("Service", m.group(1))]
    assert int(m.group(2)) in {p["port"] for p in redis_service["spec"]["ports"]}
    assert flag(container, "durability") == "ack"


def test_the_redis_password_file_comes_from_the_secret(deployment, container):
    path = PurePosixPath(flag(container, "state_store_password_file"))
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent)]
    assert mount.get("readOnly") is True
    (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"]
                 if v["name"] == mount["name"]]
    secret = volume["secret"]
    assert secret["secretName"] == REDIS_SECRET[0]
    assert {"key": REDIS_SECRET[1], "path": path.name} in secret["items"]
    # The pod's user is not the files' owner: they must be readable by the fsGroup.
    assert secret["defaultMode"] & 0o040


def test_rolling_update_keeps_every_replica_serving(deployment, container):
    update = deployment["spec"]["strategy"]
    assert update["type"] == "RollingUpdate"
    assert update["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    assert flag(container, "drain_timeout")


def test_no_client_ip_affinity(service):
    # Affinity is the proxy's hash of aaren-session-id now; any replica serves any session.
    assert service["spec"].get("sessionAffinity", "None") == "None"


def test_headless_service_lists_the_server_pods(objects, deployment):
    headless = objects[("Service", "aaren-serve-headless")]
    spec = headless["spec"]
    assert spec["clusterIP"] == "None"
    assert not spec.get("publishNotReadyAddresses", False)
    assert selects(spec["selector"], pod_labels(deployment))
    (port,) = spec["ports"]
    assert port["port"] == GRPC_PORT and port["targetPort"] == "grpc"


def test_envoy_finds_the_replicas_through_the_headless_service(envoy_config, objects):
    (cluster,) = envoy_config["static_resources"]["clusters"]
    assert cluster["type"] == "STRICT_DNS"
    (locality,) = cluster["load_assignment"]["endpoints"]
    (endpoint,) = locality["lb_endpoints"]
    address = endpoint["endpoint"]["address"]["socket_address"]
    headless = objects[("Service", address["address"])]
    assert headless["spec"]["clusterIP"] == "None"
    assert address["port_value"] in {p["port"] for p in headless["spec"]["ports"]}


def test_redis_statefulset_persists_an_fsynced_aof(redis, redis_container, objects):
    assert redis["spec"]["replicas"] == 1
    args = redis_container["args"]
    pairs = dict(zip(args[::2], args[1::2]))
    # Strings, not YAML booleans: an unquoted yes would not be a valid args entry.
    assert pairs["--appendonly"] == "yes"
    assert pairs["--appendfsync"] == "always"
    assert pairs["--maxmemory-policy"] == "noeviction"
    assert pairs["--requirepass"] == "$(REDIS_PASSWORD)"
    assert env_secret(redis_container, "REDIS_PASSWORD") == REDIS_SECRET
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    (mount,) = redis_container["volumeMounts"]
    assert mount["name"] == claim["metadata"]["name"] and mount["mountPath"] == pairs["--dir"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    governing = objects[("Service", redis["spec"]["serviceName"])]
    assert selects(governing["spec"]["selector"], pod_labels(redis))
    assert {p["port"] for p in governing["spec"]["ports"]} == {6379}


@pytest.mark.parametrize("probe", ["startupProbe", "readinessProbe", "livenessProbe"])
def test_redis_probes_ping_with_the_password(redis_container, probe):
    command = " ".join(redis_container[probe]["exec"]["command"])
    assert "redis-cli" in command and "ping" in command
    assert env_secret(redis_container, "REDISCLI_AUTH") == REDIS_SECRET


def test_redis_secret_example(objects):
    secret = objects[("Secret", REDIS_SECRET[0])]
    assert REDIS_SECRET[1] in secret["stringData"]


def test_proxy_serves_the_envoy_config_on_the_grpc_port(proxy, objects, envoy_config):
    (c,) = proxy["spec"]["template"]["spec"]["containers"]
    assert c["image"].startswith("envoyproxy/envoy:")
    config_path = PurePosixPath(c["args"][c["args"].index("-c") + 1])
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == str(config_path.parent)]
    (volume,) = [v for v in proxy["spec"]["template"]["spec"]["volumes"]
                 if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == "aaren-envoy"
    (listener,) = envoy_config["static_resources"]["listeners"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc": listener["address"]["socket_address"]["port_value"]}
    service = objects[("Service", "aaren-proxy")]
    assert selects(service["spec"]["selector"], pod_labels(proxy))
    (port,) = service["spec"]["ports"]
    assert port["port"] == GRPC_PORT and port["targetPort"] == "grpc"


# ---- deploy/kustomization.yaml ----

@pytest.fixture(scope="module")
def kustomization() -> dict:
    return load_yaml(KUSTOMIZATION)


def test_kustomization_lists_the_stack(kustomization):
    resources = kustomization["resources"]
    for resource in resources:
        assert (DEPLOY / resource).is_file(), resource
    listed = {PurePosixPath(r).name for r in resources if r.startswith("k8s/")}
    assert listed == set(EXPECTED_OBJECTS) - NOT_IN_KUSTOMIZATION


def test_kustomization_makes_the_envoy_configmap_from_the_one_copy(kustomization):
    (generator,) = kustomization["configMapGenerator"]
    assert generator["name"] == "aaren-envoy"
    assert generator["files"] == ["envoy.yaml=envoy/envoy.yaml"]
    assert not (K8S / "envoy.yaml").exists() and not list(K8S.rglob("envoy/*.yaml"))


def test_kustomize_build_if_kubectl_is_present():
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl is not installed")
    r = run([kubectl, "kustomize", str(DEPLOY)])
    assert r.returncode == 0, r.stdout + r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d is not None]
    (configmap,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert configmap["data"]["envoy.yaml"] == ENVOY_CONFIG.read_text(encoding="utf-8")
    # The proxy mounts the generated (hash-suffixed) name.
    (proxy,) = [d for d in docs if d["kind"] == "Deployment"
                and d["metadata"]["name"] == "aaren-proxy"]
    names = [v["configMap"]["name"] for v in proxy["spec"]["template"]["spec"]["volumes"]
             if "configMap" in v]
    assert names == [configmap["metadata"]["name"]]
