# SPDX-License-Identifier: Apache-2.0
"""Health, server metadata, model metadata and model config (DESIGN.md 7.4), through tritonclient
over gRPC and REST, and the REST endpoints as plain HTTP GETs."""

import json

import pytest

pytest.importorskip("tritonclient.grpc",
                    reason="no tritonclient (tests/kserve_v2/run.sh makes its virtualenv)")

from kserve_support import LM, TS, http_get, ints, model_spec  # noqa: E402

MODELS = [LM, TS]


def test_live_and_ready(v2):
    assert v2.client.is_server_live() is True
    assert v2.client.is_server_ready() is True
    for m in MODELS:
        assert v2.client.is_model_ready(m) is True
        assert v2.client.is_model_ready(m, "1") is True


def test_server_metadata(v2, server):
    md = v2.server_metadata()
    assert md["name"] == "aaren-serve"
    assert md["version"]
    ext = set(md["extensions"])
    for e in ("sequence", "sequence(string_id)", "statistics", "model_configuration"):
        assert e in ext, f"{v2.transport}: extension {e!r} missing from {sorted(ext)}"
    if v2.transport == "http":
        assert "binary_tensor_data" in ext


@pytest.mark.parametrize("model", MODELS)
def test_model_metadata(v2, model):
    spec = model_spec(model)
    md = v2.model_metadata(model)
    assert md["name"] == model
    assert md["platform"] == "aaren"
    assert md["versions"] == ["1"]
    assert len(md["inputs"]) == 1 and len(md["outputs"]) == 1
    (i,), (o,) = md["inputs"], md["outputs"]
    assert (i["name"], i["datatype"], ints(i["shape"])) == (spec.input_name, spec.datatype, spec.dims)
    assert (o["name"], o["datatype"], ints(o["shape"])) == ("OUTPUTS", "FP32", [-1, spec.output_dim])


@pytest.mark.parametrize("model", MODELS)
def test_model_config(v2, model):
    spec = model_spec(model)
    cfg = v2.model_config(model)
    assert cfg["name"] == model
    assert cfg["platform"] == "aaren"
    # 0 (no batch dimension); proto3 JSON leaves a zero out.
    assert int(cfg.get("max_batch_size", 0)) == 0
    (i,) = cfg["input"]
    assert i["name"] == spec.input_name
    assert i["data_type"] == f"TYPE_{spec.datatype}"
    assert ints(i["dims"]) == spec.dims
    (o,) = cfg["output"]
    assert (o["name"], o["data_type"], ints(o["dims"])) == ("OUTPUTS", "TYPE_FP32",
                                                             [-1, spec.output_dim])
    seq = cfg["sequence_batching"]
    # The default --session_idle_ttl: 1 h.
    assert int(seq["max_sequence_idle_microseconds"]) == 3600 * 1000000


def test_model_config_reports_the_idle_ttl(ttl_server, transport):
    from kserve_support import V2

    c = V2(transport, ttl_server.url(transport))
    try:
        for m in MODELS:
            seq = c.model_config(m)["sequence_batching"]
            assert int(seq["max_sequence_idle_microseconds"]) == 1000000
    finally:
        c.close()


def test_repository_index(server, transport, request):
    import tritonclient.grpc
    import tritonclient.http

    if transport == "grpc":
        c = tritonclient.grpc.InferenceServerClient(server.grpc_url)
        try:
            models = c.get_model_repository_index(as_json=True)["models"]
        finally:
            c.close()
    else:
        # A short network timeout: the failure mode is a hang.
        c = tritonclient.http.InferenceServerClient(server.http_url, connection_timeout=5.0,
                                                    network_timeout=3.0)
        try:
            models = c.get_model_repository_index()
        finally:
            c.close()
    assert sorted((m["name"], m.get("version"), m.get("state")) for m in models) == [
        (LM, "1", "READY"), (TS, "1", "READY")]


def test_model_ready_of_an_unknown_model_is_false(v2, request):
    # Triton: ModelReady of a model it does not have is OK with ready=false (server.cc,
    # InferenceServer::ModelIsReady), so tritonclient's is_model_ready() returns False; REST
    # answers 404, which tritonclient.http also turns into False.
    assert v2.client.is_model_ready("nope-model") is False


def test_unknown_model_metadata_and_config(v2):
    for call in (v2.model_metadata, v2.model_config):
        with v2.raises("NOT_FOUND", "nope-model"):
            call("nope-model")


# ---- the REST endpoints as plain HTTP (what curl sees) ----

@pytest.mark.parametrize("path", ["/v2/health/live", "/v2/health/ready",
                                  f"/v2/models/{LM}/ready", f"/v2/models/{TS}/ready",
                                  f"/v2/models/{LM}/versions/1/ready"])
def test_rest_health_endpoints(rest_base, path):
    status, _, _ = http_get(rest_base + path)
    assert status == 200, path


@pytest.mark.parametrize("path", ["/v2", f"/v2/models/{LM}", f"/v2/models/{LM}/config",
                                  f"/v2/models/{LM}/stats", "/v2/models/stats", f"/v2/models/{TS}",
                                  f"/v2/models/{TS}/versions/1", f"/v2/models/{TS}/config"])
def test_rest_json_endpoints(rest_base, path):
    status, headers, body = http_get(rest_base + path)
    assert status == 200, (path, body[:500])
    ctype = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
    assert ctype.startswith("application/json"), (path, ctype)
    doc = json.loads(body)
    assert isinstance(doc, dict) and doc, (path, doc)


def test_rest_repository_index_with_a_body(rest_base):
    from kserve_support import http_post

    for body in (b"", b"{}"):  # urllib sends Content-Length: 0 for b""
        status, _, resp = http_post(rest_base + "/v2/repository/index", body,
                                    {"Content-Type": "application/json"})
        assert status == 200, (body, status, resp[:500])
        assert sorted(m["name"] for m in json.loads(resp)) == [LM, TS]


def test_rest_unknown_model(rest_base):
    for path in ("/v2/models/nope-model", "/v2/models/nope-model/config"):
        status, _, body = http_get(rest_base + path)
        assert status == 404, (path, status, body[:500])
        assert "nope-model" in json.loads(body)["error"], body
    status, _, _ = http_get(rest_base + "/v2/models/nope-model/ready")
    assert status != 200
