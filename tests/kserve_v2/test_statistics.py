# SPDX-License-Identifier: Apache-2.0
"""ModelStatistics (gRPC) and GET /v2/models/{m}/stats (REST): counts move by exactly the v2
requests made (the suite runs its tests one at a time on the shared server)."""

import time

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc",
                    reason="no tritonclient (tests/kserve_v2/run.sh makes its virtualenv)")

from kserve_support import LM, TS, V2, ints, model_spec  # noqa: E402


def _stats(v2, model):
    (s,) = v2.statistics(model)
    assert s["name"] == model and s["version"] == "1"
    st = s["inference_stats"]

    def count(stage):
        return int(st.get(stage, {}).get("count", 0))

    def ns(stage):
        return int(st.get(stage, {}).get("ns", 0))

    return {
        "inference_count": int(s.get("inference_count", 0)),
        "execution_count": int(s.get("execution_count", 0)),
        "last_inference": int(s.get("last_inference", 0)),
        "success": count("success"), "success_ns": ns("success"),
        "fail": count("fail"),
        "queue": count("queue"),
        "compute_infer": count("compute_infer"), "compute_infer_ns": ns("compute_infer"),
        "compute_input": count("compute_input"), "compute_output": count("compute_output"),
    }


def test_statistics_count_requests(v2):
    lm = model_spec(LM)
    before, before_ts = _stats(v2, LM), _stats(v2, TS)
    t0 = int(time.time() * 1000)
    rng = np.random.default_rng()
    k = 5
    for _ in range(k):
        v2.infer(lm, lm.random_input(rng, 6))
    with v2.raises("INVALID_ARGUMENT"):
        v2.infer(lm, np.array([1, 2], np.float32), datatype="FP32")
    after, after_ts = _stats(v2, LM), _stats(v2, TS)

    assert after["success"] - before["success"] == k, (before, after)
    assert after["fail"] - before["fail"] == 1, (before, after)
    assert after["success_ns"] > before["success_ns"]
    assert after["inference_count"] > 0 and after["execution_count"] > 0, after
    # One engine operation per request at least; requests made one after another cannot share
    # a backend Forward.
    assert after["inference_count"] - before["inference_count"] >= k, (before, after)
    assert after["execution_count"] - before["execution_count"] >= k, (before, after)
    assert after["compute_infer"] == after["execution_count"]
    assert after["compute_input"] == after["compute_output"] == after["execution_count"]
    assert after["compute_infer_ns"] > before["compute_infer_ns"]
    assert after["queue"] >= before["queue"] + k
    assert t0 - 5000 <= after["last_inference"] <= int(time.time() * 1000) + 5000, after
    # demo-ts was not touched.
    assert after_ts == before_ts, (before_ts, after_ts)


def test_statistics_of_all_models_and_both_transports(server, rest):
    clients = [V2("grpc", server.grpc_url)] + ([V2("http", server.http_url)] if rest else [])
    try:
        views = []
        for c in clients:
            all_stats = c.statistics("")
            assert sorted(s["name"] for s in all_stats) == [LM, TS]
            views.append({s["name"]: ints(s.get("inference_count", 0)) for s in all_stats})
        # Nothing runs between the reads: both transports report the same counters.
        assert all(v == views[0] for v in views), views
    finally:
        for c in clients:
            c.close()
