# SPDX-License-Identifier: Apache-2.0
"""Tests of the PyTorch reference module (tools/aaren_torch) and the demo model directories.

* state_dict names/shapes are exactly the DESIGN.md table for every config variant;
* the chunked Aaren forward (chunk 1, 7, 256) matches an independent float64 oracle written here
  (plain masked softmax over the prefix, O(N^2), no use of the module's attention code);
* streaming a sequence in pieces with the carried state and position equals one call;
* safetensors write/read round trips (F32, F16, BF16), validation of malformed files, model dirs;
* extreme scores (~1e4) produce no NaN/Inf;
* the committed demo models reproduce their metrics.json through the reference path.

Run: ``/usr/bin/python3 -m pytest tests/python`` (conftest.py puts tools/ on sys.path).
"""

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from aaren_torch import (
    AarenConfig,
    AarenModel,
    SafetensorsError,
    expected_tensor_shapes,
    load_model_dir,
    load_safetensors,
    parse_safetensors,
    random_model,
    read_safetensors,
    save_model_dir,
    save_safetensors,
    serialize_safetensors,
    sinusoidal_position_encoding,
)
from float64_oracle import oracle_forward, sinusoidal_pe

REPO = Path(__file__).resolve().parents[2]

torch.set_num_threads(min(2, torch.get_num_threads()))


def make_config(kind="tokens", n_layers=2, position="sinusoidal", d_model=32, n_heads=4, d_ff=48, out=5):
    inp = {"kind": "tokens", "vocab_size": 23} if kind == "tokens" else {"kind": "features", "n_features": 6}
    return AarenConfig(
        d_model=d_model, n_heads=n_heads, n_layers=n_layers, d_ff=d_ff, input=inp, output_dim=out,
        position=position,
    )


def make_inputs(cfg, B, N, seed=0):
    g = torch.Generator().manual_seed(seed)
    if cfg.input_kind == "tokens":
        return torch.randint(0, cfg.vocab_size, (B, N), generator=g)
    return torch.randn(B, N, cfg.n_features, generator=g)


def rel_err(a, b):
    a = a.detach().to(torch.float64)
    b = b.detach().to(torch.float64)
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


# ----------------------------------------------------------------------------------------------
# Parameter names
# ----------------------------------------------------------------------------------------------
def _design_names(kind, L):
    names = {"embed.weight"} if kind == "tokens" else {"input.weight", "input.bias"}
    for l in range(L):
        for t in ("norm1", "attn.key", "attn.value", "attn.out", "norm2", "ffn.up", "ffn.down"):
            names |= {f"layers.{l}.{t}.weight", f"layers.{l}.{t}.bias"}
        names.add(f"layers.{l}.attn.query")
    return names | {"norm_f.weight", "norm_f.bias", "head.weight", "head.bias"}


@pytest.mark.parametrize("kind", ["tokens", "features"])
@pytest.mark.parametrize("L", [1, 3])
@pytest.mark.parametrize("position", ["none", "sinusoidal"])
def test_state_dict_names_and_shapes(kind, L, position):
    cfg = make_config(kind, n_layers=L, position=position)
    sd = AarenModel(cfg).state_dict()
    assert set(sd) == _design_names(kind, L)
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes == expected_tensor_shapes(cfg)
    D, H = cfg.d_model, cfg.n_heads
    assert shapes["layers.0.attn.query"] == (H, D // H)
    assert shapes["layers.0.ffn.up.weight"] == (cfg.d_ff, D)
    assert shapes["layers.0.ffn.down.weight"] == (D, cfg.d_ff)
    assert shapes["head.weight"] == (cfg.output_dim, D)
    if kind == "tokens":
        assert shapes["embed.weight"] == (cfg.vocab_size, D)
    else:
        assert shapes["input.weight"] == (D, cfg.n_features)
    assert all(v.dtype == torch.float32 for v in sd.values())


def test_config_round_trip_and_validation():
    cfg = make_config("features", position="none")
    d = cfg.to_dict()
    assert list(d) == ["model_type", "d_model", "n_heads", "n_layers", "d_ff", "input", "output_dim", "position",
                       "norm_eps"]
    assert d["input"] == {"kind": "features", "n_features": 6}
    assert AarenConfig.from_dict(json.loads(json.dumps(d))) == cfg
    for bad in ({"d_model": 30}, {"position": "rope"}, {"input": {"kind": "tokens", "vocab_size": 0}},
                {"model_type": "gpt"}, {"norm_eps": 0.0}):
        with pytest.raises(ValueError):
            AarenConfig.from_dict({**d, **bad})


# ----------------------------------------------------------------------------------------------
# Forward vs the float64 oracle; chunking; streaming
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,L,position", [("tokens", 3, "sinusoidal"), ("features", 1, "none"),
                                             ("features", 3, "sinusoidal")])
