# SPDX-License-Identifier: Apache-2.0
"""The float64 oracle (tests/python_support/float64_oracle.py) as a child process.

The suite runs in the tritonclient virtualenv, which has no torch; this script runs in Debian's
interpreter (``AAREN_ORACLE_PYTHON``, default /usr/bin/python3), which has. Protocol: one JSON
object a line on stdin, ``{"model_dir": DIR, "input": [...]}`` (token ids, or feature rows
``[n][F]``), answered by one line on stdout, ``{"outputs": [[float64 ...] ...]}`` (``[n,
output_dim]``) or ``{"error": "..."}``. A first line ``{"ready": true}`` says the imports worked.
"""

import json
import os
import sys
import traceback
from pathlib import Path

REPO = Path(os.environ.get("AAREN_SOURCE_DIR") or Path(__file__).resolve().parents[2]).resolve()
sys.path[:0] = [str(REPO / "tools"), str(REPO / "tests" / "python_support")]


def main() -> None:
    out = sys.stdout
    try:
        import torch
        from aaren_torch import load_model_dir
        from float64_oracle import oracle_forward
    except Exception as e:  # noqa: BLE001 - reported to the suite
        out.write(json.dumps({"error": f"oracle imports failed: {e!r}"}) + "\n")
        out.flush()
        return
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    models = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            d = req["model_dir"]
            if d not in models:
                models[d] = load_model_dir(d)
            model = models[d]
            x = req["input"]
            if model.config.input_kind == "tokens":
                inp = torch.tensor([x], dtype=torch.long)
            else:
                inp = torch.tensor([x], dtype=torch.float32)
            with torch.no_grad():
                y, _ = oracle_forward(model, inp)
            reply = {"outputs": y[0].tolist()}
        except Exception:  # noqa: BLE001 - reported to the suite
            reply = {"error": traceback.format_exc()}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
