# SPDX-License-Identifier: Apache-2.0
"""End-to-end tests of aaren_client against a real aaren-server (see conftest.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aaren_client import (
    Aborted,
    AarenError,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    Mca,
    McaStats,
    NotFound,
    aaren_pb2,
)

import grpc

REPO = Path(os.environ.get("AAREN_SOURCE_DIR") or Path(__file__).resolve().parents[2]).resolve()

LM = "demo-lm"
TS = "demo-ts"


def read_jsonl(path):
    with open(path, "r", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def lm_heldout():
    return read_jsonl(REPO / "models" / LM / "heldout.jsonl")


@pytest.fixture(scope="module")
def ts_heldout():
    return read_jsonl(REPO / "models" / TS / "heldout.jsonl")


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b| (the arrays' relative error in the max norm)."""
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a.astype(np.float64) - b)) / max(float(np.max(np.abs(b))), 1e-30))


def config(name):
    with open(REPO / "models" / name / "config.json", "r", encoding="utf-8") as f:
        return json.load(f)


# ---- models and health ----


def test_health(client):
    assert client.health() == "SERVING"


def test_list_models(client):
    models = client.list_models()
    names = [m.name for m in models]
    assert names == sorted(names)
    assert LM in names and TS in names
    by_name = {m.name: m for m in models}
    for name in (LM, TS):
        m, cfg = by_name[name], config(name)
        assert m.model_type == "aaren"
        assert (m.d_model, m.n_heads, m.n_layers, m.d_ff) == (
            cfg["d_model"], cfg["n_heads"], cfg["n_layers"], cfg["d_ff"])
        assert m.output_dim == cfg["output_dim"]
        assert m.position == cfg["position"]
        assert m.input_kind == cfg["input"]["kind"]
        d_head = cfg["d_model"] // cfg["n_heads"]
        assert m.state_bytes == cfg["n_layers"] * cfg["n_heads"] * (2 + d_head) * 4 + 8
        assert m.config_hash
        assert m.backend in ("cpu", "cuda")
    lm, ts = by_name[LM], by_name[TS]
    assert lm.vocab_size == 43 and lm.num_parameters == 375083
    assert lm.state_bytes == 1096
    assert ts.n_features == 8 and ts.num_parameters == 92545
    assert client.model_info(LM).vocab_size == 43


# ---- score vs stream ----


def test_score_equals_stream_demo_lm(client, lm_heldout):
    # Every held-out sequence by default (64 x 256 single-token appends, ~8 s on 2 cores).
    n_seq = int(os.environ.get("AAREN_TEST_STREAM_SEQUENCES", "0")) or len(lm_heldout)
    records = lm_heldout[:n_seq]
    scored = client.score(LM, [r["tokens"] for r in records])
    assert len(scored) == len(records)
    for r, want in zip(records, scored):
        n = len(r["tokens"])
        assert want.shape == (n, 43) and want.dtype == np.float32
        with client.stream(model=LM) as s:
            assert s.position == 0
            rows = [s.append([t]) for t in r["tokens"]]
            assert s.position == n
            sid = s.session_id
        got = np.concatenate(rows, axis=0)
        err = rel_err(got, want)
        assert err < 1e-5, f"{r['id']}: stream vs score relative error {err:.3g}"
        # The model is good enough to be recognisable (held-out accuracy ~0.71).
        acc = float(np.mean(want.argmax(axis=1) == np.asarray(r["targets"])))
        assert acc > 0.5, f"{r['id']}: accuracy {acc}"
        assert client.get_session(sid).position == n
        client.delete_session(sid)


def test_score_equals_stream_demo_ts(client, ts_heldout):
    r = ts_heldout[0]
    x = np.asarray(r["features"], dtype=np.float32)
    want = client.score_one(TS, x)
    assert want.shape == (x.shape[0], 1)
    with client.stream(model=TS) as s:
        got = np.concatenate([s.append(x[i:i + 1]) for i in range(x.shape[0])], axis=0)
        sid = s.session_id
    assert rel_err(got, want) < 1e-5
    client.delete_session(sid)


