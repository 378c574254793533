# SPDX-License-Identifier: Apache-2.0
"""deploy/grafana: the dashboard parses, uses the provisioned datasource, has the panels the
issue asks for, and its queries are valid PromQL over contract metrics only."""

from __future__ import annotations

import json
import re

import pytest

from conftest import (ALL_LABELS, DEPLOY, contract_base_name, grouping_labels, load_yaml, run,
                      series_names)

GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "aaren.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "aaren.yml"


@pytest.fixture(scope="module")
def dashboard() -> dict:
    with open(DASHBOARD, encoding="utf-8") as f:
        return json.load(f)


def all_panels(dashboard: dict) -> list[dict]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return panels


def query_panels(dashboard: dict) -> list[dict]:
    return [p for p in all_panels(dashboard) if p["type"] != "row"]


def expressions(dashboard: dict) -> list[str]:
    exprs = [t["expr"] for p in query_panels(dashboard) for t in p.get("targets", [])]
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def provisioned_uid() -> str:
    (source,) = load_yaml(DATASOURCES)["datasources"]
    assert source["type"] == "prometheus"
    return source["uid"]


def test_dashboard_header(dashboard):
    assert dashboard["uid"] and dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["panels"]


def test_every_panel_and_target_uses_the_provisioned_datasource(dashboard):
    uid = provisioned_uid()
    for panel in query_panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, panel["title"]
            assert target["expr"].strip(), panel["title"]
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            assert var["datasource"]["uid"] == uid


def test_panel_layout(dashboard):
    panels = all_panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        pos = p["gridPos"]
        assert pos["w"] > 0 and pos["h"] > 0 and 0 <= pos["x"] and pos["x"] + pos["w"] <= 24
        assert p["title"]
    for p in query_panels(dashboard):
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]


def test_expressions_use_only_contract_metrics(dashboard):
    used = set()
    for expr in expressions(dashboard):
        names = series_names(expr)
        assert names, f"no aaren_ metric in {expr!r}"
        for name in names:
            base = contract_base_name(name)
            assert base, f"{name} (in {expr!r}) is not a contract metric"
            used.add(base)
        unknown = grouping_labels(expr) - ALL_LABELS
        assert not unknown, f"labels {unknown} in {expr!r} are not in the contract"
    # The dashboard shows everything but the MCA counter (always 0 until MCA exists).
    assert {"aaren_requests_total", "aaren_request_duration_seconds", "aaren_sessions",
            "aaren_tokens_appended_total", "aaren_tokens_scored_total",
            "aaren_scheduler_batch_tokens", "aaren_sessions_evicted_total"} <= used


def _has_target(dashboard, pattern: str) -> bool:
    rx = re.compile(pattern)
    return any(rx.search(" ".join(e.split())) for e in expressions(dashboard))


@pytest.mark.parametrize("what,pattern", [
    ("request rate by rpc", r"sum by \(rpc\) \(rate\(aaren_requests_total\{"),
    ("p50 latency per rpc",
     r"histogram_quantile\(0\.5, sum by \(le, rpc\) \(rate\(aaren_request_duration_seconds_bucket"),
    ("p99 latency per rpc",
     r"histogram_quantile\(0\.99, sum by \(le, rpc\) \(rate\(aaren_request_duration_seconds_bucket"),
    ("live sessions per tier", r"sum by \(tier\) \(aaren_sessions\{"),
    ("tokens/s appended by model", r"sum by \(model\) \(rate\(aaren_tokens_appended_total"),
    ("tokens/s scored by model", r"sum by \(model\) \(rate\(aaren_tokens_scored_total"),
    ("batch size p50", r"histogram_quantile\(0\.5, .*aaren_scheduler_batch_tokens_bucket"),
    ("batch size p99", r"histogram_quantile\(0\.99, .*aaren_scheduler_batch_tokens_bucket"),
    ("evictions/s", r"rate\(aaren_sessions_evicted_total"),
    ("errors/s by code", r"sum by \(code\) \(rate\(aaren_requests_total\{[^}]*code!=\"OK\""),
])
def test_required_panel_queries(dashboard, what, pattern):
    assert _has_target(dashboard, pattern), f"no query for {what}"


def test_expressions_are_valid_promql(dashboard, promtool, tmp_path):
    # Grafana's variables replaced by what they stand for; promtool parses each as a rule.
    substitutions = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h",
                     "$instance": ".*"}
    rules = []
    for i, expr in enumerate(expressions(dashboard)):
        if expr.startswith("label_values("):
            continue  # Grafana's own function, not PromQL
        for var, value in substitutions.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, f"unknown variable in {expr!r}"
        rules.append({"record": f"aaren_dashboard_check:expr{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = run([promtool, "check", "rules", str(path)])
    assert r.returncode == 0, r.stdout + r.stderr


def test_dashboard_provider_points_at_the_mounted_dashboards():
    (provider,) = load_yaml(PROVIDERS)["providers"]
    assert provider["type"] == "file"
    compose = load_yaml(DEPLOY / "docker-compose.yml")
    mounts = dict(v.split(":")[:2][::-1] for v in compose["services"]["grafana"]["volumes"]
                  if v.startswith("./"))
    assert mounts[provider["options"]["path"]] == "./grafana/dashboards"
    assert (DEPLOY / "grafana" / "dashboards" / "aaren.json").is_file()


def test_datasource_points_at_the_compose_prometheus():
    (source,) = load_yaml(DATASOURCES)["datasources"]
    compose = load_yaml(DEPLOY / "docker-compose.yml")
    assert "prometheus" in compose["services"]
    assert source["url"] == "http://prometheus:9090"
    assert "9090:9090" in compose["services"]["prometheus"]["ports"]
