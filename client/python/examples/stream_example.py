#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Streams text into a demo-lm session one character at a time over the bidirectional Stream RPC,
printing after each character the model's most likely next character; then lets the server
continue the text with Generate (greedy) and deletes the session.

    PYTHONPATH=<build>/python:client/python /usr/bin/python3 client/python/examples/stream_example.py \
        --target localhost:50051 [--text "..."] [--generate 60]

The vocabulary is models/demo-lm/vocab.json, ``{"chars": [...]}``: token id ``i`` is ``chars[i]``.
"""

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "client" / "python"))

from aaren_client import AarenClient, AarenError  # noqa: E402

DEFAULT_TEXT = "The old farmer sees a small dog near the river. Anna asks, \"Does the cat sleep?\""


def show(c: str) -> str:
    return {"\n": "\\n", " ": "' '"}.get(c, c)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="localhost:50051", help="server host:port")
    p.add_argument("--model", default="demo-lm")
    p.add_argument("--vocab", default=str(REPO / "models" / "demo-lm" / "vocab.json"))
    p.add_argument("--text", default=DEFAULT_TEXT)
    p.add_argument("--generate", type=int, default=60, metavar="N",
                   help="then generate N characters greedily (0: none)")
    p.add_argument("--timeout", type=float, default=30.0, help="per-call deadline, seconds")
    args = p.parse_args(argv)

    with open(args.vocab, "r", encoding="utf-8") as f:
        chars = json.load(f)["chars"]
    index = {c: i for i, c in enumerate(chars)}
    unknown = sorted({c for c in args.text if c not in index})
    if unknown:
        print(f"characters not in the vocabulary: {unknown!r}", file=sys.stderr)
        return 2
    if not args.text:
        print("--text is empty", file=sys.stderr)
        return 2

    try:
        with AarenClient(args.target, timeout=args.timeout) as client:
            info = client.model_info(args.model)
            if info.input_kind != "tokens" or info.vocab_size != len(chars):
                print(f"{args.model}: input_kind {info.input_kind}, vocab_size {info.vocab_size}; "
                      f"{args.vocab} has {len(chars)} characters", file=sys.stderr)
                return 2
            hits = 0
            with client.stream(model=args.model, timeout=args.timeout) as s:
                print(f"session {s.session_id} on {args.model} (state {info.state_bytes} bytes)")
                predicted = None
                for ch in args.text:
                    if predicted is not None:
                        hits += predicted == ch
                    logits = s.append([index[ch]])[-1]          # [output_dim]
                    predicted = chars[int(logits.argmax())]
                    print(f"position {s.position:4d}  read {show(ch):>4}  next? {show(predicted)}")
                session_id = s.session_id
            n = len(args.text) - 1
            if n:
                print(f"next-character accuracy: {hits}/{n} = {hits / n:.3f}")
            try:
                if args.generate > 0:
                    out = "".join(chars[tok] for tok, _ in client.generate(
                        session_id, max_tokens=args.generate, temperature=0.0))
                    print(f"generated: {args.text}[{out}]")
                print(f"final position: {client.get_session(session_id).position}")
            finally:
                client.delete_session(session_id)
    except AarenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
