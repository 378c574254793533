# SPDX-License-Identifier: Apache-2.0
"""ModelStreamInfer through tritonclient.grpc (start_stream / async_stream_infer): interleaved
sequences (integer and string ids, both models) checked per request against aaren.v1 Score of
the sequence's prefix; failed requests answered through the callback's error while the stream
goes on."""

import os
import queue

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc",
                    reason="no tritonclient (tests/kserve_v2/run.sh makes its virtualenv)")

from kserve_support import LM, TOLERANCE, TS, V2, fresh_seed, model_spec, rel_err  # noqa: E402

REPLY_TIMEOUT = 60


class StreamCollector:
    def __init__(self):
        self.q: "queue.Queue" = queue.Queue()

    def callback(self, result, error):
        self.q.put((result, error))

    def take(self, n: int):
        """The next n replies: (results by request id in arrival order, error messages)."""
        results, errors = [], []
        for _ in range(n):
            try:
                result, error = self.q.get(timeout=REPLY_TIMEOUT)
            except queue.Empty:
                pytest.fail(f"ModelStreamInfer: {len(results) + len(errors)} of {n} replies in "
                            f"{REPLY_TIMEOUT} s (results {[r.get_response().id for r in results]}, "
                            f"errors {errors})")
            if error is not None:
                errors.append(error.message())
            else:
                results.append(result)
        return results, errors


def _send(c, spec, x, request_id, **kw):
    inp = c.input(spec.input_name, x, spec.datatype)
    c.client.async_stream_infer(spec.name, [inp], request_id=request_id, **kw)


def test_interleaved_sequences_and_errors(server, aaren):
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    tag = os.urandom(4).hex()
    # (label, sequence id, model, chunk lengths)
    plan = [
        ("int-a", int(rng.integers(1, 2**62)), LM, [3, 1, 4, 2]),
        ("int-b", int(rng.integers(1, 2**62)), LM, [1, 1, 5]),
        ("str-c", f"kserve-stream-{tag}-c", LM, [6, 2, 1, 1, 3]),
        ("str-d", f"kserve-stream-{tag}-d", TS, [2, 4, 1]),
        ("int-e", int(rng.integers(1, 2**62)), TS, [5, 3]),
    ]
    chunks = {label: [model_spec(m).random_input(rng, n) for n in lens]
              for label, _, m, lens in plan}
    specs = {label: model_spec(m) for label, _, m, _ in plan}
    ids = {label: sid for label, sid, _, _ in plan}
    stateless = model_spec(LM).random_input(rng, 7)

    c = V2("grpc", server.grpc_url)
    col = StreamCollector()
    c.client.start_stream(callback=col.callback)
    try:
        sent, n_bad = 0, 0
        rounds = max(len(v) for v in chunks.values())
        for r in range(rounds):
            for label, sid, _, lens in plan:
                if r >= len(lens):
                    continue
                _send(c, specs[label], chunks[label][r], f"{label}/{r}", sequence_id=sid,
                      sequence_start=r == 0, sequence_end=r == len(lens) - 1)
                sent += 1
            if r == 1:
                # Failed requests in the middle: an id never started, a wrong datatype. Their
                # answers come through the callback's error; the stream goes on.
                _send(c, specs["int-a"], chunks["int-a"][0], "bad/no-start",
                      sequence_id=f"kserve-stream-{tag}-never")
                inp = c.input("TOKENS", np.arange(3, dtype=np.float32), "FP32")
                c.client.async_stream_infer(LM, [inp], request_id="bad/dtype")
                inp = c.input("TOKENS", np.arange(3, dtype=np.int32), "INT32")
                c.client.async_stream_infer("no-such-model", [inp], request_id="bad/model")
                n_bad += 3
                _send(c, model_spec(LM), stateless, "stateless/0")
                sent += 1
        results, errors = col.take(sent + n_bad)
        assert len(errors) == n_bad, errors
        assert any("START" in e and f"kserve-stream-{tag}-never" in e for e in errors), errors
        assert any("TOKENS" in e and "FP32" in e for e in errors), errors
        assert any("no-such-model" in e for e in errors), errors

        by_id = {}
        order = {label: [] for label in chunks}
        for res in results:
            rid = res.get_response().id
            assert rid not in by_id, f"two replies for {rid}"
            by_id[rid] = res.as_numpy("OUTPUTS")
            label = rid.split("/")[0]
            if label in order:
                order[label].append(int(rid.split("/")[1]))
        # Requests of one sequence are answered in order.
        for label, got in order.items():
            assert got == list(range(len(chunks[label]))), (label, got)

        assert rel_err(by_id["stateless/0"], aaren.score_one(LM, stateless.tolist())) < TOLERANCE
        for label, sid, model, lens in plan:
            spec = specs[label]
            for r in range(len(lens)):
                prefix = np.concatenate(chunks[label][:r + 1])
                want = aaren.score_one(model, spec.to_aaren(prefix))[-lens[r]:]
                got = by_id[f"{label}/{r}"]
                assert got.shape == (lens[r], spec.output_dim), (label, r, got.shape)
                err = rel_err(got, want)
                assert err < TOLERANCE, f"{label} ({sid!r}) request {r}, seed {seed}: {err:.3g}"

        # The ENDed sequences are gone: without START they fail, on the same stream, which
        # still serves the request after them.
        _send(c, specs["str-c"], chunks["str-c"][0], "after/ended", sequence_id=ids["str-c"])
        _send(c, specs["int-a"], chunks["int-a"][0], "after/ok", sequence_id=ids["int-a"],
              sequence_start=True, sequence_end=True)
        results, errors = col.take(2)
        assert len(errors) == 1 and "START" in errors[0] and ids["str-c"] in errors[0], errors
        (res,) = results
        assert res.get_response().id == "after/ok"
        want = aaren.score_one(LM, chunks["int-a"][0].tolist())
        assert rel_err(res.as_numpy("OUTPUTS"), want) < TOLERANCE
    finally:
        c.client.stop_stream()
        c.close()


def test_stream_output_mode_last_and_parameters(server, aaren):
    seed = fresh_seed()
    rng = np.random.default_rng(seed)
    spec = model_spec(TS)
    sid = f"kserve-last-{os.urandom(4).hex()}"
    chunks = [spec.random_input(rng, n) for n in (3, 5, 2)]
    c = V2("grpc", server.grpc_url)
    col = StreamCollector()
    c.client.start_stream(callback=col.callback)
    try:
        for i, x in enumerate(chunks):
            _send(c, spec, x, f"last/{i}", sequence_id=sid, sequence_start=i == 0,
                  sequence_end=i == len(chunks) - 1, parameters={"output_mode": "last"})
        results, errors = col.take(len(chunks))
        assert not errors, errors
    finally:
        c.client.stop_stream()
        c.close()
    full = aaren.score_one(TS, np.concatenate(chunks))
    ends = np.cumsum([len(x) for x in chunks]) - 1
    got = {r.get_response().id: r.as_numpy("OUTPUTS") for r in results}
    for i, e in enumerate(ends):
        assert got[f"last/{i}"].shape == (1, spec.output_dim)
        err = rel_err(got[f"last/{i}"], full[e:e + 1], scale=np.max(np.abs(full)))
        assert err < TOLERANCE, f"seed {seed}: {err:.3g}"
