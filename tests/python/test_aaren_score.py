# SPDX-License-Identifier: Apache-2.0
"""aaren-score end to end: the C++ CPU backend vs the PyTorch reference module on the same
exported weights, the demo models' saved held-out metrics, and the CLI's error handling.

Needs the built binary: $AAREN_SCORE (set by CTest), else build/tools/aaren-score.
Run with Debian's interpreter: /usr/bin/python3 -m pytest tests/python
"""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from aaren_torch import save_model_dir
from aaren_torch.model import AarenConfig, random_model
import eval_demo

REPO = Path(__file__).resolve().parents[2]
AAREN_SCORE = Path(os.environ.get("AAREN_SCORE", REPO / "build" / "tools" / "aaren-score"))

# C++ float32 vs the PyTorch float32 module (both are float32 implementations of the same
# function; infinity-norm relative error as in the C++ tests).
PARITY_TOLERANCE = 1e-4
METRIC_TOLERANCE = 1e-3


def run_score(model_dir, records, tmp_path, *args, expect_ok=True):
    inp = tmp_path / "in.jsonl"
    out = tmp_path / "out.jsonl"
    if out.exists():
        out.unlink()
    inp.write_text("".join(json.dumps(r) + "\n" for r in records))
    proc = subprocess.run([str(AAREN_SCORE), "--model_dir", str(model_dir), "--input", str(inp),
                           "--output", str(out), *args], capture_output=True, text=True, timeout=600)
    if expect_ok:
        assert proc.returncode == 0, proc.stderr
        return [json.loads(line) for line in out.read_text().splitlines()], proc
    return None, proc


def rel_err(actual, expected):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    return np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-30)


def make_config(kind, position, heads, layers):
    inp = {"kind": "tokens", "vocab_size": 50} if kind == "tokens" else {"kind": "features", "n_features": 6}
    return AarenConfig.from_dict({"model_type": "aaren", "d_model": 32, "n_heads": heads,
                                  "n_layers": layers, "d_ff": 64, "input": inp, "output_dim": 4,
                                  "position": position})


def random_records(config, rng, lengths):
    records = []
    for i, n in enumerate(lengths):
        if config.input_kind == "tokens":
            records.append({"id": f"s{i}", "tokens": rng.integers(0, config.vocab_size, n).tolist()})
        else:
            records.append({"id": i, "features": rng.normal(size=(n, config.n_features)).tolist()})
    return records


def torch_outputs(model, config, record):
    if config.input_kind == "tokens":
        x = torch.tensor([record["tokens"]], dtype=torch.int64)
    else:
        x = torch.tensor([record["features"]], dtype=torch.float32)
    with torch.no_grad():
        y, _ = model(x)
    return y[0].numpy()


@pytest.mark.parametrize("kind", ["tokens", "features"])
@pytest.mark.parametrize("position", ["none", "sinusoidal"])
@pytest.mark.parametrize("heads,layers", [(1, 1), (4, 3), (8, 1)])
def test_cpp_matches_pytorch_module(tmp_path, kind, position, heads, layers):
    config = make_config(kind, position, heads, layers)
    seed = int.from_bytes(os.urandom(4), "little")  # fresh inputs every run; printed on failure
    model = random_model(config, seed=seed).eval()
    save_model_dir(model, tmp_path / "model")
    rng = np.random.default_rng(seed)
    records = random_records(config, rng, [1, 2, 17, 300, 1000])
    for mode_args in ([], ["--stream"], ["--max_batch_tokens", "64"]):
        results, _ = run_score(tmp_path / "model", records, tmp_path, "--threads", "2", *mode_args)
        assert [r["id"] for r in results] == [r["id"] for r in records]
        for rec, res in zip(records, results):
            err = rel_err(res["outputs"], torch_outputs(model, config, rec))
            assert err < PARITY_TOLERANCE, (seed, mode_args, rec["id"], err)


def test_output_mode_last_and_stream_equal_scan(tmp_path):
    config = make_config("tokens", "sinusoidal", 4, 2)
    model = random_model(config, seed=3)
    save_model_dir(model, tmp_path / "model")
    records = random_records(config, np.random.default_rng(4), [5, 64, 129])
    full, _ = run_score(tmp_path / "model", records, tmp_path)
    last, _ = run_score(tmp_path / "model", records, tmp_path, "--output_mode", "last")
    stream, _ = run_score(tmp_path / "model", records, tmp_path, "--stream")
    for f, l, s in zip(full, last, stream):
        assert len(l["outputs"]) == 1
        assert rel_err(l["outputs"][0], f["outputs"][-1]) < 1e-6
        assert rel_err(s["outputs"], f["outputs"]) < 1e-5  # streaming == scan