def test_score_output_modes(client, lm_heldout):
    toks = lm_heldout[1]["tokens"][:50]
    full = client.score_one(LM, toks)
    last = client.score_one(LM, toks, output_mode="last")
    none = client.score_one(LM, toks, output_mode="none")
    assert last.shape == (1, 43)
    assert rel_err(last, full[-1:]) < 1e-5
    assert none.size == 0


def test_stream_append_many_equals_sequential(client, lm_heldout):
    toks = lm_heldout[2]["tokens"][:40]
    want = client.score_one(LM, toks)
    with client.stream(model=LM) as s:
        results = s.append_many([[t] for t in toks[:20]] + [toks[20:]])
        sid = s.session_id
    assert [r.position for r in results] == list(range(1, 21)) + [40]
    got = np.concatenate([r.outputs for r in results], axis=0)
    assert rel_err(got, want) < 1e-5
    client.delete_session(sid)


@pytest.mark.parametrize("model", [LM, TS])
def test_stream_pipelined_appends_apply_in_order(client, lm_heldout, ts_heldout, model):
    """Many appends in flight on one stream: the server must apply them in the order sent (a
    reordering shows as outputs that drift away from Score's from some row on)."""
    if model == LM:
        x = np.asarray(lm_heldout[9]["tokens"])
    else:
        x = np.asarray(ts_heldout[1]["features"], dtype=np.float32)
    want = client.score_one(model, x)
    for trial in range(3):
        with client.stream(model=model) as s:
            results = s.append_many([x[i:i + 1] for i in range(len(x))])
            sid = s.session_id
        assert [r.position for r in results] == list(range(1, len(x) + 1))
        got = np.concatenate([r.outputs for r in results], axis=0)
        row_err = np.max(np.abs(got - want), axis=1) / np.max(np.abs(want))
        bad = np.nonzero(row_err >= 1e-5)[0]
        assert bad.size == 0, (f"trial {trial}: {bad.size} of {len(x)} rows differ from Score, "
                               f"first at row {bad[0]} (relative error {row_err[bad[0]]:.3g})")
        client.delete_session(sid)


def test_prefill_then_append(client, lm_heldout):
    toks = lm_heldout[3]["tokens"][:120]
    want = client.score_one(LM, toks)
    (pre,) = client.prefill(LM, [toks[:100]])
    assert pre.position == 100 and pre.session_id
    r = client.append(pre.session_id, toks[100:])
    assert r.position == 120
    assert rel_err(r.outputs, want[100:]) < 1e-5
    client.delete_session(pre.session_id)


# ---- appends, retries, errors ----


def test_append_retry_is_replayed(client, lm_heldout):
    toks = lm_heldout[4]["tokens"]
    s = client.create_session(LM, prefix=toks[:5])
    assert s.position == 5 and s.model == LM
    r1 = client.append(s.session_id, toks[5:8], expected_position=5)
    assert not r1.replayed and r1.position == 8 and r1.session_id == s.session_id
    r2 = client.append(s.session_id, toks[5:8], expected_position=5)
    assert r2.replayed and r2.position == 8
    np.testing.assert_array_equal(r2.outputs, r1.outputs)
    assert client.get_session(s.session_id).position == 8
    # The next append at the new position applies normally.
    r3 = client.append(s.session_id, toks[8:9], expected_position=8)
    assert not r3.replayed and r3.position == 9
    client.delete_session(s.session_id)


def test_stale_position_is_aborted(client, lm_heldout):
    toks = lm_heldout[5]["tokens"]
    s = client.create_session(LM, prefix=toks[:5])
    client.append(s.session_id, toks[5:8], expected_position=5)
    for stale, inputs in ((5, toks[5:9]), (2, toks[5:8]), (100, toks[8:9])):
        with pytest.raises(Aborted) as ei:
            client.append(s.session_id, inputs, expected_position=stale)
        e = ei.value
        assert e.code == grpc.StatusCode.ABORTED
        assert re.search(r"\b8\b", e.details), f"message does not name position 8: {e.details!r}"
        assert isinstance(e, AarenError) and isinstance(e.__cause__, grpc.RpcError)
    assert client.get_session(s.session_id).position == 8
    client.delete_session(s.session_id)


