# SPDX-License-Identifier: Apache-2.0
"""ModelInfer (gRPC) and POST /v2/models/{m}/infer (REST) against aaren.v1 and the float64
oracle: stateless requests are a Score of one sequence; sequence_id/START/END requests are an
ordinary session, the same as an aaren.v1 Stream of the same chunks."""

import os

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc",
                    reason="no tritonclient (tests/kserve_v2/run.sh makes its virtualenv)")

from kserve_support import LM, TOLERANCE, TS, fresh_seed, model_spec, rel_err  # noqa: E402

MODELS = [LM, TS]


def _int_id(rng) -> int:
    return int(rng.integers(1, 2**62))


def _str_id() -> str:
    return "kserve-" + os.urandom(6).hex()


# ---- stateless ----

@pytest.mark.parametrize("model", MODELS)
def test_stateless_infer_equals_score_and_oracle(v2, aaren, oracle, model):
    spec = model_spec(model)
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    cases = []
    for n in (1, 7, 33):
        x = spec.random_input(rng, n)
        got = v2.infer(spec, x)
        assert got.dtype == np.float32 and got.shape == (n, spec.output_dim), got.shape
        cases.append((n, got, aaren.score_one(model, spec.to_aaren(x)), oracle(spec, x)))
    # Errors relative to the magnitude of the model's outputs over every case: demo-ts has one
    # output, and a single row of it can be near zero (0.003), which turns float32 rounding
    # (absolute error < 1e-6) into a relative error of 1e-4.
    scale = max(float(np.max(np.abs(want))) for _, _, _, want in cases)
    for n, got, score, want in cases:
        e_score, e_oracle = rel_err(got, score, scale=scale), rel_err(got, want, scale=scale)
        assert e_score < TOLERANCE, f"{v2.transport} {model} n={n} seed {seed}: vs Score {e_score:.3g}"
        assert e_oracle < TOLERANCE, f"{v2.transport} {model} n={n} seed {seed}: vs oracle {e_oracle:.3g}"


@pytest.mark.parametrize("model", MODELS)
def test_stateless_output_mode_last(v2, aaren, model):
    spec = model_spec(model)
    seed = fresh_seed()
    x = spec.random_input(np.random.default_rng(seed), 12)
    got = v2.infer(spec, x, parameters={"output_mode": "last"})
    assert got.shape == (1, spec.output_dim), got.shape
    full = aaren.score_one(model, spec.to_aaren(x))
    assert rel_err(got, full[-1:], scale=np.max(np.abs(full))) < TOLERANCE, f"seed {seed}"
    # "all" is the default and explicit "all" is the same.
    got_all = v2.infer(spec, x, parameters={"output_mode": "all"})
    assert rel_err(got_all, full) < TOLERANCE, f"seed {seed}"


def test_rest_json_tensors(server, rest_base, aaren):
    """REST without the binary extension: input "data" as JSON and JSON output."""
    from kserve_support import V2

    c = V2("http", server.http_url)
    try:
        for model in MODELS:
            spec = model_spec(model)
            seed = fresh_seed()
            x = spec.random_input(np.random.default_rng(seed), 9)
            want = aaren.score_one(model, spec.to_aaren(x))
            for binary_in, binary_out in ((False, False), (False, True), (True, False)):
                got = c.infer(spec, x, binary=binary_in, binary_output=binary_out)
                assert got.shape == want.shape
                assert rel_err(got, want) < TOLERANCE, (model, binary_in, binary_out, seed)
    finally:
        c.close()


def test_rest_plain_json_request(rest_base, aaren):
    """A hand-written JSON infer request (what curl would send) and its JSON response."""
    import json

    from kserve_support import http_post

    x = [3, 1, 4, 1, 5, 9, 2, 6]
    body = json.dumps({"id": "curl-1", "inputs": [{"name": "TOKENS", "shape": [len(x)],
                                                   "datatype": "INT32", "data": x}]}).encode()
    status, headers, resp = http_post(f"{rest_base}/v2/models/{LM}/infer", body,
                                      {"Content-Type": "application/json"})
    assert status == 200, resp[:1000]
    doc = json.loads(resp)
    assert doc["model_name"] == LM and doc["id"] == "curl-1"
    (out,) = doc["outputs"]
    assert out["name"] == "OUTPUTS" and out["datatype"] == "FP32"
    assert [int(d) for d in out["shape"]] == [len(x), 43]
    got = np.asarray(out["data"], np.float32).reshape(len(x), 43)
    assert rel_err(got, aaren.score_one(LM, x)) < TOLERANCE
    # FP32 rows as nested lists (the v2 spec allows nested or flattened "data").
    rows = np.random.default_rng().standard_normal((3, 8)).astype(np.float32)
    body = json.dumps({"inputs": [{"name": "FEATURES", "shape": [3, 8], "datatype": "FP32",
                                   "data": rows.tolist()}]}).encode()
    status, _, resp = http_post(f"{rest_base}/v2/models/{TS}/infer", body,
                                {"Content-Type": "application/json"})
    assert status == 200, resp[:1000]
    (out,) = json.loads(resp)["outputs"]
    got = np.asarray(out["data"], np.float32).reshape(3, 1)
    assert rel_err(got, aaren.score_one(TS, rows)) < TOLERANCE


