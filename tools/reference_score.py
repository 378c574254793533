# SPDX-License-Identifier: Apache-2.0
"""PyTorch-reference counterpart of ``aaren-score``: outputs of a model directory for a JSON Lines
file of sequences, in aaren-score's output format.

Usage::

    python3 tools/reference_score.py MODEL_DIR INPUT.jsonl OUTPUT.jsonl [--chunk-size N] [--float64]

Input lines: ``{"id": ..., "tokens": [...]}`` (token models) or ``{"id": ..., "features": [[F floats],
...]}`` (feature models); other keys (e.g. ``targets``) are ignored. Output lines:
``{"id": ..., "outputs": [[output_dim floats], ...]}``, one row per input position, each sequence
run alone from position 0 with a fresh state. Floats are written with full precision (the
shortest decimal that round-trips the float32 value, or the float64 value with ``--float64``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aaren_torch import load_model_dir  # noqa: E402
from eval_demo import read_jsonl, reference_outputs, write_jsonl  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description="Score sequences with the PyTorch reference module.")
    p.add_argument("model_dir")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--chunk-size", type=int, default=256)
    p.add_argument("--float64", action="store_true", help="run the model in float64")
    args = p.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    model = load_model_dir(args.model_dir)
    if args.float64:
        model = model.double()
    records = read_jsonl(args.input)
    if args.float64:
        with torch.no_grad():
            kind = model.config.input_kind
            outs = {}
            for r in records:
                x = (torch.tensor([r["tokens"]], dtype=torch.int64) if kind == "tokens"
                     else torch.tensor([r["features"]], dtype=torch.float64))
                outs[str(r["id"])] = model(x, chunk_size=args.chunk_size)[0][0].numpy()
    else:
        outs = reference_outputs(model, records, chunk_size=args.chunk_size)
    write_jsonl(args.output, ({"id": r["id"], "outputs": outs[str(r["id"])].tolist()} for r in records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
