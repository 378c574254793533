# SPDX-License-Identifier: Apache-2.0
"""Trains the demo time-series forecaster and writes ``models/demo-ts/``.

Usage: ``/usr/bin/python3 tools/train_demo_ts.py [--out models/demo-ts] [--steps N] ...``

Task: each sequence is a synthetic signal ``x_t = sum_j A_j sin(2 pi f_j t + phi_j) + noise`` with
2 or 3 sines (``f_j ~ U(0.01, 0.12)`` cycles/step, ``A_j ~ U(0.3, 1)``, ``phi_j ~ U(0, 2 pi)``) plus
Gaussian noise (sigma 0.1), rounded to 3 decimals. The input at step ``t`` is the window of the
last ``K = 8`` values ``[x_{t-7}, ..., x_t]`` (oldest first); the target is the next value
``x_{t+1}`` (``output_dim = 1``). The Aaren state pools the whole history, so the model can do
better than a fixed linear filter of the window. The noise floor of the MSE is ``sigma^2 = 0.01``.

Deterministic: fixed seeds (``torch.manual_seed``; numpy ``default_rng`` streams for the data),
``torch.set_num_threads(2)``. On the same machine and torch build a rerun reproduces every file
except the timing fields of metrics.json.

Writes to ``--out``: ``config.json``, ``model.safetensors``, ``heldout.jsonl`` (lines
``{"id", "features": [[8 floats] x N], "targets": [[1 float] x N]}``) and ``metrics.json`` (MSE of
the reloaded saved model on exactly heldout.jsonl, each sequence from position 0 with a fresh
state in float32, plus baselines: last value, and a least-squares linear filter of the window fit
on training data).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aaren_torch import AarenConfig, AarenModel, load_model_dir, save_model_dir  # noqa: E402
from eval_demo import compute_metrics, read_jsonl, reference_outputs, write_jsonl  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

WINDOW = 8  # lagged values per step (n_features)
NOISE = 0.1
DECIMALS = 3
TRAIN_DATA_SEED = 101
HELDOUT_DATA_SEED = 202


def make_series(rng: np.random.Generator, batch: int, length: int) -> np.ndarray:
    """``[batch, length]`` float64 signals (rounded to DECIMALS), see the module docstring."""
    t = np.arange(length, dtype=np.float64)
    out = np.empty((batch, length), dtype=np.float64)
    for b in range(batch):
        n = int(rng.integers(2, 4))
        f = rng.uniform(0.01, 0.12, size=n)
        a = rng.uniform(0.3, 1.0, size=n)
        ph = rng.uniform(0.0, 2.0 * math.pi, size=n)
        x = (a[:, None] * np.sin(2.0 * math.pi * f[:, None] * t[None, :] + ph[:, None])).sum(0)
        out[b] = x + rng.normal(0.0, NOISE, size=length)
    return np.round(out, DECIMALS)


def windows(series: np.ndarray, steps: int):
    """series ``[B, steps + WINDOW]`` -> (features ``[B, steps, WINDOW]``, targets ``[B, steps, 1]``)."""
    idx = np.arange(steps)[:, None] + np.arange(WINDOW)[None, :]
    feats = series[:, idx]
    targets = series[:, WINDOW : WINDOW + steps, None]
    return feats, targets


def lr_at(step: int, steps: int, base: float, warmup: int) -> float:
    """Linear warmup, then cosine decay to 5% of `base`."""
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, steps - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * p)))


def main() -> int:
    p = argparse.ArgumentParser(description="Train the demo Aaren time-series forecaster.")
    p.add_argument("--out", default=str(REPO / "models" / "demo-ts"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--chunk-size", type=int, default=64, help="attention chunk while training")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument("--heldout-seqs", type=int, default=64)
    p.add_argument("--heldout-len", type=int, default=256)
    args = p.parse_args()

    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    train_rng = np.random.default_rng([TRAIN_DATA_SEED, args.seed])
    held_rng = np.random.default_rng(HELDOUT_DATA_SEED)
    N = args.heldout_len
    hf, ht = windows(make_series(held_rng, args.heldout_seqs, N + WINDOW), N)
    heldout = [
        {
            "id": f"ts-{i:03d}",
            "features": [[round(float(v), DECIMALS) for v in row] for row in hf[i]],
            "targets": [[round(float(v), DECIMALS) for v in row] for row in ht[i]],
        }
        for i in range(args.heldout_seqs)
    ]

    config = AarenConfig(
        d_model=args.d_model,
        n_heads=args.n_heads,
        n_layers=args.n_layers,
        d_ff=4 * args.d_model,
        input={"kind": "features", "n_features": WINDOW},
        output_dim=1,
        position="none",
    )
    model = AarenModel(config)
    decay = [p_ for n, p_ in model.named_parameters() if p_.dim() >= 2 and not n.endswith("attn.query")]
    no_decay = [p_ for n, p_ in model.named_parameters() if not (p_.dim() >= 2 and not n.endswith("attn.query"))]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.98),
    )
    T = args.seq_len
    warmup = max(1, args.steps // 20)

    print(f"demo-ts: params={model.num_parameters()} steps={args.steps} batch={args.batch}x{T}", flush=True)
    t0 = time.time()
    model.train()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, warmup)
        f_np, t_np = windows(make_series(train_rng, args.batch, T + WINDOW), T)
        feats = torch.from_numpy(f_np.astype(np.float32))
        targets = torch.from_numpy(t_np.astype(np.float32))
        pred, _ = model(feats, chunk_size=args.chunk_size)
        loss = F.mse_loss(pred, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:4d} loss {loss.item():.5f} ({time.time() - t0:.0f}s)", flush=True)
    train_seconds = time.time() - t0

    save_model_dir(model, out, metadata={"producer": "tools/train_demo_ts.py"})
    write_jsonl(out / "heldout.jsonl", heldout)

    # The metric: reload the saved directory and score exactly the file we wrote.
    reloaded = load_model_dir(out)
    held_back = read_jsonl(out / "heldout.jsonl")
    metrics = compute_metrics("features", held_back, reference_outputs(reloaded, held_back))

    # Baselines on the same positions.
    feats = np.array([r["features"] for r in held_back], dtype=np.float64)  # [S, N, K]
    tg = np.array([r["targets"] for r in held_back], dtype=np.float64)  # [S, N, 1]
    last_mse = float(((feats[:, :, -1:] - tg) ** 2).mean())
    fit_f, fit_t = windows(make_series(np.random.default_rng(303), 256, N + WINDOW), N)
    X = np.concatenate([fit_f.reshape(-1, WINDOW), np.ones((fit_f.shape[0] * N, 1))], axis=1)
    coef, *_ = np.linalg.lstsq(X, fit_t.reshape(-1), rcond=None)
    lin_pred = feats @ coef[:-1] + coef[-1]
    lin_mse = float(((lin_pred[..., None] - tg) ** 2).mean())

    metrics.update(
        {
            "baseline_last_value_mse": last_mse,
            "baseline_linear_window_mse": lin_mse,
            "noise_floor_mse": NOISE**2,
            "model": "demo-ts",
            "window": WINDOW,
            "seed": args.seed,
            "steps": args.steps,
            "batch_size": args.batch,
            "seq_len": T,
            "learning_rate": args.lr,
            "train_data_seed": TRAIN_DATA_SEED,
            "heldout_data_seed": HELDOUT_DATA_SEED,
            "final_train_loss": loss.item(),
            "train_seconds": round(train_seconds, 1),
            "torch_version": torch.__version__,
            "num_threads": torch.get_num_threads(),
            "n_parameters": reloaded.num_parameters(),
            "script": "tools/train_demo_ts.py",
        }
    )
    with open(out / "metrics.json", "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2)
        f.write("\n")
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
