# SPDX-License-Identifier: Apache-2.0
"""Shared setup for the deployment-file tests (tests/deploy).

Environment:

* ``AAREN_SOURCE_DIR``: the repository root (default: two levels above this directory);
* ``AAREN_SERVER``: the built ``aaren-server`` (optional; test_dockerfile.py stages it for the
  runtime image when given);
* ``PROMTOOL``: the promtool binary (default: ``promtool`` on PATH, Debian's prometheus package).

The metric contract (README "Metrics") is repeated here on purpose: the dashboard, the alert rules
and any future query may use only these names, and a renamed metric must fail these tests.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(os.environ.get("AAREN_SOURCE_DIR") or Path(__file__).resolve().parents[2]).resolve()
DEPLOY = REPO / "deploy"

# name -> (type, label names). Histograms also expose <name>_bucket (with "le"), _sum, _count.
METRICS: dict[str, tuple[str, frozenset[str]]] = {
    "aaren_requests_total": ("counter", frozenset({"rpc", "code"})),
    "aaren_request_duration_seconds": ("histogram", frozenset({"rpc"})),
    "aaren_tokens_appended_total": ("counter", frozenset({"model"})),
    "aaren_tokens_scored_total": ("counter", frozenset({"model"})),
    "aaren_sessions": ("gauge", frozenset({"tier"})),
    "aaren_session_state_bytes": ("gauge", frozenset({"tier"})),
    "aaren_sessions_created_total": ("counter", frozenset()),
    "aaren_sessions_evicted_total": ("counter", frozenset()),
    "aaren_sessions_expired_total": ("counter", frozenset()),
    "aaren_sessions_deleted_total": ("counter", frozenset()),
    "aaren_open_streams": ("gauge", frozenset()),
    "aaren_scheduler_batch_tokens": ("histogram", frozenset()),
    "aaren_scheduler_queue_wait_seconds": ("histogram", frozenset()),
    "aaren_backend_forward_duration_seconds": ("histogram", frozenset({"path"})),
    "aaren_state_pool_slots": ("gauge", frozenset()),
    "aaren_state_pool_used_slots": ("gauge", frozenset()),
    "aaren_host_tier_slots": ("gauge", frozenset()),
    "aaren_host_tier_used_slots": ("gauge", frozenset()),
    "aaren_mca_value_projection_flops_total": ("counter", frozenset({"kind"})),
    "aaren_build_info": ("gauge", frozenset({"version", "git_sha", "backend", "exporter"})),
    "aaren_store_commits_total": ("counter", frozenset({"result"})),
    "aaren_store_errors_total": ("counter", frozenset()),
    "aaren_store_records_written_total": ("counter", frozenset()),
    "aaren_store_written_bytes_total": ("counter", frozenset()),
    "aaren_store_commit_duration_seconds": ("histogram", frozenset()),
    "aaren_store_recovered_sessions": ("gauge", frozenset()),
    "aaren_store_skipped_records": ("gauge", frozenset()),
    "aaren_store_recovery_seconds": ("gauge", frozenset()),
    "aaren_store_roundtrip_seconds": ("histogram", frozenset({"op"})),
    "aaren_store_loaded_sessions_total": ("counter", frozenset()),
    "aaren_store_ownership_moves_total": ("counter", frozenset()),
    "aaren_store_cas_conflicts_total": ("counter", frozenset()),
}
# Labels Prometheus adds to every scraped series, and the histogram bucket bound.
TARGET_LABELS = frozenset({"job", "instance", "le"})
ALL_LABELS = TARGET_LABELS.union(*(labels for _, labels in METRICS.values()))

GRPC_PORT = 50051
METRICS_PORT = 8002

_NAME_RE = re.compile(r"aaren_[a-z_]+")
_HIST_SUFFIXES = ("_bucket", "_sum", "_count")


def series_names(expr: str) -> list[str]:
    """Every aaren_* series name an expression mentions."""
    return _NAME_RE.findall(expr)


def contract_base_name(series: str) -> str | None:
    """The contract metric a series name belongs to (histograms: <name>_bucket/_sum/_count), or
    None when it is not in the contract."""
    if series in METRICS and METRICS[series][0] != "histogram":
        return series
    for suffix in _HIST_SUFFIXES:
        base = series[: -len(suffix)]
        if series.endswith(suffix) and METRICS.get(base, ("",))[0] == "histogram":
            return base
    return None


def grouping_labels(expr: str) -> set[str]:
    """Label names in by(...)/without(...) clauses and in {...} selectors of an expression."""
    names: set[str] = set()
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        names.update(n.strip() for n in group.split(",") if n.strip())
    for selector in re.findall(r"\{([^}]*)\}", expr):
        names.update(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", selector))
    return names


def load_yaml(path: Path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


COMPOSE_VARIABLE = re.compile(r"\$\{(\w+):-([^}]*)\}")


def with_defaults(value):
    """`value` with every ${NAME:-default} replaced by its default (compose with none of the
    variables set); no other $ form may be used."""
    if isinstance(value, dict):
        return {k: with_defaults(v) for k, v in value.items()}
    if isinstance(value, list):
        return [with_defaults(v) for v in value]
    if isinstance(value, str):
        out = COMPOSE_VARIABLE.sub(lambda m: m.group(2), value)
        assert "$" not in out, f"only ${{NAME:-default}} variables are used: {value}"
        return out
    return value


def load_compose() -> dict:
    """deploy/docker-compose.yml as compose reads it with no variables set."""
    return with_defaults(load_yaml(DEPLOY / "docker-compose.yml"))


def load_yaml_all(path: Path) -> list:
    with open(path, encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


@pytest.fixture(scope="session")
def promtool() -> str:
    exe = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not exe:
        pytest.fail("promtool not found: install Debian's prometheus package "
                    "(scripts/install-deps.sh) or set PROMTOOL")
    return exe


def run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Runs a command; the assertion message carries its output."""
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