@pytest.mark.parametrize("chunk", [1, 7, 256])
def test_forward_matches_float64_oracle(kind, L, position, chunk):
    cfg = make_config(kind, n_layers=L, position=position)
    model = random_model(cfg, seed=11)
    x = make_inputs(cfg, B=2, N=300, seed=3)  # 300 > 256: crosses a chunk boundary for chunk=256
    ref, ref_states = oracle_forward(model, x)
    with torch.no_grad():
        y32, st32 = model(x, chunk_size=chunk)
        y64, st64 = random_model(cfg, seed=11, dtype=torch.float64)(x, chunk_size=chunk)
    assert y32.dtype == torch.float32 and y32.shape == (2, 300, cfg.output_dim)
    assert rel_err(y32, ref) < 1e-5
    assert rel_err(y64, ref) < 1e-10
    for (m, u, w), (rm, ru, rw) in zip(st64, ref_states):
        # Same m up to rounding, so u and w are directly comparable.
        assert rel_err(m, rm) < 1e-12
        assert rel_err(u, ru) < 1e-10
        assert rel_err(w, rw) < 1e-10
    for (m, u, w), (rm, ru, rw) in zip(st32, ref_states):
        assert rel_err(w / u[..., None], rw / ru[..., None]) < 1e-5


def test_scores_are_varied_in_random_model():
    """random_model's query scale gives non-trivial attention (neither uniform nor one-hot)."""
    cfg = make_config("tokens", n_layers=1)
    model = random_model(cfg, seed=2)
    x = model.embed_inputs(make_inputs(cfg, 2, 200))
    s, _ = model.layers[0].attn.scores_and_values(model.layers[0].norm1(x))
    assert 0.8 < float(s.std()) < 5.0


@pytest.mark.parametrize("kind,position", [("tokens", "sinusoidal"), ("features", "none")])
@pytest.mark.parametrize("chunk", [1, 7, 256])
def test_streaming_pieces_equal_one_call(kind, position, chunk):
    cfg = make_config(kind, n_layers=3, position=position)
    model = random_model(cfg, seed=5)
    N = 280
    x = make_inputs(cfg, B=3, N=N, seed=9)
    with torch.no_grad():
        full, full_state = model(x, chunk_size=chunk)
        pieces, state, pos = [], None, 0
        for n in (1, 5, 1, 64, 2, 150, 57):
            y, state = model(x[:, pos:pos + n], state=state, position=pos, chunk_size=chunk)
            pieces.append(y)
            pos += n
        assert pos == N
        assert rel_err(torch.cat(pieces, 1), full) < 1e-5
        for a, b in zip(state, full_state):
            for ta, tb in zip(a, b):
                assert rel_err(ta, tb) < 1e-5


def test_token_by_token_equals_scan_and_oracle_with_offset_position():
    cfg = make_config("tokens", n_layers=2, position="sinusoidal")
    model = random_model(cfg, seed=8)
    x = make_inputs(cfg, B=1, N=40, seed=1)
    start = 1_000_000
    with torch.no_grad():
        scan, _ = model(x, position=start)
        state, outs = model.init_state(1), []
        for t in range(40):
            y, state = model(x[:, t:t + 1], state=state, position=start + t, chunk_size=1)
            outs.append(y)
    ref, _ = oracle_forward(model, x, position=start)
    assert rel_err(torch.cat(outs, 1), scan) < 1e-5
    assert rel_err(scan, ref) < 1e-5


def test_identity_state_is_exactly_none():
    cfg = make_config("features", n_layers=2)
    model = random_model(cfg, seed=4)
    x = make_inputs(cfg, 2, 33)
    with torch.no_grad():
        a, sa = model(x, state=None, chunk_size=7)
        b, sb = model(x, state=model.init_state(2), chunk_size=7)
    assert torch.equal(a, b)
    for p, q in zip(sa, sb):
        assert all(torch.equal(s, t) for s, t in zip(p, q))


