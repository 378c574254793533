# SPDX-License-Identifier: Apache-2.0
"""deploy/prometheus: the config and alert rules pass promtool, the alert unit tests pass, and
every alert is well formed, tested both ways and built from contract metrics only."""

from __future__ import annotations

from conftest import (ALL_LABELS, DEPLOY, METRICS_PORT, contract_base_name, grouping_labels,
                      load_yaml, run, series_names)

PROM_DIR = DEPLOY / "prometheus"
ALERTS = PROM_DIR / "alerts.yml"
ALERTS_TEST = PROM_DIR / "alerts_test.yml"
CONFIG = PROM_DIR / "prometheus.yml"

REQUIRED_ALERTS = {"AarenHighErrorRatio", "AarenUnaryLatencyHigh", "AarenStatePoolNearFull",
                   "AarenHostTierNearFull"}
SEVERITIES = {"critical", "warning", "info"}


def alert_rules() -> list[dict]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]
            if "alert" in rule]


def test_promtool_check_rules(promtool):
    r = run([promtool, "check", "rules", str(ALERTS)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_promtool_check_config(promtool):
    # Resolves rule_files relative to the config, so this also checks alerts.yml is found.
    r = run([promtool, "check", "config", str(CONFIG)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 rule files found" in r.stdout


def test_promtool_alert_unit_tests(promtool):
    r = run([promtool, "test", "rules", ALERTS_TEST.name], cwd=PROM_DIR)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_required_alerts_are_well_formed():
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), f"duplicate alert names: {names}"
    assert REQUIRED_ALERTS <= set(names)
    for rule in rules:
        assert rule.get("labels", {}).get("severity") in SEVERITIES, rule["alert"]
        annotations = rule.get("annotations", {})
        assert annotations.get("summary"), rule["alert"]
        assert annotations.get("description"), rule["alert"]
        assert "for" in rule, f"{rule['alert']}: no `for:`, it would fire on one bad evaluation"


def test_alert_thresholds_match_the_issue():
    rules = {rule["alert"]: rule for rule in alert_rules()}
    flat = {name: " ".join(rule["expr"].split()) for name, rule in rules.items()}
    assert 'code!="OK"' in flat["AarenHighErrorRatio"]
    assert "[5m]" in flat["AarenHighErrorRatio"] and "> 0.05" in flat["AarenHighErrorRatio"]
    latency = flat["AarenUnaryLatencyHigh"]
    assert latency.startswith("histogram_quantile(0.99,")
    assert "aaren_request_duration_seconds_bucket" in latency and "[5m]" in latency
    assert "le" in grouping_labels(latency) and "rpc" in grouping_labels(latency)
    assert 'rpc!~"Stream|Generate"' in latency and "> 0.5" in latency
    assert flat["AarenStatePoolNearFull"] == (
        "aaren_state_pool_used_slots / aaren_state_pool_slots > 0.9")
    assert rules["AarenStatePoolNearFull"]["for"] == "10m"
    assert flat["AarenHostTierNearFull"] == (
        "aaren_host_tier_used_slots / aaren_host_tier_slots > 0.9")


def test_alerts_use_only_contract_metrics_and_labels():
    for rule in alert_rules():
        expr = rule["expr"]
        for name in series_names(expr):
            assert contract_base_name(name), f"{rule['alert']}: {name} is not a contract metric"
        unknown = grouping_labels(expr) - ALL_LABELS
        assert not unknown, f"{rule['alert']}: labels {unknown} are not in the contract"


def test_every_alert_is_unit_tested_firing_and_silent():
    fired: set[str] = set()
    silent: set[str] = set()
    for case in load_yaml(ALERTS_TEST)["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names <= fired, f"never shown firing: {names - fired}"
    assert names <= silent, f"never shown silent: {names - silent}"
    assert load_yaml(ALERTS_TEST)["rule_files"] == ["alerts.yml"]


def test_config_scrapes_aaren_every_5s_and_loads_the_rules():
    config = load_yaml(CONFIG)
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    aaren = jobs["aaren"]
    assert aaren["scrape_interval"] == "5s"
    assert aaren.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for sc in aaren["static_configs"] for t in sc["targets"]]
    assert targets == [f"aaren:{METRICS_PORT}"]