def test_mca_options_and_stats(client, lm_heldout):
    tokens = lm_heldout[0]["tokens"][:48]
    n = len(tokens)
    exact_flops = 2 * 128 * 128 * 2 * n  # 2 d_model^2 per token and layer (demo-lm)
    [plain] = client.score_results(LM, [tokens])
    assert plain.mca_stats == McaStats(exact_flops, exact_flops)
    [a] = client.score_results(LM, [tokens], mca=Mca(0.5, seed=3))
    assert a.mca_stats.value_flops_exact == exact_flops
    assert 0 < a.mca_stats.value_flops < exact_flops and a.mca_stats.fraction < 1.0
    # The same options as a dict or a proto give the same outputs; another seed others.
    [b] = client.score_results(LM, [tokens], mca={"enabled": True, "alpha": 0.5, "seed": 3})
    assert rel_err(b.outputs, a.outputs) < 1e-5
    [c] = client.score_results(LM, [tokens], mca=aaren_pb2.McaOptions(enabled=True, alpha=0.5, seed=4))
    assert rel_err(c.outputs, a.outputs) > 1e-2
    # Streaming token by token with the same options matches the scan (up to a rare token that the
    # paths' different rounding moves across a sample-count boundary).
    with client.stream(model=LM) as s:
        results = [s.append_result([t], mca=Mca(0.5, seed=3)) for t in tokens]
        sid = s.session_id
    got = np.concatenate([r.outputs for r in results], axis=0)
    assert rel_err(got, a.outputs) < 1e-3
    assert sum(r.mca_stats.value_flops_exact for r in results) == exact_flops
    client.delete_session(sid)
    # Unary appends after an MCA prefix report their own FLOPs.
    s = client.create_session(LM, prefix=tokens[:10], mca=Mca(0.5, seed=3))
    r = client.append(s.session_id, tokens[10:], mca=Mca(0.5, seed=3))
    assert rel_err(r.outputs, a.outputs[10:]) < 1e-5
    assert r.mca_stats.value_flops_exact == exact_flops * (n - 10) // n
    assert r.mca_stats.value_flops < r.mca_stats.value_flops_exact
    [p] = client.prefill(LM, [tokens], mca=Mca(0.5, seed=3))
    assert p.mca_stats.value_flops_exact == exact_flops
    assert p.mca_stats.value_flops < exact_flops
    for bad in (-1.0, float("nan")):
        with pytest.raises(InvalidArgument) as ei:
            client.append(s.session_id, [1], mca=Mca(bad))
        assert "mca.alpha" in ei.value.details, ei.value.details
    assert client.get_session(s.session_id).position == n
    client.delete_session(s.session_id)
    client.delete_session(p.session_id)


def test_bad_token_is_invalid_argument(client):
    s = client.create_session(LM, prefix=[10, 32])
    for bad in (99, 43, -1):
        with pytest.raises(InvalidArgument) as ei:
            client.append(s.session_id, [5, bad])
        assert ei.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "input.tokens[1]" in ei.value.details, ei.value.details
        assert str(bad) in ei.value.details, ei.value.details
    assert client.get_session(s.session_id).position == 2  # nothing applied
    with pytest.raises(InvalidArgument) as ei:
        client.score(LM, [[1, 2], [3, 99]])
    assert "sequences[1]" in ei.value.details and "tokens[1]" in ei.value.details, ei.value.details
    with pytest.raises(InvalidArgument):
        client.append(s.session_id, [])
    with pytest.raises(InvalidArgument):
        client.score(TS, [np.full((2, 8), np.nan, dtype=np.float32)])
    with pytest.raises(InvalidArgument):
        client.score(TS, [np.zeros(7, dtype=np.float32)])  # not a multiple of n_features
    client.delete_session(s.session_id)