def test_per_batch_positions():
    cfg = make_config("tokens", n_layers=1, position="sinusoidal")
    model = random_model(cfg, seed=6)
    x = make_inputs(cfg, 2, 10)
    with torch.no_grad():
        both, _ = model(x, position=torch.tensor([0, 500]))
        a, _ = model(x[:1], position=0)
        b, _ = model(x[1:], position=500)
    assert rel_err(both, torch.cat([a, b])) < 1e-6


def test_sinusoidal_encoding_is_float64_accurate():
    t = torch.tensor([0, 1, 7, 123456, 1_000_000, 987_654_321])
    D = 10
    pe = sinusoidal_position_encoding(t, D)
    assert pe.dtype == torch.float32
    ref = sinusoidal_pe(t.tolist(), D).to(torch.float32)
    assert torch.allclose(pe, ref, atol=1e-7, rtol=0)
    assert pe[0].tolist() == [0.0, 1.0] * 5
    odd = sinusoidal_position_encoding(torch.tensor([3]), 5)
    assert odd[0, 4] == pytest.approx(math.sin(3 / 10000 ** (4 / 5)), abs=1e-7)


def test_extreme_scores_are_finite():
    cfg = make_config("features", n_layers=2, position="none")
    model = random_model(cfg, seed=3, query_scale=1e4)
    x = make_inputs(cfg, 2, 120, seed=4)
    with torch.no_grad():
        s, _ = model.layers[0].attn.scores_and_values(model.layers[0].norm1(model.embed_inputs(x)))
        assert float(s.abs().max()) > 5e3  # scores really are ~1e4
        outs = [model(x, chunk_size=c)[0] for c in (1, 7, 256)]
        piece1, st = model(x[:, :50], chunk_size=7)
        piece2, st = model(x[:, 50:], state=st, position=50, chunk_size=7)
    for y in outs + [piece1, piece2]:
        assert torch.isfinite(y).all()
    for (m, u, w) in st:
        assert torch.isfinite(m).all() and torch.isfinite(u).all() and torch.isfinite(w).all()
        assert (u >= 1.0).all()
    assert rel_err(outs[0], outs[2]) < 1e-4
    assert rel_err(torch.cat([piece1, piece2], 1), outs[2]) < 1e-4


def test_gradients_are_finite_and_exact():
    cfg = make_config("tokens", n_layers=1, position="none", d_model=8, n_heads=2, d_ff=8, out=3)
    model = random_model(cfg, seed=1, dtype=torch.float64)
    x = make_inputs(cfg, 1, 12)
    q = model.layers[0].attn.query

    def loss_fn():
        return model(x, chunk_size=5)[0].pow(2).sum()

    loss_fn().backward()
    g = q.grad.clone()
    assert torch.isfinite(g).all()
    # Central finite difference on one query component.
    h = 1e-6
    with torch.no_grad():
        q[0, 0] += h
        up = loss_fn().item()
        q[0, 0] -= 2 * h
        down = loss_fn().item()
        q[0, 0] += h
    assert g[0, 0].item() == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-8)


# ----------------------------------------------------------------------------------------------
# safetensors
# ----------------------------------------------------------------------------------------------
def _sample_tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "b.weight": torch.randn(3, 4, generator=g),
        "a": torch.randn(7, generator=g) * 100,
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "special": torch.tensor([0.0, -0.0, 1e-40, 3.4e38, float("inf"), float("-inf")]),
    }


def test_safetensors_f32_round_trip(tmp_path):
    t = _sample_tensors()
    path = tmp_path / "x.safetensors"
    save_safetensors(path, t, metadata={"format": "pt", "note": "ü"})
    back, md = read_safetensors(path)
    assert md == {"format": "pt", "note": "ü"}
    assert list(back) == list(t)  # data offsets follow the given order
    for k in t:
        assert back[k].dtype == torch.float32 and back[k].shape == t[k].shape
        assert torch.equal(back[k], t[k]), k
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert (8 + n) % 8 == 0
    header = json.loads(raw[8:8 + n])
    assert header["b.weight"] == {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]}
    assert header["a"]["data_offsets"] == [48, 76]
    assert len(raw) == 8 + n + sum(4 * v.numel() for v in t.values())
    assert serialize_safetensors(t) == serialize_safetensors(t)  # deterministic


