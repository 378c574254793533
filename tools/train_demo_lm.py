# SPDX-License-Identifier: Apache-2.0
"""Trains the demo character-level language model and writes ``models/demo-lm/``.

Usage: ``/usr/bin/python3 tools/train_demo_lm.py [--out models/demo-lm] [--steps N] ...``

Deterministic: fixed seeds (``torch.manual_seed``, a seeded ``torch.Generator`` for batches, a
seeded text generator), ``torch.set_num_threads(2)``, no data-dependent control flow. On the same
machine and torch build a rerun reproduces every file except the timing fields of metrics.json.

Data: English-like text from :mod:`demo_text` (a small grammar; seed 1 for training, seed 2 for the
held-out set, so held-out sentences are new combinations). Vocabulary = ``demo_text.alphabet()``.

Writes to ``--out``:

* ``config.json``, ``model.safetensors`` — the model directory (tokens in, next-char logits out,
  sinusoidal positions);
* ``vocab.json`` — ``{"chars": [...]}``: token id ``i`` is the character ``chars[i]``;
* ``heldout.jsonl`` — ``{"id", "tokens", "targets"}`` per line, ``targets[t] = tokens[t+1]`` of the
  underlying text (the next character after each input position);
* ``metrics.json`` — next-char accuracy (argmax) and cross-entropy on every position of every
  held-out sequence, measured by reloading the saved directory and running each sequence from
  position 0 with a fresh state in float32 (:func:`eval_demo.reference_outputs`), plus provenance.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

import demo_text  # noqa: E402
from aaren_torch import AarenConfig, AarenModel, load_model_dir, save_model_dir  # noqa: E402
from eval_demo import compute_metrics, read_jsonl, reference_outputs, write_jsonl  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

TRAIN_TEXT_SEED = 1
HELDOUT_TEXT_SEED = 2


def lr_at(step: int, steps: int, base: float, warmup: int) -> float:
    """Linear warmup, then cosine decay to 10% of `base`."""
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, steps - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * p)))


def main() -> int:
    p = argparse.ArgumentParser(description="Train the demo char-level Aaren LM.")
    p.add_argument("--out", default=str(REPO / "models" / "demo-lm"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--chunk-size", type=int, default=64, help="attention chunk while training")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument("--train-chars", type=int, default=2_000_000)
    p.add_argument("--heldout-seqs", type=int, default=64)
    p.add_argument("--heldout-len", type=int, default=256)
    args = p.parse_args()

    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    chars = demo_text.alphabet()
    stoi = {c: i for i, c in enumerate(chars)}
    V = len(chars)

    train_text = demo_text.generate_text(TRAIN_TEXT_SEED, args.train_chars)
    data = torch.tensor([stoi[c] for c in train_text], dtype=torch.int64)
    L = args.heldout_len
    held_text = demo_text.generate_text(HELDOUT_TEXT_SEED, args.heldout_seqs * (L + 1))
    heldout = []
    for i in range(args.heldout_seqs):
        ids = [stoi[c] for c in held_text[i * (L + 1) : (i + 1) * (L + 1)]]
        heldout.append({"id": f"lm-{i:03d}", "tokens": ids[:-1], "targets": ids[1:]})

    config = AarenConfig(
        d_model=args.d_model,
        n_heads=args.n_heads,
        n_layers=args.n_layers,
        d_ff=4 * args.d_model,
        input={"kind": "tokens", "vocab_size": V},
        output_dim=V,
        position="sinusoidal",
    )
    model = AarenModel(config)
    decay = [p_ for n, p_ in model.named_parameters() if p_.dim() >= 2 and not n.endswith("attn.query")]
    no_decay = [p_ for n, p_ in model.named_parameters() if not (p_.dim() >= 2 and not n.endswith("attn.query"))]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.98),
    )
    gen = torch.Generator().manual_seed(args.seed + 12345)
    T = args.seq_len
    warmup = max(1, args.steps // 20)

    print(f"demo-lm: V={V} params={model.num_parameters()} steps={args.steps} batch={args.batch}x{T}", flush=True)
    t0 = time.time()
    model.train()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, warmup)
        starts = torch.randint(0, len(data) - T - 1, (args.batch,), generator=gen)
        idx = starts.unsqueeze(1) + torch.arange(T + 1)
        chunk = data[idx]
        logits, _ = model(chunk[:, :-1], chunk_size=args.chunk_size)
        loss = F.cross_entropy(logits.reshape(-1, V), chunk[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:4d} loss {loss.item():.4f} ({time.time() - t0:.0f}s)", flush=True)
    train_seconds = time.time() - t0

    save_model_dir(model, out, metadata={"producer": "tools/train_demo_lm.py"})
    with open(out / "vocab.json", "w", encoding="utf-8") as f:
        json.dump({"chars": chars}, f, indent=2)
        f.write("\n")
    write_jsonl(out / "heldout.jsonl", heldout)

    # The metric: reload the saved directory and score exactly the file we wrote.
    reloaded = load_model_dir(out)
    held_back = read_jsonl(out / "heldout.jsonl")
    metrics = compute_metrics("tokens", held_back, reference_outputs(reloaded, held_back))
    metrics.update(
        {
            "model": "demo-lm",
            "seed": args.seed,
            "steps": args.steps,
            "batch_size": args.batch,
            "seq_len": T,
            "learning_rate": args.lr,
            "train_text_seed": TRAIN_TEXT_SEED,
            "heldout_text_seed": HELDOUT_TEXT_SEED,
            "final_train_loss": loss.item(),
            "train_seconds": round(train_seconds, 1),
            "torch_version": torch.__version__,
            "num_threads": torch.get_num_threads(),
            "n_parameters": reloaded.num_parameters(),
            "script": "tools/train_demo_lm.py",
        }
    )
    with open(out / "metrics.json", "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2)
        f.write("\n")
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
