# SPDX-License-Identifier: Apache-2.0
"""Bad requests get Triton's answers: INVALID_ARGUMENT (REST 400) naming the tensor for bad
tensors and parameters, NOT_FOUND (REST 404) naming the model for an unknown model,
INVALID_ARGUMENT saying START is needed for an id the tenant does not have (and that it expired,
when it did). tritonclient raises InferenceServerException with status() "StatusCode.X" (gRPC)
or the HTTP code (REST)."""

import os
import time

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc",
                    reason="no tritonclient (tests/kserve_v2/run.sh makes its virtualenv)")

from kserve_support import LM, TOLERANCE, TS, V2, model_spec, rel_err  # noqa: E402


def _sid() -> str:
    return "kserve-err-" + os.urandom(6).hex()


def test_wrong_datatype(v2):
    lm, ts = model_spec(LM), model_spec(TS)
    with v2.raises("INVALID_ARGUMENT", "TOKENS", "FP32", "INT32"):
        v2.infer(lm, np.array([1, 2, 3], np.float32), datatype="FP32")
    with v2.raises("INVALID_ARGUMENT", "TOKENS", "INT64", "INT32"):
        v2.infer(lm, np.array([1, 2, 3], np.int64), datatype="INT64")
    with v2.raises("INVALID_ARGUMENT", "FEATURES", "INT32", "FP32"):
        v2.infer(ts, np.zeros((2, 8), np.int32), datatype="INT32")


def test_wrong_shape(v2):
    lm, ts = model_spec(LM), model_spec(TS)
    with v2.raises("INVALID_ARGUMENT", "TOKENS", "shape"):
        v2.infer(lm, np.array([[1, 2, 3]], np.int32))
    with v2.raises("INVALID_ARGUMENT", "FEATURES", "shape"):
        v2.infer(ts, np.zeros((3, 5), np.float32))
    with v2.raises("INVALID_ARGUMENT", "FEATURES", "shape"):
        v2.infer(ts, np.zeros(8, np.float32))


def test_wrong_input_name_and_values(v2):
    lm, ts = model_spec(LM), model_spec(TS)
    with v2.raises("INVALID_ARGUMENT", "INPUT0", "TOKENS"):
        v2.infer(lm, np.array([1, 2], np.int32), name="INPUT0")
    with v2.raises("INVALID_ARGUMENT", "TOKENS", "out of range"):
        v2.infer(lm, np.array([1, 43], np.int32))
    with v2.raises("INVALID_ARGUMENT", "TOKENS", "out of range"):
        v2.infer(lm, np.array([-1], np.int32))
    x = np.zeros((2, 8), np.float32)
    x[1, 3] = np.nan
    with v2.raises("INVALID_ARGUMENT", "FEATURES", "finite"):
        v2.infer(ts, x)


def test_long_client_names_are_cut_in_messages(v2):
    """A client's tensor name comes back in the message cut to Quoted()'s length: the whole of
    a 100 KB name made a 100 KB REST error body, and on gRPC passed the peer's metadata limit."""
    lm = model_spec(LM)
    with v2.raises("INVALID_ARGUMENT", "inputs[0].name") as box:
        v2.infer(lm, np.array([1, 2], np.int32), name="X" * 100_000)
    assert len(box[0].message()) < 1024, len(box[0].message())


def test_bad_parameters(v2):
    lm = model_spec(LM)
    x = np.array([1, 2], np.int32)
    with v2.raises("INVALID_ARGUMENT", "output_mode"):
        v2.infer(lm, x, parameters={"output_mode": "none"})
    with v2.raises("INVALID_ARGUMENT", "mca_alpha"):
        v2.infer(lm, x, parameters={"mca_alpha": -1.0})
    with v2.raises("INVALID_ARGUMENT", "sequence_id"):
        v2.infer(lm, x, sequence_id="bad id with spaces", start=True)


def test_unknown_model(v2):
    lm = model_spec(LM)
    with v2.raises("NOT_FOUND", "no-such-model"):
        v2.infer(lm, np.array([1, 2], np.int32), model="no-such-model")
    with v2.raises("NOT_FOUND", "no-such-model"):
        v2.statistics("no-such-model")


def test_unknown_sequence_needs_start(v2):
    lm = model_spec(LM)
    x = np.array([1, 2, 3], np.int32)
    for sid in (_sid(), int.from_bytes(os.urandom(7), "little") + 1):
        with v2.raises("INVALID_ARGUMENT", "START", str(sid)):
            v2.infer(lm, x, sequence_id=sid)
        with v2.raises("INVALID_ARGUMENT", "START", str(sid)):
            v2.infer(lm, x, sequence_id=sid, end=True)
    # A START with a bad tensor makes no session: the next request still needs START.
    sid = _sid()
    with v2.raises("INVALID_ARGUMENT", "TOKENS"):
        v2.infer(lm, np.array([1, 99], np.int32), sequence_id=sid, start=True)
    with v2.raises("INVALID_ARGUMENT", "START"):
        v2.infer(lm, x, sequence_id=sid)


