# SPDX-License-Identifier: Apache-2.0
"""The Prometheus metrics of aaren-server (--metrics_port, /metrics), end to end.

Every count is checked exactly: the tests scrape before and after a known workload on the shared
server (conftest.py: --max_sessions 4, --threads 2) and compare the differences with what the
workload did. Each test leaves no live session behind, so the session gauges start from zero.
The tests of overlapping scrapes and of the --metrics_port flag start servers of their own; two
more check the endpoint with promtool and with a real Prometheus (/usr/bin/prometheus).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from aaren_client import AarenClient, InvalidArgument, Mca, NotFound, aaren_pb2
from metrics_support import Scrape, free_port, get_metrics_at_once, http_get, wait_until

LM = "demo-lm"
TS = "demo-ts"
LM_STATE_BYTES = 1096  # 2 layers x 4 heads x (2 + 32) float32 + the 8-byte position
LM_D_MODEL, LM_LAYERS = 128, 2

# The metric contract: family -> TYPE.
CONTRACT = {
    "aaren_requests_total": "counter",
    "aaren_request_duration_seconds": "histogram",
    "aaren_tokens_appended_total": "counter",
    "aaren_tokens_scored_total": "counter",
    "aaren_sessions": "gauge",
    "aaren_session_state_bytes": "gauge",
    "aaren_sessions_created_total": "counter",
    "aaren_sessions_evicted_total": "counter",
    "aaren_sessions_expired_total": "counter",
    "aaren_sessions_deleted_total": "counter",
    "aaren_open_streams": "gauge",
    "aaren_scheduler_batch_tokens": "histogram",
    "aaren_scheduler_queue_wait_seconds": "histogram",
    "aaren_backend_forward_duration_seconds": "histogram",
    "aaren_state_pool_slots": "gauge",
    "aaren_state_pool_used_slots": "gauge",
    "aaren_host_tier_slots": "gauge",
    "aaren_host_tier_used_slots": "gauge",
    "aaren_mca_value_projection_flops_total": "counter",
    "aaren_build_info": "gauge",
    "aaren_store_commits_total": "counter",
    "aaren_store_errors_total": "counter",
    "aaren_store_records_written_total": "counter",
    "aaren_store_written_bytes_total": "counter",
    "aaren_store_commit_duration_seconds": "histogram",
    "aaren_store_recovered_sessions": "gauge",
    "aaren_store_skipped_records": "gauge",
    "aaren_store_recovery_seconds": "gauge",
    "aaren_store_roundtrip_seconds": "histogram",
    "aaren_store_loaded_sessions_total": "counter",
    "aaren_store_ownership_moves_total": "counter",
    "aaren_store_cas_conflicts_total": "counter",
}
LATENCY_BOUNDS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                  0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
BATCH_BOUNDS = [float(2 ** i) for i in range(17)]  # 1, 2, 4, ..., 65536
BOUNDS = {
    "aaren_request_duration_seconds": LATENCY_BOUNDS,
    "aaren_scheduler_queue_wait_seconds": LATENCY_BOUNDS,
    "aaren_backend_forward_duration_seconds": LATENCY_BOUNDS,
    "aaren_scheduler_batch_tokens": BATCH_BOUNDS,
}


def toks(n: int, start: int = 0):
    """n valid demo-lm token ids (vocabulary 43)."""
    return [(start + 7 * i) % 43 for i in range(n)]


def requests(s: Scrape) -> Dict[Tuple[str, str], float]:
    """aaren_requests_total as {(rpc, code): value}."""
    out = {}
    for labels, v in s.series("aaren_requests_total").items():
        d = dict(labels)
        assert set(d) == {"rpc", "code"}, d
        out[(d["rpc"], d["code"])] = v
    return out


def diff(before: Dict, after: Dict) -> Dict:
    """after - before per key, keeping only the keys that moved."""
    keys = set(before) | set(after)
    return {k: after.get(k, 0) - before.get(k, 0) for k in keys
            if after.get(k, 0) != before.get(k, 0)}


def live_sessions(s: Scrape) -> float:
    return s.value("aaren_sessions", tier="device") + s.value("aaren_sessions", tier="host")


def open_streams_back_to_zero(server):
    # The reactor decrements the gauge in OnDone, which gRPC runs just after the client has its
    # final status; poll briefly instead of expecting it at once.
    return wait_until(lambda: server.scrape().value("aaren_open_streams") == 0, 10,
                      "aaren_open_streams == 0 after the stream closed")


@pytest.fixture
def cleanup(client):
    """A list to put session ids in: whatever is still live at teardown is deleted, so that a
    failing test leaves no session behind for the next one."""
    ids: List[str] = []
    yield ids
    for sid in ids:
        try:
            client.delete_session(sid)
        except NotFound:
            pass


@pytest.fixture(scope="module")
def workload(server, client):
    """Runs the reference workload once; returns the scrapes taken around it."""
    before = server.scrape()
    assert live_sessions(before) == 0, "a previous test left live sessions"
    ids: List[str] = []
    try:
        return _run_workload(server, client, before, ids)
    finally:
        for sid in ids:  # on success these are already gone (NOT_FOUND)
            try:
                client.delete_session(sid)
            except NotFound:
                pass


def _run_workload(server, client, before, ids):
    created = client.create_session(LM, prefix=toks(5))                 # 5 tokens appended
    ids.append(created.session_id)
    r = client.append(created.session_id, toks(7, 3))                   # 7 tokens appended
    assert r.position == 12
    with client.stream(model=LM) as st:                                 # creates a session
        for t in toks(13, 11):
            st.append([t])                                              # 13 single-token steps
        assert st.position == 13
        ids.append(st.session_id)
        streaming = server.scrape()
    stream_sid = st.session_id
    open_streams_back_to_zero(server)
    outs = client.score(LM, [toks(10, 1), toks(20, 2), toks(30, 4)])    # 60 tokens scored
    assert [o.shape[0] for o in outs] == [10, 20, 30]
    with pytest.raises(InvalidArgument):
        client.append(created.session_id, [99])                         # out of range: no tokens
    with pytest.raises(NotFound):
        client.get_session("no-such-session-0123")
    assert client.get_session(created.session_id).position == 12
    models = {m.name: m for m in client.list_models()}
    live = server.scrape()

    client.delete_session(created.session_id)
    client.delete_session(stream_sid)
    after = server.scrape()
    return dict(before=before, streaming=streaming, live=live, after=after, models=models,
                session_ids=[created.session_id, stream_sid])


# ---- 1. exact values after a workload ----

def test_tokens_appended_and_scored_exact(workload):
    before, after = workload["before"], workload["after"]
    for name, want in (("aaren_tokens_appended_total", 5 + 7 + 13),
                       ("aaren_tokens_scored_total", 10 + 20 + 30)):
        assert after.value(name, model=LM) - before.value(name, model=LM) == want, name
        assert after.value(name, model=TS) - before.value(name, model=TS) == 0, name
        assert set(after.series(name)) == {frozenset({("model", LM)}), frozenset({("model", TS)})}


def test_requests_total_exact_per_rpc_and_code(workload):
    got = diff(requests(workload["before"]), requests(workload["after"]))
    assert got == {
        ("CreateSession", "OK"): 1,
        ("Append", "OK"): 1,
        ("Append", "INVALID_ARGUMENT"): 1,
        ("Stream", "OK"): 1,
        ("Score", "OK"): 1,
        ("GetSession", "OK"): 1,
        ("GetSession", "NOT_FOUND"): 1,
        ("ListModels", "OK"): 1,
        ("DeleteSession", "OK"): 2,
    }


def test_request_duration_count_matches_requests(workload):
    before, after = workload["before"], workload["after"]
    per_rpc: Dict[str, float] = {}
    for (rpc, _code), n in diff(requests(before), requests(after)).items():
        per_rpc[rpc] = per_rpc.get(rpc, 0) + n
    def counts_of(s: Scrape) -> Dict[str, float]:
        series = s.series("aaren_request_duration_seconds_count")
        return {dict(labels)["rpc"]: v for labels, v in series.items()}

    counts, counts0 = counts_of(after), counts_of(before)
    assert diff(counts0, counts) == per_rpc
    # Over the whole run too: every finished RPC has exactly one duration observation (series of
    # RPCs never called may be exported at 0).
    total: Dict[str, float] = {}
    for (rpc, _code), n in requests(after).items():
        total[rpc] = total.get(rpc, 0) + n
    assert {k: v for k, v in counts.items() if v} == {k: v for k, v in total.items() if v}
    for rpc in per_rpc:
        assert after.value("aaren_request_duration_seconds_sum", rpc=rpc) > \
            before.get("aaren_request_duration_seconds_sum", 0.0, rpc=rpc), rpc


def test_session_gauges_follow_create_and_delete(workload):
    before, live, after = workload["before"], workload["live"], workload["after"]
    d = lambda s, name: s.value(name) - before.value(name)  # noqa: E731
    # Two sessions live (CreateSession + the stream's), both in the 4-slot pool.
    assert live.value("aaren_sessions", tier="device") == 2
    assert live.value("aaren_sessions", tier="host") == 0
    assert live.value("aaren_session_state_bytes", tier="device") == 2 * LM_STATE_BYTES
    assert live.value("aaren_session_state_bytes", tier="host") == 0
    assert live.value("aaren_state_pool_used_slots") == 2
    assert d(live, "aaren_sessions_created_total") == 2
    assert d(live, "aaren_sessions_deleted_total") == 0
    # After DeleteSession x2.
    assert live_sessions(after) == 0
    assert after.value("aaren_session_state_bytes", tier="device") == 0
    assert after.value("aaren_state_pool_used_slots") == 0
    assert d(after, "aaren_sessions_created_total") == 2
    assert d(after, "aaren_sessions_deleted_total") == 2
    assert d(after, "aaren_sessions_evicted_total") == 0
    assert d(after, "aaren_sessions_expired_total") == 0
    assert workload["models"][LM].state_bytes == LM_STATE_BYTES


def test_open_streams_gauge(workload):
    assert workload["before"].value("aaren_open_streams") == 0
    assert workload["streaming"].value("aaren_open_streams") == 1
    assert workload["after"].value("aaren_open_streams") == 0


def test_scheduler_and_backend_histograms(workload):
    before, after = workload["before"], workload["after"]

    def d(name, **labels):
        return after.get(name, 0.0, **labels) - before.get(name, 0.0, **labels)

    fwd = "aaren_backend_forward_duration_seconds"
    # 13 streamed single-token appends, each alone in its tick: 13 step Forwards.
    assert d(fwd + "_count", path="step") == 13
    # The 5-token prefix, the 7-token append and the Score: at least 3 scan Forwards.
    assert d(fwd + "_count", path="scan") >= 3
    assert {dict(l)["path"] for l in after.series(fwd + "_count")} == {"step", "scan"}
    forwards = d(fwd + "_count", path="step") + d(fwd + "_count", path="scan")
    # One batch-size observation per Forward, summing to every token run.
    assert d("aaren_scheduler_batch_tokens_count") == forwards
    assert d("aaren_scheduler_batch_tokens_sum") == 5 + 7 + 13 + 60
    assert d("aaren_scheduler_batch_tokens_bucket", le="1") == 13
    # One queue wait per operation: prefix, append, 13 stream appends, 3 Score sequences.
    assert d("aaren_scheduler_queue_wait_seconds_count") == 1 + 1 + 13 + 3


def _histogram_series(s: Scrape, family: str):
    """{labels without le: [(le, cumulative count), ...]}."""
    out: Dict = {}
    for (name, labels), v in s.samples.items():
        if name != family + "_bucket":
            continue
        d = dict(labels)
        le = d.pop("le")
        out.setdefault(frozenset(d.items()), []).append((float(le), v))
    return out


def test_histograms_well_formed(workload):
    s = workload["after"]
    for family, bounds in BOUNDS.items():
        series = _histogram_series(s, family)
        assert series, f"{family}: no series after the workload"
        for labels, buckets in series.items():
            buckets.sort()
            les = [le for le, _ in buckets]
            assert les == bounds + [float("inf")], f"{family}{dict(labels)}: bucket bounds {les}"
            counts = [c for _, c in buckets]
            assert counts == sorted(counts), f"{family}{dict(labels)}: not cumulative: {counts}"
            count = s.value(family + "_count", **dict(labels))
            assert counts[-1] == count, \
                f"{family}{dict(labels)}: +Inf {counts[-1]} != _count {count}"
            assert s.get(family + "_sum", None, **dict(labels)) is not None
            assert count == int(count) and count > 0


# ---- exposition-wide rules ----

def test_exposition_families_names_and_labels(workload):
    s = workload["after"]
    assert s.types == CONTRACT
    assert set(s.helps) == set(CONTRACT) and all(s.helps.values())
    sample_names = {name for name, _ in s.samples}
    for name in sample_names:
        assert name.startswith("aaren_"), name
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in CONTRACT else name
        assert family in CONTRACT, f"sample {name} belongs to no declared family"
    for family, kind in s.types.items():
        assert family.startswith("aaren_"), family
        if kind == "counter":
            assert family.endswith("_total"), family
        else:
            assert not family.endswith("_total"), family
    session_ids = set(workload["session_ids"])
    for (name, labels) in s.samples:
        for k, v in labels:
            assert k not in ("session", "session_id") and "session" not in k, (name, k)
            assert v not in session_ids, f"{name} carries a session id in label {k}"


def test_content_type(server):
    with urllib.request.urlopen(server.metrics_url, timeout=10) as r:
        ctype = r.headers.get("Content-Type", "")
    assert ctype.startswith("text/plain") and "version=0.0.4" in ctype, ctype


def test_build_info_and_mca(workload, repo):
    s = workload["after"]
    (labels, value), = s.series("aaren_build_info").items()
    assert value == 1
    d = dict(labels)
    assert set(d) == {"version", "git_sha", "backend", "exporter"}
    assert d["exporter"] in ("builtin", "prometheus-cpp")
    m = re.search(r"project\(\s*\w+\s+VERSION\s+([0-9.]+)", (repo / "CMakeLists.txt").read_text())
    assert m is not None
    assert d["version"] == m.group(1)
    assert re.fullmatch(r"[0-9a-f]{7,40}|unknown", d["git_sha"]), d["git_sha"]
    assert d["backend"] == workload["models"][LM].backend
    # Without MCA every completed operation spends exactly the exact value-projection FLOPs:
    # 2 d_model^2 per token and layer, for the 25 appended and 60 scored tokens.
    flops = 2 * LM_D_MODEL ** 2 * LM_LAYERS * (5 + 7 + 13 + 60)
    before = workload["before"]
    assert set(s.series("aaren_mca_value_projection_flops_total")) == {
        frozenset({("kind", "spent")}), frozenset({("kind", "exact")})}
    for kind in ("spent", "exact"):
        assert (s.value("aaren_mca_value_projection_flops_total", kind=kind)
                - before.value("aaren_mca_value_projection_flops_total", kind=kind)) == flops, kind


def test_mca_flops_counter_moves_by_the_reported_flops(server, client, cleanup):
    before = server.scrape()
    mca = Mca(0.5, seed=9)
    spent = exact = 0
    for r in client.score_results(LM, [toks(30), toks(17, 3)], mca=mca):
        spent += r.mca_stats.value_flops
        exact += r.mca_stats.value_flops_exact
    sid = client.create_session(LM).session_id
    cleanup.append(sid)
    r = client.append(sid, toks(12, 1), mca=mca)
    spent += r.mca_stats.value_flops
    exact += r.mca_stats.value_flops_exact
    with client.stream(session_id=sid) as st:
        for t in toks(5, 2):
            r = st.append_result([t], mca=mca)
            spent += r.mca_stats.value_flops
            exact += r.mca_stats.value_flops_exact
    with pytest.raises(InvalidArgument):
        client.append(sid, [1], mca=Mca(-1.0))                          # rejected: no FLOPs
    assert exact == 2 * LM_D_MODEL ** 2 * LM_LAYERS * (30 + 17 + 12 + 5)
    assert 0 < spent < exact
    after = server.scrape()

    def d(kind):
        return (after.value("aaren_mca_value_projection_flops_total", kind=kind)
                - before.value("aaren_mca_value_projection_flops_total", kind=kind))

    assert d("spent") == spent
    assert d("exact") == exact
    open_streams_back_to_zero(server)


def test_state_pool_eviction(server, client, cleanup):
    before = server.scrape()

    def d(s, name):
        return s.value(name) - before.value(name)

    assert live_sessions(before) == 0, "a previous test left live sessions"
    assert before.value("aaren_state_pool_slots") == 4
    ids = cleanup
    for _ in range(6):
        ids.append(client.create_session(LM).session_id)
    s = server.scrape()
    assert s.value("aaren_sessions", tier="device") == 4
    assert s.value("aaren_sessions", tier="host") == 2
    assert s.value("aaren_state_pool_slots") == 4
    assert s.value("aaren_state_pool_used_slots") == 4
    assert s.value("aaren_host_tier_used_slots") == 2
    assert s.value("aaren_session_state_bytes", tier="device") == 4 * LM_STATE_BYTES
    assert s.value("aaren_session_state_bytes", tier="host") == 2 * LM_STATE_BYTES
    for name, want in (("aaren_sessions_created_total", 6), ("aaren_sessions_evicted_total", 2),
                       ("aaren_sessions_deleted_total", 0)):
        assert d(s, name) == want, name
    # The sessions' own view agrees: the two least recently used went to the host tier.
    host, pool = aaren_pb2.SESSION_TIER_HOST, aaren_pb2.SESSION_TIER_POOL
    assert [client.get_session(i).tier for i in ids] == [host, host] + [pool] * 4

    # Using a host-tier session resumes it into the pool, evicting the LRU pool session.
    assert client.append(ids[0], [1]).position == 1
    s2 = server.scrape()
    assert [client.get_session(i).tier for i in ids] == [pool, host, host] + [pool] * 3
    assert s2.value("aaren_sessions", tier="device") == 4
    assert s2.value("aaren_sessions", tier="host") == 2
    assert d(s2, "aaren_sessions_evicted_total") == 3
    assert s2.value("aaren_tokens_appended_total", model=LM) - \
        before.value("aaren_tokens_appended_total", model=LM) == 1
    for i in ids:
        client.delete_session(i)
    after = server.scrape()
    assert live_sessions(after) == 0
    assert after.value("aaren_state_pool_used_slots") == 0
    assert after.value("aaren_host_tier_used_slots") == 0
    assert after.value("aaren_session_state_bytes", tier="host") == 0
    assert d(after, "aaren_sessions_deleted_total") == 6
    assert d(after, "aaren_sessions_evicted_total") == 3


def test_lifecycle_invariant(server, workload):
    # The shared server started empty: created - deleted - expired == live, at a quiet moment.
    s = server.scrape()
    assert (s.value("aaren_sessions_created_total") - s.value("aaren_sessions_deleted_total")
            - s.value("aaren_sessions_expired_total")) == live_sessions(s)


def test_generate_fork_export_import_prefill(server, client, cleanup):
    before = server.scrape()
    assert live_sessions(before) == 0, "a previous test left live sessions"
    ids = cleanup
    sid = client.create_session(LM, prefix=toks(2)).session_id                  # +2 appended
    ids.append(sid)
    got = list(client.generate(sid, max_tokens=4, prompt=toks(3, 5)))           # +3 +4 appended
    assert [g.position for g in got] == [6, 7, 8, 9]
    assert client.get_session(sid).position == 9
    ids.append(client.fork_session(sid).session_id)                             # no tokens run
    ids.append(client.import_session(client.export_session(sid)).session_id)    # no tokens run
    ids += [p.session_id for p in client.prefill(LM, [toks(4), toks(6)])]       # +10 scored
    with pytest.raises(NotFound):
        with client.stream(model="no-such-model"):
            pass
    live = server.scrape()
    for i in ids:
        client.delete_session(i)
    after = server.scrape()

    def d(s, name, **labels):
        return s.value(name, **labels) - before.value(name, **labels)

    assert d(after, "aaren_tokens_appended_total", model=LM) == 2 + 3 + 4
    assert d(after, "aaren_tokens_scored_total", model=LM) == 4 + 6
    assert diff(requests(before), requests(after)) == {
        ("CreateSession", "OK"): 1, ("Generate", "OK"): 1, ("GetSession", "OK"): 1,
        ("ForkSession", "OK"): 1, ("ExportSession", "OK"): 1, ("ImportSession", "OK"): 1,
        ("Score", "OK"): 1, ("Stream", "NOT_FOUND"): 1, ("DeleteSession", "OK"): 5}
    assert live.value("aaren_sessions", tier="device") == 4
    assert live.value("aaren_sessions", tier="host") == 1
    assert live.value("aaren_session_state_bytes", tier="device") + \
        live.value("aaren_session_state_bytes", tier="host") == 5 * LM_STATE_BYTES
    assert d(live, "aaren_sessions_created_total") == 5
    assert d(after, "aaren_sessions_deleted_total") == 5
    assert live_sessions(after) == 0
    open_streams_back_to_zero(server)  # the Generate and the failed Stream have ended


def test_lifecycle_counters_under_concurrent_scrapes(start_server):
    """Counters never go down, even when scrapes overlap (two Prometheus replicas scraping the
    same target at the same moment) while sessions come and go."""
    srv = start_server(free_port())
    names = ("aaren_sessions_created_total", "aaren_sessions_deleted_total")
    stop = threading.Event()
    started = [0]  # creates begun: an upper bound of created_total at any moment
    lock = threading.Lock()
    problems: List[str] = []

    def scraper():
        floor = dict.fromkeys(names, 0.0)  # the highest value of the previous round
        while not stop.is_set():
            # Overlapping scrapes: both of the exporter's HTTP threads collect at once. The two
            # replies of a round are unordered; a round is rendered after the previous one.
            texts = get_metrics_at_once(srv.metrics_port, 2)
            with lock:
                bound = started[0]
            seen = dict.fromkeys(names, 0.0)
            for text in texts:
                for n in names:  # a regex, not the full parser: more rounds per second
                    m = re.search(rf"^{n} (\S+)$", text, re.M)
                    assert m is not None, f"no {n} in the scrape"
                    v = float(m.group(1))
                    if v < floor[n] or v > bound:
                        problems.append(f"{n}: {v} after {floor[n]} (creates begun: {bound})")
                        stop.set()
                    seen[n] = max(seen[n], v)
            floor = seen

    def worker():
        with AarenClient(srv.target, timeout=60) as c:
            while not stop.is_set():
                with lock:
                    started[0] += 1
                c.delete_session(c.create_session(LM).session_id)

    def guarded(fn):
        def run():
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - reported by the main thread
                problems.append(f"{fn.__name__} thread: {e!r}")
                stop.set()
        return run

    threads = [threading.Thread(target=guarded(scraper)) for _ in range(3)]
    threads += [threading.Thread(target=guarded(worker)) for _ in range(2)]
    for th in threads:
        th.start()
    # Long enough to catch a racy Collect (the unfixed one fails within ~3 s); ends early on
    # the first problem.
    stop.wait(5.0)
    stop.set()
    for th in threads:
        th.join(timeout=60)
        assert not th.is_alive(), "a scraper or worker thread is stuck"
    assert not problems, problems[:5]
    s = srv.scrape()
    assert started[0] > 0
    assert s.value("aaren_sessions_created_total") == started[0]
    assert s.value("aaren_sessions_deleted_total") == started[0]


# ---- 2. promtool ----

def test_promtool_check_metrics(server, workload):
    text = server.scrape_text()
    r = subprocess.run(["/usr/bin/promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), text


# ---- 3. a real Prometheus scrapes it ----

@pytest.fixture
def prometheus(server, tmp_path):
    """A Prometheus scraping the shared server's /metrics every second (job "aaren"); yields
    (base URL, log path) and stops it with SIGTERM."""
    exe = Path("/usr/bin/prometheus")
    if not exe.is_file():
        pytest.skip("/usr/bin/prometheus is not installed")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: aaren\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{server.metrics_port}']\n")
    log_path = tmp_path / "prometheus.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(exe), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"

    def ready():
        assert proc.poll() is None, \
            f"prometheus exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}"
        try:
            return http_get(base + "/-/ready", timeout=2)[0] == 200
        except OSError:
            return False

    try:
        wait_until(ready, 60, "Prometheus /-/ready", interval=0.1)
        yield base, log_path
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _query(base: str, promql: str):
    status, body = http_get(f"{base}/api/v1/query?query={urllib.parse.quote(promql)}", timeout=5)
    assert status == 200, body
    r = json.loads(body)
    assert r["status"] == "success", r
    return r["data"]["result"]


def test_prometheus_scrapes_the_endpoint(server, client, prometheus):
    base, log_path = prometheus
    sid = client.create_session(LM, prefix=toks(4)).session_id
    try:
        client.append(sid, toks(6))
    finally:
        client.delete_session(sid)
    want = server.scrape().value("aaren_tokens_appended_total", model=LM)
    assert want >= 10

    def scraped():
        up = _query(base, 'up{job="aaren"}')
        tok = _query(base, f'aaren_tokens_appended_total{{job="aaren",model="{LM}"}}')
        ok = (len(up) == 1 and up[0]["value"][1] == "1" and len(tok) == 1
              and float(tok[0]["value"][1]) >= want)
        return (up, tok) if ok else None

    try:
        up, tok = wait_until(scraped, 30, "Prometheus to scrape aaren (up == 1, tokens counter)",
                             interval=0.25)
    except BaseException:
        print(f"Prometheus log:\n{log_path.read_text(errors='replace')[-4000:]}")
        raise
    assert tok[0]["metric"]["instance"] == f"127.0.0.1:{server.metrics_port}"
    assert float(tok[0]["value"][1]) > 0
    # The scrape itself reported no error.
    status, body = http_get(base + "/api/v1/targets", timeout=5)
    assert status == 200
    (target,) = [t for t in json.loads(body)["data"]["activeTargets"]
                 if t["labels"].get("job") == "aaren"]
    assert target["health"] == "up" and target["lastError"] == "", target


# ---- 4. --metrics_port 0 ----

def _listening_tcp_ports(pid: int) -> Dict[int, str]:
    """{port: local address hex} of the TCP sockets in LISTEN state that process `pid` holds."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", str(link))
        if m:
            inodes.add(m.group(1))
    out = {}
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            f = line.split()
            local, state, inode = f[1], f[3], f[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                addr, port = local.rsplit(":", 1)
                out[int(port, 16)] = addr
    return out


def test_metrics_listens_on_host_only(server):
    ports = _listening_tcp_ports(server.proc.pid)
    assert set(ports) == {server.port, server.metrics_port}, ports
    assert ports[server.metrics_port] == "0100007F", "metrics not on 127.0.0.1 (--host)"


def test_metrics_port_zero_disables_the_endpoint(start_server):
    from aaren_client import AarenClient

    srv = start_server(0)
    with AarenClient(srv.target, timeout=60) as c:
        assert c.health() == "SERVING"
        assert [m.name for m in c.list_models()] == [LM, TS]
        sid = c.create_session(LM, prefix=toks(3)).session_id
        c.delete_session(sid)
    ports = _listening_tcp_ports(srv.proc.pid)
    assert set(ports) == {srv.port}, f"listening ports {sorted(ports)}; gRPC is {srv.port}"
    assert "msg=metrics" not in srv.log_path.read_text(errors="replace")


def test_metrics_port_in_use_fails_startup(server_exe, repo, tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([str(server_exe), "--host", "127.0.0.1", "--port", "0",
                            "--metrics_port", str(port), "--model_dir", str(repo / "models" / LM)],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert f"--metrics_port: cannot listen on 127.0.0.1:{port}" in out, out
