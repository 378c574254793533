# SPDX-License-Identifier: Apache-2.0
"""Held-out metric of a demo model directory, from outputs in aaren-score's JSON Lines format.

Usage::

    python3 tools/eval_demo.py MODEL_DIR [OUTPUTS.jsonl] [--heldout PATH] [--check TOL]

* ``MODEL_DIR`` holds ``config.json``, ``heldout.jsonl`` and (for ``--check``) ``metrics.json``.
* ``OUTPUTS.jsonl``: one line per sequence, ``{"id": ..., "outputs": [[...], ...]}`` with one row of
  ``output_dim`` floats per input position (aaren-score's output format). Without it, the outputs
  are computed with the PyTorch reference (``MODEL_DIR`` reloaded, each sequence from position 0
  with a fresh state, float32) — exactly how the training scripts produced ``metrics.json``.
* Prints the metrics as one JSON object. With ``--check TOL``, exits 1 unless
  ``|value - metrics.json["value"]| <= TOL``.

Metrics (every position of every held-out sequence counts once):

* token models (``heldout.jsonl`` lines ``{"id", "tokens", "targets"}``, targets = next token ids):
  ``accuracy`` = fraction of positions whose argmax of the logits (first index on ties) equals the
  target; also ``cross_entropy`` (mean natural-log loss of softmax(logits), computed in float64).
* feature models (lines ``{"id", "features", "targets"}``, targets ``[N, output_dim]``):
  ``mse`` = mean over positions and output dims of ``(output - target)^2`` in float64.

The result (and so ``metrics.json``) always has ``metric``, ``value``, ``input_kind``,
``n_sequences`` and ``n_positions``.

The functions are importable (``tools/`` on ``sys.path``) and shared with the training scripts.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional

import numpy as np
import torch

__all__ = [
    "read_jsonl",
    "write_jsonl",
    "reference_outputs",
    "compute_metrics",
    "evaluate",
]


def read_jsonl(path) -> List[dict]:
    """Reads a JSON Lines file (blank lines skipped)."""
    out = []
    with open(path, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: invalid JSON: {e}") from None
    return out


def write_jsonl(path, records: Iterable[Mapping]) -> None:
    """Writes one compact JSON object per line."""
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")


def _record_inputs(record: Mapping, kind: str) -> torch.Tensor:
    if kind == "tokens":
        return torch.tensor([record["tokens"]], dtype=torch.int64)
    return torch.tensor([record["features"]], dtype=torch.float32)


@torch.no_grad()
def reference_outputs(model, records: Iterable[Mapping], chunk_size: int = 256) -> Dict[str, np.ndarray]:
    """PyTorch outputs for each record: id -> float32 ``[N, output_dim]``.

    Each sequence is run alone, from position 0 with a fresh (identity) state, in the model's
    dtype (float32 for a loaded model directory).
    """
    model.eval()
    kind = model.config.input_kind
    out: Dict[str, np.ndarray] = {}
    for r in records:
        y, _ = model(_record_inputs(r, kind), state=None, position=0, chunk_size=chunk_size)
        out[str(r["id"])] = y[0].to(torch.float32).numpy()
    return out


def compute_metrics(kind: str, heldout: List[Mapping], outputs: Mapping[str, object]) -> dict:
    """Metrics of `outputs` (id -> ``[N, output_dim]`` array-like) against `heldout` targets.

    `kind` is the model's input kind ("tokens" -> accuracy, "features" -> mse). Every held-out id
    must have outputs with one row per target.
    """
    n_pos = 0
    if kind == "tokens":
        correct = 0
        nll = 0.0
        for r in heldout:
            rid = str(r["id"])
            if rid not in outputs:
                raise KeyError(f"no outputs for held-out sequence {rid!r}")
            logits = np.asarray(outputs[rid], dtype=np.float64)
            targets = np.asarray(r["targets"], dtype=np.int64)
            if logits.ndim != 2 or logits.shape[0] != targets.shape[0]:
                raise ValueError(f"{rid}: outputs shape {logits.shape} vs {targets.shape[0]} targets")
            correct += int((logits.argmax(axis=1) == targets).sum())
            mx = logits.max(axis=1, keepdims=True)
            lse = mx[:, 0] + np.log(np.exp(logits - mx).sum(axis=1))
            nll += float((lse - logits[np.arange(len(targets)), targets]).sum())
            n_pos += len(targets)
        acc = correct / n_pos
        return {
            "metric": "accuracy",
            "value": acc,
            "input_kind": kind,
            "cross_entropy": nll / n_pos,
            "bits_per_char": nll / n_pos / math.log(2.0),
            "n_sequences": len(heldout),
            "n_positions": n_pos,
        }
    if kind == "features":
        se = 0.0
        n_el = 0
        for r in heldout:
            rid = str(r["id"])
            if rid not in outputs:
                raise KeyError(f"no outputs for held-out sequence {rid!r}")
            pred = np.asarray(outputs[rid], dtype=np.float64)
            targets = np.asarray(r["targets"], dtype=np.float64)
            if pred.shape != targets.shape:
                raise ValueError(f"{rid}: outputs shape {pred.shape} vs targets {targets.shape}")
            se += float(((pred - targets) ** 2).sum())
            n_el += targets.size
            n_pos += targets.shape[0]
        return {
            "metric": "mse",
            "value": se / n_el,
            "input_kind": kind,
            "n_sequences": len(heldout),
            "n_positions": n_pos,
        }
    raise ValueError(f"unknown input kind {kind!r}")


def _outputs_from_jsonl(path) -> Dict[str, np.ndarray]:
    return {str(r["id"]): np.asarray(r["outputs"], dtype=np.float64) for r in read_jsonl(path)}


def evaluate(model_dir, outputs_path=None, heldout_path=None) -> dict:
    """Metrics for `model_dir` from `outputs_path` (aaren-score JSONL) or, if None, the PyTorch reference."""
    from aaren_torch import load_config, load_model_dir

    model_dir = Path(model_dir)
    config = load_config(model_dir)
    heldout = read_jsonl(heldout_path or model_dir / "heldout.jsonl")
    if outputs_path is None:
        outputs = reference_outputs(load_model_dir(model_dir), heldout)
    else:
        outputs = _outputs_from_jsonl(outputs_path)
    return compute_metrics(config.input_kind, heldout, outputs)


def main(argv: Optional[List[str]] = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir")
    p.add_argument("outputs", nargs="?", help="aaren-score output JSONL (default: PyTorch reference)")
    p.add_argument("--heldout", help="held-out JSONL (default: MODEL_DIR/heldout.jsonl)")
    p.add_argument("--check", type=float, metavar="TOL", help="compare with MODEL_DIR/metrics.json")
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    metrics = evaluate(args.model_dir, args.outputs, args.heldout)
    if args.check is not None:
        with open(Path(args.model_dir) / "metrics.json", "r", encoding="utf-8") as f:
            expected = json.load(f)
        metrics["expected_value"] = expected["value"]
        metrics["abs_diff"] = abs(metrics["value"] - expected["value"])
        metrics["ok"] = metrics["abs_diff"] <= args.check and metrics["metric"] == expected["metric"]
    print(json.dumps(metrics, indent=2))
    return 0 if metrics.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
