#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Times the PyTorch reference module (tools/aaren_torch) on the scan benchmark's shape.

Default: the same model shape and input size as ``scan_bench``'s BM_ModelForward: D=256, H=8,
L=4, d_ff=1024, vocab 256, output_dim 256, sinusoidal positions, one sequence of 65536 tokens,
every output. ``--config`` takes another model's config.json (random weights of that shape) and
``--batch`` runs that many sequences of ``--tokens`` each; ``--device cuda`` runs eager PyTorch on
the GPU (the CUDA benchmarks' baseline, bench/run_cuda_benchmarks.sh).
Run with Debian's interpreter (torch 1.13): ``/usr/bin/python3 bench/pytorch_forward.py --threads 2``.
Prints one JSON object per chunk size tried: {"threads", "chunk_size", "seconds", "tokens_per_s"}
(best of ``--repeats`` runs after a warm-up), and finally the best one with "best": true.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

import torch  # noqa: E402

from aaren_torch.model import AarenConfig, random_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=65536)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk_sizes", default="128,256,512")
    ap.add_argument("--config", default="", help="a model's config.json (default: the scan shape)")
    ap.add_argument("--batch", type=int, default=1, help="sequences per forward")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.config:
        config = AarenConfig.from_dict(json.loads(Path(args.config).read_text()))
    else:
        config = AarenConfig.from_dict({
            "model_type": "aaren", "d_model": 256, "n_heads": 8, "n_layers": 4, "d_ff": 1024,
            "input": {"kind": "tokens", "vocab_size": 256}, "output_dim": 256,
            "position": "sinusoidal", "norm_eps": 1e-5,
        })
    device = torch.device(args.device)
    model = random_model(config, seed=1).eval().to(device)
    gen = torch.Generator().manual_seed(2)
    if config.input_kind == "tokens":
        inputs = torch.randint(0, config.vocab_size, (args.batch, args.tokens), generator=gen)
    else:
        inputs = torch.randn(args.batch, args.tokens, config.n_features, generator=gen)
    inputs = inputs.to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    best = None
    total = args.batch * args.tokens
    for chunk in [int(c) for c in args.chunk_sizes.split(",")]:
        with torch.no_grad():
            model(inputs[:, :4096], chunk_size=chunk)  # warm-up
            sync()
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                out, _ = model(inputs, chunk_size=chunk)
                sync()
                times.append(time.perf_counter() - t0)
        r = {"threads": args.threads, "chunk_size": chunk, "seconds": min(times),
             "tokens_per_s": total / min(times), "torch": torch.__version__,
             "device": str(device), "batch": args.batch, "tokens": args.tokens}
        print(json.dumps(r), flush=True)
        if best is None or r["seconds"] < best["seconds"]:
            best = r
    print(json.dumps(dict(best, best=True)))


if __name__ == "__main__":
    main()