@pytest.mark.parametrize("model", MODELS)
def test_mca_parameters_match_aaren_v1(v2, aaren, model):
    from aaren_client import Mca

    spec = model_spec(model)
    seed = fresh_seed()
    x = spec.random_input(np.random.default_rng(seed), 40)
    got = v2.infer(spec, x, parameters={"mca_alpha": 0.5, "mca_seed": 7})
    want = aaren.score_one(model, spec.to_aaren(x), mca=Mca(0.5, seed=7))
    assert rel_err(got, want) < TOLERANCE, f"seed {seed}"


# ---- sequences ----

def _chunks(spec, rng, lengths):
    return [spec.random_input(rng, n) for n in lengths]


def _native_stream(aaren, spec, chunks):
    with aaren.stream(model=spec.name) as s:
        return np.concatenate([s.append(spec.to_aaren(c)) for c in chunks])


@pytest.mark.parametrize("id_kind", ["int", "string"])
@pytest.mark.parametrize("model", MODELS)
def test_sequence_equals_stream_and_oracle(v2, aaren, oracle, model, id_kind):
    from aaren_client.errors import NotFound

    spec = model_spec(model)
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    chunks = _chunks(spec, rng, [5, 1, 1, 8, 3, 2])
    sid = _int_id(rng) if id_kind == "int" else _str_id()
    outs, pos = [], 0
    for i, c in enumerate(chunks):
        last = i == len(chunks) - 1
        out = v2.infer(spec, c, sequence_id=sid, start=i == 0, end=last)
        assert out.shape == (len(c), spec.output_dim), (i, out.shape)
        outs.append(out)
        pos += len(c)
        if not last:
            # An ordinary session of the tenant, under the decimal (or string) id.
            assert aaren.get_session(str(sid)).position == pos
    got = np.concatenate(outs)
    full = np.concatenate(chunks)
    stream = _native_stream(aaren, spec, chunks)
    score = aaren.score_one(model, spec.to_aaren(full))
    want = oracle(spec, full)
    msg = f"{v2.transport} {model} id {sid!r} seed {seed}"
    assert rel_err(got, stream) < TOLERANCE, f"{msg}: vs aaren.v1 Stream {rel_err(got, stream):.3g}"
    assert rel_err(got, score) < TOLERANCE, f"{msg}: vs Score {rel_err(got, score):.3g}"
    assert rel_err(got, want) < TOLERANCE, f"{msg}: vs oracle {rel_err(got, want):.3g}"
    assert rel_err(stream, want) < TOLERANCE, f"{msg}: Stream vs oracle {rel_err(stream, want):.3g}"
    # END deleted the session: gone for aaren.v1, and a v2 request without START fails.
    with pytest.raises(NotFound):
        aaren.get_session(str(sid))
    with v2.raises("INVALID_ARGUMENT", "START", str(sid)):
        v2.infer(spec, chunks[0], sequence_id=sid)


@pytest.mark.parametrize("model", MODELS)
def test_sequence_output_mode_last(v2, aaren, model):
    spec = model_spec(model)
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    chunks = _chunks(spec, rng, [4, 6, 2])
    sid = _int_id(rng)
    rows = []
    for i, c in enumerate(chunks):
        out = v2.infer(spec, c, sequence_id=sid, start=i == 0, end=i == len(chunks) - 1,
                       parameters={"output_mode": "last"})
        assert out.shape == (1, spec.output_dim)
        rows.append(out[0])
    full = aaren.score_one(model, spec.to_aaren(np.concatenate(chunks)))
    ends = np.cumsum([len(c) for c in chunks]) - 1
    assert rel_err(np.stack(rows), full[ends]) < TOLERANCE, f"seed {seed}"


def test_start_on_a_live_sequence_restarts_it(v2, aaren):
    spec = model_spec(LM)
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    a, b, c = _chunks(spec, rng, [6, 5, 3])
    sid = _str_id()
    v2.infer(spec, a, sequence_id=sid, start=True)
    # START again: from the empty state, not after `a`.
    got_b = v2.infer(spec, b, sequence_id=sid, start=True)
    got_c = v2.infer(spec, c, sequence_id=sid, end=True)
    want = aaren.score_one(LM, np.concatenate([b, c]).tolist())
    assert rel_err(np.concatenate([got_b, got_c]), want) < TOLERANCE, f"seed {seed}"


def test_sequence_shared_with_aaren_v1(v2, aaren):
    """A v2 sequence is an ordinary session: aaren.v1 Append continues it, v2 ends it."""
    spec = model_spec(LM)
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    a, b, c = _chunks(spec, rng, [4, 3, 5])
    sid = _int_id(rng)
    out_a = v2.infer(spec, a, sequence_id=sid, start=True)
    out_b = aaren.append(str(sid), b.tolist()).outputs
    out_c = v2.infer(spec, c, sequence_id=sid, end=True)
    got = np.concatenate([out_a, out_b, out_c])
    want = aaren.score_one(LM, np.concatenate([a, b, c]).tolist())
    assert rel_err(got, want) < TOLERANCE, f"seed {seed}"


def test_sequence_made_by_aaren_v1_needs_no_start(v2, aaren):
    spec = model_spec(LM)
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    a, b = _chunks(spec, rng, [5, 4])
    sid = _str_id()
    aaren.create_session(LM, session_id=sid, prefix=a.tolist())
    out_b = v2.infer(spec, b, sequence_id=sid, end=True)
    want = aaren.score_one(LM, np.concatenate([a, b]).tolist())
    assert rel_err(out_b, want[len(a):], scale=np.max(np.abs(want))) < TOLERANCE, f"seed {seed}"