@pytest.mark.parametrize("name", ["demo-lm", "demo-ts"])
def test_demo_model_reproduces_saved_metric(tmp_path, name):
    model_dir = REPO / "models" / name
    saved = json.loads((model_dir / "metrics.json").read_text())
    heldout = eval_demo.read_jsonl(model_dir / "heldout.jsonl")
    for args in ([], ["--stream"]):
        results, _ = run_score(model_dir, heldout, tmp_path, *args)
        outputs = {str(r["id"]): r["outputs"] for r in results}
        metrics = eval_demo.compute_metrics(saved.get("input_kind", "tokens" if name == "demo-lm" else "features"),
                                            heldout, outputs)
        assert metrics["metric"] == saved["metric"]
        assert abs(metrics["value"] - saved["value"]) <= METRIC_TOLERANCE, (args, metrics, saved)


def test_bad_input_lines_are_named_and_nothing_is_written(tmp_path):
    config = make_config("tokens", "none", 1, 1)
    save_model_dir(random_model(config, seed=1), tmp_path / "model")
    records = [{"id": 1, "tokens": [1, 2]}, {"id": 2, "tokens": [1, 50]}, {"id": 3, "features": [[0.0]]}]
    _, proc = run_score(tmp_path / "model", records, tmp_path, expect_ok=False)
    assert proc.returncode == 2
    assert "line 2: field 'tokens[1]': token id 50 out of range [0, 50)" in proc.stderr
    assert "line 3: field 'features': the model's input kind is tokens" in proc.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_bad_model_dir_and_flags(tmp_path):
    _, proc = run_score(tmp_path / "missing", [{"tokens": [1]}], tmp_path, expect_ok=False)
    assert proc.returncode == 2 and "model directory does not exist" in proc.stderr
    config = make_config("tokens", "none", 1, 1)
    save_model_dir(random_model(config, seed=1), tmp_path / "model")
    _, proc = run_score(tmp_path / "model", [{"tokens": [1]}], tmp_path, "--output_mode", "first",
                        expect_ok=False)
    assert proc.returncode == 2 and "--output_mode" in proc.stderr


def mca_summary(proc):
    """The one-line JSON FLOPs summary aaren-score writes to stderr with --mca_alpha."""
    lines = [line for line in proc.stderr.splitlines() if line.startswith('{"mca_enabled"')]
    assert len(lines) == 1, proc.stderr
    return json.loads(lines[0])


def test_mca_flags_outputs_and_flops_summary(tmp_path):
    model_dir = REPO / "models" / "demo-lm"
    records = eval_demo.read_jsonl(model_dir / "heldout.jsonl")[:4]
    tokens = sum(len(r["tokens"]) for r in records)
    exact_flops = 2 * 128 * 128 * 2 * tokens  # 2 d_model^2 per token and layer
    exact, _ = run_score(model_dir, records, tmp_path)
    mca, proc = run_score(model_dir, records, tmp_path, "--mca_alpha", "0.5", "--mca_seed", "3")
    s = mca_summary(proc)
    assert s == {"mca_enabled": True, "mca_alpha": 0.5, "mca_seed": 3, "tokens": tokens,
                 "value_flops": s["value_flops"], "value_flops_exact": exact_flops}
    assert 0 < s["value_flops"] < exact_flops
    assert all(rel_err(m["outputs"], e["outputs"]) > 1e-3 for m, e in zip(mca, exact))
    # The same seed gives the same outputs, by the scan or token by token (up to a rare token that
    # rounding moves across a sample-count boundary); another seed others.
    again, _ = run_score(model_dir, records, tmp_path, "--mca_alpha", "0.5", "--mca_seed", "3",
                         "--stream")
    other, _ = run_score(model_dir, records, tmp_path, "--mca_alpha", "0.5", "--mca_seed", "4")
    for m, a, o in zip(mca, again, other):
        assert rel_err(a["outputs"], m["outputs"]) < 1e-3
        assert rel_err(o["outputs"], m["outputs"]) > 1e-2
    # alpha 0 spends every sample: the exact result and cost. The summary can go to a file.
    stats = tmp_path / "stats.json"
    zero, proc = run_score(model_dir, records, tmp_path, "--mca_alpha", "0", "--mca_stats_file",
                           str(stats))
    assert '"mca_enabled"' not in proc.stderr
    s = json.loads(stats.read_text())
    assert s["value_flops"] == s["value_flops_exact"] == exact_flops
    for z, e in zip(zero, exact):
        assert rel_err(z["outputs"], e["outputs"]) < 1e-5
    # Without MCA no summary, unless asked for one.
    _, proc = run_score(model_dir, records, tmp_path)
    assert '"mca_enabled"' not in proc.stderr
    _, proc = run_score(model_dir, records, tmp_path, "--mca_stats_file", str(stats))
    s = json.loads(stats.read_text())
    assert s["mca_enabled"] is False and s["value_flops"] == s["value_flops_exact"] == exact_flops


@pytest.mark.parametrize("alpha", ["-1", "nan", "inf"])
def test_bad_mca_alpha(tmp_path, alpha):
    _, proc = run_score(REPO / "models" / "demo-lm", [{"tokens": [1]}], tmp_path,
                        f"--mca_alpha={alpha}", expect_ok=False)
    assert proc.returncode == 2 and "--mca_alpha" in proc.stderr, proc.stderr
