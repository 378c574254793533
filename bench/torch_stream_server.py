#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The baseline a user would pick instead of Aaren Serve: the PyTorch reference module
(tools/aaren_torch) served by Python grpcio, one recurrent state per session, speaking the
aaren.v1 wire contract's ListModels, Stream and DeleteSession so that ``aaren-cli bench --mode stream`` drives it
exactly as it drives aaren-server.

    /usr/bin/python3 bench/torch_stream_server.py --model_dir models/demo-lm --port_file F

Each Stream opens (or creates) one session; each append runs the model on the appended tokens
from the session's state and position (``AarenModel.forward(inputs, state, position)``), replies
with the outputs the request's output_mode asks for, and keeps the new state. Sessions live in a
dict for the server's lifetime. Everything else of the contract (Score, unary sessions, tenants,
limits, durability) is not here: this is a throughput baseline, not a server. Run with Debian's
interpreter (torch, grpcio); the stubs come from the build (``build/python``).
"""

import argparse
import json
import os
import secrets
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, os.environ.get("AAREN_PYTHON_STUBS", str(REPO / "build" / "python")))

import grpc  # noqa: E402
import torch  # noqa: E402

from aaren.v1 import aaren_pb2, aaren_pb2_grpc  # noqa: E402
from aaren_torch.model_dir import load_model_dir  # noqa: E402


class Baseline(aaren_pb2_grpc.AarenServicer):
    def __init__(self, name: str, model_dir: Path):
        self.name = name
        self.model = load_model_dir(model_dir).eval()
        cfg = self.model.config
        self.cfg = cfg
        raw = json.loads((model_dir / "config.json").read_text())
        self.info = aaren_pb2.ModelInfo(
            name=name, model_type="aaren", d_model=cfg.d_model, n_heads=cfg.n_heads,
            n_layers=cfg.n_layers, d_ff=cfg.d_ff, input_kind=cfg.input_kind,
            vocab_size=cfg.vocab_size if cfg.input_kind == "tokens" else 0,
            n_features=cfg.n_features if cfg.input_kind == "features" else 0,
            output_dim=cfg.output_dim, position=raw.get("position", "none"),
            state_bytes=cfg.state_floats() * 4 + 8, backend="pytorch",
            num_parameters=self.model.num_parameters())
        self.sessions = {}  # id -> [state, position]
        self.lock = threading.Lock()

    def ListModels(self, request, context):
        return aaren_pb2.ListModelsResponse(models=[self.info])

    def DeleteSession(self, request, context):  # aaren-cli bench deletes its sessions at the end
        with self.lock:
            if self.sessions.pop(request.session_id, None) is None:
                context.abort(grpc.StatusCode.NOT_FOUND, "unknown session_id")
        return aaren_pb2.DeleteSessionResponse()

    def _session_message(self, sid, position):
        return aaren_pb2.Session(session_id=sid, model=self.name, position=position,
                                 state_bytes=self.info.state_bytes)

    def Stream(self, request_iterator, context):
        sid = None
        for req in request_iterator:
            kind = req.WhichOneof("request")
            if kind == "open":
                o = req.open
                if o.model and o.model != self.name:
                    context.abort(grpc.StatusCode.NOT_FOUND, f"model '{o.model}' is not served")
                sid = o.session_id or secrets.token_hex(16)
                with self.lock:
                    if sid not in self.sessions:
                        self.sessions[sid] = [self.model.init_state(1), 0]
                    position = self.sessions[sid][1]
                yield aaren_pb2.StreamResponse(session=self._session_message(sid, position))
                continue
            if kind != "append" or sid is None:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "open the stream first")
            a = req.append
            with self.lock:
                entry = self.sessions[sid]
            if self.cfg.input_kind == "tokens":
                x = torch.tensor([list(a.input.tokens)], dtype=torch.int64)
            else:
                x = torch.tensor(list(a.input.features), dtype=torch.float32).view(
                    1, -1, self.cfg.n_features)
            with torch.inference_mode():
                y, state = self.model(x, entry[0], entry[1])
            entry[0] = state
            entry[1] += x.shape[1]
            y = y[0]
            if a.output_mode == aaren_pb2.OUTPUT_MODE_LAST:
                y = y[-1:]
            elif a.output_mode == aaren_pb2.OUTPUT_MODE_NONE:
                y = y[:0]
            yield aaren_pb2.StreamResponse(append=aaren_pb2.AppendResponse(
                outputs=y.reshape(-1).tolist(), output_dim=self.cfg.output_dim,
                position=entry[1], session_id=sid))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model_dir", default=str(REPO / "models" / "demo-lm"))
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port_file", default="")
    ap.add_argument("--workers", type=int, default=512,
                    help="grpcio threads: one per open Stream (sync server)")
    ap.add_argument("--torch_threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.torch_threads)
    model_dir = Path(args.model_dir)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers),
                         options=[("grpc.max_receive_message_length", 64 << 20),
                                  ("grpc.max_send_message_length", 64 << 20)])
    aaren_pb2_grpc.add_AarenServicer_to_server(Baseline(model_dir.name, model_dir), server)
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    server.start()
    if args.port_file:
        Path(args.port_file).write_text(str(port))
    print(f"torch_stream_server: {model_dir.name} on {args.host}:{port}", file=sys.stderr,
          flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
