# SPDX-License-Identifier: Apache-2.0
"""The Python client's routing metadata (DESIGN.md 7.3, client/python/README.md): every call that
names a session carries ``aaren-session-id: ID`` (Stream included, set when the call starts),
calls without one carry none, and the header goes with the ``authorization`` token.

Against a recording fake of aaren.v1.Aaren served in process (no model, no aaren-server).
"""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
import pytest

NONE = "<none>"


@pytest.fixture()
def fake():
    """A fake Aaren service on a loopback port; ``fake.calls`` lists ``(method, header,
    authorization)`` per call in arrival order."""
    from aaren_client import aaren_pb2, aaren_pb2_grpc

    class Recorder(aaren_pb2_grpc.AarenServicer):
        def __init__(self):
            self.calls = []
            self._lock = threading.Lock()

        def _record(self, method, context):
            md = context.invocation_metadata()
            header = [v for k, v in md if k == "aaren-session-id"]
            auth = [v for k, v in md if k == "authorization"]
            with self._lock:
                self.calls.append((method, ",".join(header) if header else NONE,
                                   auth[0] if auth else None))

        def _session(self, session_id):
            return aaren_pb2.Session(session_id=session_id or "made-1", model="demo-lm")

        def ListModels(self, request, context):
            self._record("ListModels", context)
            return aaren_pb2.ListModelsResponse(
                models=[aaren_pb2.ModelInfo(name="demo-lm", input_kind="tokens", output_dim=1)])

        def Score(self, request, context):
            self._record("Score", context)
            return aaren_pb2.ScoreResponse(results=[aaren_pb2.SequenceResult(
                session_id="prefilled" if request.prefill else "", output_dim=1)
                for _ in request.sequences])

        def CreateSession(self, request, context):
            self._record("CreateSession", context)
            return self._session(request.session_id)

        def Append(self, request, context):
            self._record("Append", context)
            return aaren_pb2.AppendResponse(session_id=request.session_id, output_dim=1,
                                            position=len(request.input.tokens))

        def GetSession(self, request, context):
            self._record("GetSession", context)
            return self._session(request.session_id)

        def DeleteSession(self, request, context):
            self._record("DeleteSession", context)
            return aaren_pb2.DeleteSessionResponse()

        def ForkSession(self, request, context):
            self._record("ForkSession", context)
            return self._session(request.new_session_id)

        def ExportSession(self, request, context):
            self._record("ExportSession", context)
            return aaren_pb2.ExportSessionResponse(
                snapshot=aaren_pb2.SessionSnapshot(format_version=1, model="demo-lm"))

        def ImportSession(self, request, context):
            self._record("ImportSession", context)
            return self._session(request.session_id)

        def Generate(self, request, context):
            self._record("Generate", context)
            for i in range(request.max_tokens):
                yield aaren_pb2.GenerateResponse(token=i, position=i + 1)

        def Stream(self, request_iterator, context):
            self._record("Stream", context)
            for r in request_iterator:
                if r.WhichOneof("request") == "open":
                    yield aaren_pb2.StreamResponse(session=self._session(r.open.session_id))
                else:
                    yield aaren_pb2.StreamResponse(append=aaren_pb2.AppendResponse(
                        output_dim=1, position=len(r.append.input.tokens)))

    recorder = Recorder()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    aaren_pb2_grpc.add_AarenServicer_to_server(recorder, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    recorder.target = f"127.0.0.1:{port}"
    yield recorder
    server.stop(None)


def test_every_session_call_carries_its_session_id(fake, monkeypatch):
    from aaren_client import AarenClient

    monkeypatch.delenv("AAREN_TOKEN", raising=False)
    with AarenClient(fake.target, timeout=10) as c:
        c.list_models()
        c.score("demo-lm", [[1, 2]])
        c.prefill("demo-lm", [[1, 2]])
        c.create_session("demo-lm")  # server-made id: unknown, no header
        c.create_session("demo-lm", session_id="mine")
        c.append("mine", [1, 2])
        c.get_session("mine")
        c.fork_session("mine", new_session_id="mine-copy")  # routed by the source
        snapshot = c.export_session("mine")
        c.import_session(snapshot)  # server-made id: no header
        c.import_session(snapshot, session_id="imported")
        assert len(list(c.generate("mine", max_tokens=2))) == 2
        c.delete_session("mine-copy")
    assert [(m, h) for m, h, _ in fake.calls] == [
        ("ListModels", NONE), ("Score", NONE), ("Score", NONE), ("CreateSession", NONE),
        ("CreateSession", "mine"), ("Append", "mine"), ("GetSession", "mine"),
        ("ForkSession", "mine"), ("ExportSession", "mine"), ("ImportSession", NONE),
        ("ImportSession", "imported"), ("Generate", "mine"), ("DeleteSession", "mine-copy"),
    ]


def test_a_stream_carries_the_id_it_opens_from_the_start(fake, monkeypatch):
    from aaren_client import AarenClient

    monkeypatch.delenv("AAREN_TOKEN", raising=False)
    with AarenClient(fake.target, timeout=10) as c:
        with c.stream(session_id="s1") as s:  # attach
            s.append([1])
        with c.stream(model="demo-lm", session_id="chosen", create_if_missing=True) as s:
            s.append([1, 2])
        with c.stream(model="demo-lm") as s:  # created under a server-made id: no header
            assert s.session_id == "made-1"
            s.append([1])
    assert [(m, h) for m, h, _ in fake.calls] == [
        ("Stream", "s1"), ("Stream", "chosen"), ("Stream", NONE)]


def test_the_routing_header_goes_with_the_token(fake):
    from aaren_client import AarenClient

    with AarenClient(fake.target, timeout=10, token="tenant-token") as c:
        c.list_models()
        c.get_session("s1")
        with c.stream(session_id="s1") as s:
            s.append([1])
    assert fake.calls == [("ListModels", NONE, "Bearer tenant-token"),
                          ("GetSession", "s1", "Bearer tenant-token"),
                          ("Stream", "s1", "Bearer tenant-token")]


def test_an_id_that_is_no_legal_header_value_is_sent_without_one(fake, monkeypatch):
    from aaren_client import AarenClient

    monkeypatch.delenv("AAREN_TOKEN", raising=False)
    with AarenClient(fake.target, timeout=10) as c:
        # The server judges such ids; the client must not fail the call over the header.
        assert c.append("bad\nid", [1]).session_id == "bad\nid"
        c.append("x" * 129, [1])
    assert [(m, h) for m, h, _ in fake.calls] == [("Append", NONE), ("Append", NONE)]