def test_expired_sequence(ttl_server, rest):
    """--session_idle_ttl 1s: after 3 s idle the sequence is gone, and the error says it expired
    and that START is needed; START makes it again."""
    from aaren_client import AarenClient

    lm = model_spec(LM)
    x = np.array([5, 6, 7], np.int32)
    clients = [V2("grpc", ttl_server.grpc_url)]
    if rest:
        clients.append(V2("http", ttl_server.http_url))
    try:
        ids = {}
        for c in clients:
            ids[c.transport] = sid = _sid()
            c.infer(lm, x, sequence_id=sid, start=True)
        time.sleep(3.0)  # TTL 1 s + the engine's 1 s expiry sweep, and room for a slow machine
        for c in clients:
            sid = ids[c.transport]
            with c.raises("INVALID_ARGUMENT", "START", "expired", sid):
                c.infer(lm, x, sequence_id=sid)
            # START makes it again, from the empty state.
            with AarenClient(ttl_server.target, timeout=60) as a:
                want = a.score_one(LM, x.tolist())
            got = c.infer(lm, x, sequence_id=sid, start=True, end=True)
            assert rel_err(got, want) < TOLERANCE
    finally:
        for c in clients:
            c.close()


def test_classification_output_is_refused(v2):
    # The server does not offer Triton's classification extension: asking for it is an error
    # naming the parameter, not a silently different reply.
    lm = model_spec(LM)
    x = np.array([1, 2], np.int32)
    inp = v2.input(lm.input_name, x, lm.datatype)
    out = v2.mod.InferRequestedOutput("OUTPUTS", class_count=3)
    with v2.raises("INVALID_ARGUMENT", "classification"):
        v2.client.infer(LM, [inp], outputs=[out])


@pytest.fixture(params=["grpc", "http"])
def ack_v2(request, ack_server, rest):
    if request.param == "http" and not rest:
        pytest.skip("no REST")
    c = V2(request.param, ack_server.url(request.param))
    yield c
    c.close()


def test_failed_requests_change_no_sequence(ack_v2, ack_server):
    """Under --durability ack with a 1 MiB message limit: START on an existing sequence twice
    (the second START used to wait, on the scheduler thread, for a commit only that thread
    makes); a START or an append whose reply cannot fit (its outputs, or the echoed request id)
    is refused before any work and the sequence is as it was; a request naming another model
    than the sequence's is told START is needed and changes nothing."""
    from aaren_client import AarenClient

    v2 = ack_v2
    lm, ts = model_spec(LM), model_spec(TS)
    sid = _sid()
    x = np.array([3, 1, 4, 1, 5], np.int32)
    v2.infer(lm, x, sequence_id=sid, start=True)
    v2.infer(lm, x, sequence_id=sid, start=True)  # restarts: position 5 again, not 10
    big = np.ones(7000, np.int32)  # 7000 x 43 x 4 bytes of outputs: over 1 MiB
    with v2.raises("RESOURCE_EXHAUSTED", "max_message_bytes"):
        v2.infer(lm, big, sequence_id=sid, start=True)
    with v2.raises("RESOURCE_EXHAUSTED", "max_message_bytes"):
        v2.infer(lm, big, sequence_id=sid)
    # 6000 rows fit; with a 30 KB request id the reply does not.
    with v2.raises("RESOURCE_EXHAUSTED", "max_message_bytes"):
        v2.infer(lm, np.ones(6000, np.int32), sequence_id=sid, end=True, request_id="r" * 30000)
    with v2.raises("INVALID_ARGUMENT", "START", "another model"):
        v2.infer(ts, ts.random_input(np.random.default_rng(1), 2), sequence_id=sid)
    # The sequence is still the one the second START made: 5 tokens, and it goes on from there.
    got = v2.infer(lm, x, sequence_id=sid, end=True)
    with AarenClient(ack_server.target, timeout=60) as a:
        want = a.score_one(LM, (np.concatenate([x, x])).tolist())
    assert rel_err(got, want[-len(x):]) < TOLERANCE
    with v2.raises("INVALID_ARGUMENT", "START"):
        v2.infer(lm, x, sequence_id=sid)


def test_rest_timeout_cancels_a_request_queued_behind_a_long_append(server, rest, aaren):
    """REST has no call deadline: parameters.timeout (microseconds, as tritonclient's
    infer(timeout=...) sends it) bounds the wait. A request queued behind a long aaren.v1 append
    on its sequence is cancelled at its timeout (504, saying so) and never applied."""
    import threading

    if not rest:
        pytest.skip("no REST")
    lm = model_spec(LM)
    sid = _sid()
    aaren.create_session(LM, session_id=sid, prefix=[1, 2, 3])
    long_input = [int(t) for t in np.random.default_rng(3).integers(0, 43, 300_000)]
    done = {}
    t = threading.Thread(target=lambda: done.setdefault(
        "r", aaren.append(sid, long_input, output_mode="last", timeout=300)))
    t.start()
    time.sleep(0.3)  # the long append is queued first
    c = V2("http", server.http_url)
    try:
        start = time.monotonic()
        with c.raises("DEADLINE_EXCEEDED", "timeout", "not applied"):
            c.infer(lm, np.array([7, 8], np.int32), sequence_id=sid,
                    parameters={"timeout": 200_000})
        assert time.monotonic() - start < 30
    finally:
        c.close()
        t.join()
    assert done["r"].position == 3 + len(long_input)
    assert aaren.get_session(sid).position == 3 + len(long_input)
    aaren.delete_session(sid)