def test_unknown_session_is_not_found(client):
    sid = "no-such-session"
    calls = [
        lambda: client.get_session(sid),
        lambda: client.append(sid, [1]),
        lambda: client.delete_session(sid),
        lambda: client.fork_session(sid),
        lambda: client.export_session(sid),
        lambda: list(client.generate(sid, 3)),
    ]
    for call in calls:
        with pytest.raises(NotFound) as ei:
            call()
        assert ei.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(NotFound):
        with client.stream(session_id=sid):
            pass
    with pytest.raises(NotFound):
        client.score("no-such-model", [[1]])
    with pytest.raises(NotFound):
        client.create_session("no-such-model")


def test_client_chosen_ids(client):
    sid = "py-client-chosen-id"
    s = client.create_session(LM, session_id=sid, prefix=[1, 2, 3])
    assert s.session_id == sid
    with pytest.raises(AlreadyExists):
        client.create_session(LM, session_id=sid)
    with pytest.raises(AlreadyExists):
        client.fork_session(sid, new_session_id=sid)
    client.delete_session(sid)
    with pytest.raises(NotFound):
        client.get_session(sid)


def test_stream_open_attach_and_error(client, lm_heldout):
    toks = lm_heldout[6]["tokens"][:30]
    want = client.score_one(LM, toks)
    sid = "py-stream-attach"
    with client.stream(model=LM, session_id=sid, create_if_missing=True) as s:
        assert s.session_id == sid and s.position == 0
        a = s.append(toks[:10])
    with client.stream(session_id=sid) as s:  # attach: continues at position 10
        assert s.position == 10
        b = s.append(toks[10:])
        assert s.position == 30
    assert rel_err(np.concatenate([a, b]), want) < 1e-5
    # An error ends the stream; the session keeps its state.
    s = client.stream(session_id=sid)
    s.open()
    with pytest.raises(InvalidArgument) as ei:
        s.append([7, 500])
    assert "tokens[1]" in ei.value.details
    assert not s.is_open
    assert client.get_session(sid).position == 30
    # expected_position on a stream.
    with client.stream(session_id=sid) as s:
        r = s.append_result([1], expected_position=30)
        assert r.position == 31 and not r.replayed
        with pytest.raises(Aborted):
            s.append([1], expected_position=3)
    client.delete_session(sid)


# ---- export / import, fork, generate ----


def test_export_import_round_trip(client, lm_heldout):
    toks = lm_heldout[7]["tokens"]
    info = client.model_info(LM)
    s = client.create_session(LM, prefix=toks[:64])
    snap = client.export_session(s.session_id)
    d_head = info.d_model // info.n_heads
    assert snap.format_version == 1
    assert snap.model == LM and snap.config_hash == info.config_hash
    assert snap.position == 64
    assert (snap.n_layers, snap.n_heads, snap.d_head) == (info.n_layers, info.n_heads, d_head)
    assert len(snap.state) == info.n_layers * info.n_heads * (2 + d_head) * 4
    assert len(snap.last_output) == info.output_dim * 4
    # The last output is the prefix's last row.
    last = np.frombuffer(snap.last_output, dtype="<f4")
    assert rel_err(last, client.score_one(LM, toks[:64])[-1]) < 1e-5

    imported = client.import_session(snap.SerializeToString())
    assert imported.session_id != s.session_id and imported.position == 64
    a = client.append(s.session_id, toks[64:100])
    b = client.append(imported.session_id, toks[64:100])
    assert a.position == b.position == 100
    # Same state, same input: the same outputs up to float rounding (the server does not promise
    # bit-identical results between sessions; two fresh sessions differ by ~1e-6 too).
    assert rel_err(b.outputs, a.outputs) < 1e-5
    ga = [t for t, _ in client.generate(s.session_id, 10, temperature=0.8, seed=7)]
    gb = [t for t, _ in client.generate(imported.session_id, 10, temperature=0.8, seed=7)]
    assert ga == gb

    # Rejected snapshots: another config, another model, a truncated state.
    bad = aaren_pb2.SessionSnapshot()
    bad.CopyFrom(snap)
    bad.config_hash = "0" * len(snap.config_hash or "0")
    with pytest.raises(InvalidArgument):
        client.import_session(bad)
    bad.CopyFrom(snap)
    bad.model = TS
    with pytest.raises(InvalidArgument):
        client.import_session(bad)
    bad.CopyFrom(snap)
    bad.state = snap.state[:-4]
    with pytest.raises(InvalidArgument):
        client.import_session(bad)
    for sid in (s.session_id, imported.session_id):
        client.delete_session(sid)