def test_safetensors_f16_bf16_reading(tmp_path):
    g = torch.Generator().manual_seed(1)
    t = {"w": torch.randn(5, 6, generator=g) * 3, "v": torch.tensor([1.0, -2.0, 65504.0, 1e-3, 0.0])}
    for dtype, tdt in (("F16", torch.float16), ("BF16", torch.bfloat16)):
        path = tmp_path / f"{dtype}.safetensors"
        save_safetensors(path, t, dtype=dtype)
        header = json.loads(path.read_bytes()[8:8 + struct.unpack("<Q", path.read_bytes()[:8])[0]])
        assert header["w"]["dtype"] == dtype and header["w"]["data_offsets"] == [0, 60]
        back = load_safetensors(path)
        for k in t:
            assert back[k].dtype == torch.float32
            assert torch.equal(back[k], t[k].to(tdt).to(torch.float32)), (dtype, k)
    # Hand-made BF16 bits: 0x3F80 = 1.0, 0xC000 = -2.0, 0x7F80 = inf.
    hdr = json.dumps({"x": {"dtype": "BF16", "shape": [3], "data_offsets": [0, 6]}}).encode()
    hdr += b" " * (-len(hdr) % 8)
    img = struct.pack("<Q", len(hdr)) + hdr + struct.pack("<3H", 0x3F80, 0xC000, 0x7F80)
    assert parse_safetensors(img)[0]["x"].tolist() == [1.0, -2.0, float("inf")]


def _image(header: dict, data: bytes) -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


@pytest.mark.parametrize(
    "img",
    [
        b"\x01\x00",
        struct.pack("<Q", 1000) + b"{}",
        struct.pack("<Q", 2) + b"[]",
        struct.pack("<Q", 3) + b"{x}",
        _image({"a": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8),
        _image({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4),
        _image({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 4),
        _image({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4),
        _image({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                "b": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]}}, b"\0" * 6),
        _image({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8),
        _image({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 8),
        _image({"__metadata__": {"k": 1}}, b""),
    ],
)
def test_safetensors_rejects_malformed(img):
    with pytest.raises(SafetensorsError):
        parse_safetensors(img)


@pytest.mark.parametrize("kind", ["tokens", "features"])
def test_model_dir_round_trip(tmp_path, kind):
    cfg = make_config(kind, n_layers=2)
    model = random_model(cfg, seed=21)
    save_model_dir(model, tmp_path / "m")
    with open(tmp_path / "m" / "config.json") as f:
        assert json.load(f) == cfg.to_dict()
    tensors, _ = read_safetensors(tmp_path / "m" / "model.safetensors")
    assert set(tensors) == _design_names(kind, 2)
    back = load_model_dir(tmp_path / "m")
    assert back.config == cfg and not back.training
    x = make_inputs(cfg, 2, 20)
    with torch.no_grad():
        assert torch.equal(model(x)[0], back(x)[0])
    # Exactly the DESIGN.md tensor set: an extra tensor is rejected by name.
    save_safetensors(tmp_path / "m" / "model.safetensors", {**tensors, "extra": torch.zeros(1)})
    with pytest.raises(ValueError, match="extra"):
        load_model_dir(tmp_path / "m")


# ----------------------------------------------------------------------------------------------
# Demo models: the committed metric is what the committed weights give on heldout.jsonl.
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["demo-lm", "demo-ts"])
def test_demo_model_metrics_reproduce(name):
    d = REPO / "models" / name
    if not (d / "metrics.json").exists():
        pytest.skip(f"{d} not trained")
    from eval_demo import evaluate

    expected = json.loads((d / "metrics.json").read_text())
    got = evaluate(d)
    assert got["metric"] == expected["metric"]
    if got["metric"] == "accuracy":
        # Same build: identical. Another CPU/torch build may flip a near-tie argmax or two.
        assert got["value"] == pytest.approx(expected["value"], abs=5e-4)
    else:
        assert got["value"] == pytest.approx(expected["value"], rel=1e-4)
    assert (d / "model.safetensors").stat().st_size <= 2 * 1024 * 1024
    assert (d / "heldout.jsonl").stat().st_size <= 1536 * 1024
