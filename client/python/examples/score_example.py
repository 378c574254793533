#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Scores the demo-ts held-out sequences with the Score RPC and prints their MSE, the metric of
tools/eval_demo.py: the mean over every position of every sequence (and every output dim) of
``(output - target)^2``, accumulated in float64.

    PYTHONPATH=<build>/python:client/python /usr/bin/python3 client/python/examples/score_example.py \
        --target localhost:50051 [--check 1e-3]

models/demo-ts/heldout.jsonl has one sequence per line:
``{"id": "ts-000", "features": [[8 floats], ...], "targets": [[1 float], ...]}``.
With ``--check TOL`` the exit status is 1 unless ``|MSE - metrics.json value| <= TOL``.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "client" / "python"))

from aaren_client import AarenClient, AarenError  # noqa: E402


def read_jsonl(path):
    with open(path, "r", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv=None) -> int:
    model_dir = REPO / "models" / "demo-ts"
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="localhost:50051", help="server host:port")
    p.add_argument("--model", default="demo-ts")
    p.add_argument("--heldout", default=str(model_dir / "heldout.jsonl"))
    p.add_argument("--metrics", default=str(model_dir / "metrics.json"),
                   help="metrics.json to compare with (--check)")
    p.add_argument("--batch", type=int, default=16, help="sequences per Score request")
    p.add_argument("--check", type=float, metavar="TOL", help="exit 1 if |MSE - expected| > TOL")
    p.add_argument("--timeout", type=float, default=60.0, help="per-call deadline, seconds")
    args = p.parse_args(argv)

    records = read_jsonl(args.heldout)
    se = 0.0
    n_el = 0
    n_pos = 0
    try:
        with AarenClient(args.target, timeout=args.timeout) as client:
            info = client.model_info(args.model)
            print(f"{args.model}: {info.input_kind}, n_features {info.n_features}, "
                  f"output_dim {info.output_dim}, backend {info.backend}")
            for i in range(0, len(records), args.batch):
                batch = records[i:i + args.batch]
                outputs = client.score(args.model, [np.asarray(r["features"], np.float32) for r in batch])
                for r, out in zip(batch, outputs):
                    targets = np.asarray(r["targets"], dtype=np.float64)
                    if out.shape != targets.shape:
                        print(f"{r['id']}: outputs {out.shape} vs targets {targets.shape}", file=sys.stderr)
                        return 1
                    se += float(((out.astype(np.float64) - targets) ** 2).sum())
                    n_el += targets.size
                    n_pos += targets.shape[0]
    except AarenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    mse = se / n_el
    result = {"metric": "mse", "value": mse, "n_sequences": len(records), "n_positions": n_pos}
    if args.check is not None:
        with open(args.metrics, "r", encoding="utf-8") as f:
            expected = json.load(f)["value"]
        result["expected_value"] = expected
        result["abs_diff"] = abs(mse - expected)
        result["ok"] = result["abs_diff"] <= args.check
    print(json.dumps(result, indent=2))
    return 0 if result.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