def test_generate_same_seed_on_two_forks(client, lm_heldout):
    toks = lm_heldout[8]["tokens"][:32]
    base = client.create_session(LM, prefix=toks)
    f1 = client.fork_session(base.session_id)
    f2 = client.fork_session(base.session_id)
    assert f1.position == f2.position == 32
    assert len({base.session_id, f1.session_id, f2.session_id}) == 3
    g1 = list(client.generate(f1.session_id, 20, temperature=1.0, seed=1234))
    g2 = list(client.generate(f2.session_id, 20, temperature=1.0, seed=1234))
    assert [t for t, _ in g1] == [t for t, _ in g2]
    assert [p for _, p in g1] == list(range(33, 53))
    assert all(0 <= t < 43 and g.logprob <= 0.0 for g in g1 for t in [g.token])
    assert client.get_session(f1.session_id).position == 52
    assert client.get_session(base.session_id).position == 32  # forks are independent
    # Greedy: the first token is the argmax of the prefix's last output.
    f3 = client.fork_session(base.session_id)
    first = next(iter(client.generate(f3.session_id, 1, temperature=0.0)))
    want = client.score_one(LM, toks)[-1]
    assert first.token == int(np.argmax(want))
    for sid in (base.session_id, f1.session_id, f2.session_id, f3.session_id):
        client.delete_session(sid)


def test_generate_with_prompt_and_stop(client):
    s = client.create_session(LM)
    with pytest.raises(FailedPrecondition):
        list(client.generate(s.session_id, 3))  # no tokens and no prompt
    toks = list(client.generate(s.session_id, 200, temperature=0.0, prompt=[18, 26, 23, 1],
                                stop_tokens=[1]))
    assert 1 <= len(toks) <= 200
    assert toks[0].position == 5
    if len(toks) < 200:
        assert toks[-1].token == 1
    client.delete_session(s.session_id)


def test_generate_on_features_model_fails(client):
    s = client.create_session(TS, prefix=np.zeros((3, 8), dtype=np.float32))
    assert s.position == 3
    with pytest.raises(FailedPrecondition):
        list(client.generate(s.session_id, 2))
    client.delete_session(s.session_id)


# ---- examples ----


def _example_env():
    """The test's environment, plus the stubs directory this process imported (the examples put
    client/python on sys.path themselves)."""
    import aaren

    env = dict(os.environ)
    env["AAREN_PYTHON_STUBS"] = str(Path(aaren.__file__).resolve().parents[1])
    return env


def test_stream_example(server):
    script = REPO / "client" / "python" / "examples" / "stream_example.py"
    p = subprocess.run([sys.executable, str(script), "--target", server.target, "--generate", "40"],
                       env=_example_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "next-character accuracy" in p.stdout and "generated:" in p.stdout, p.stdout


def test_score_example(server):
    script = REPO / "client" / "python" / "examples" / "score_example.py"
    p = subprocess.run([sys.executable, str(script), "--target", server.target, "--check", "1e-3"],
                       env=_example_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    result = json.loads(p.stdout[p.stdout.index("{"):])
    assert result["metric"] == "mse" and result["n_positions"] == 64 * 256 and result["ok"]
