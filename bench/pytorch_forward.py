#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Times the PyTorch reference module (tools/aaren_torch) on the scan benchmark's shape.

Same model shape and input size as ``scan_bench``'s BM_ModelForward: D=256, H=8, L=4, d_ff=1024,
vocab 256, output_dim 256, sinusoidal positions, one sequence of 65536 tokens, every output.
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
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config = AarenConfig.from_dict({
        "model_type": "aaren", "d_model": 256, "n_heads": 8, "n_layers": 4, "d_ff": 1024,
        "input": {"kind": "tokens", "vocab_size": 256}, "output_dim": 256,
        "position": "sinusoidal", "norm_eps": 1e-5,
    })
    model = random_model(config, seed=1).eval()
    tokens = torch.randint(0, 256, (1, args.tokens), generator=torch.Generator().manual_seed(2))
    best = None
    for chunk in [int(c) for c in args.chunk_sizes.split(",")]:
        with torch.no_grad():
            model(tokens[:, :4096], chunk_size=chunk)  # warm-up
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                out, _ = model(tokens, chunk_size=chunk)
                times.append(time.perf_counter() - t0)
        r = {"threads": args.threads, "chunk_size": chunk, "seconds": min(times),
             "tokens_per_s": args.tokens / min(times), "torch": torch.__version__}
        print(json.dumps(r), flush=True)
        if best is None or r["seconds"] < best["seconds"]:
            best = r
    print(json.dumps(dict(best, best=True)))


if __name__ == "__main__":
    main()
