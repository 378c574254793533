# SPDX-License-Identifier: Apache-2.0
"""The Python client against a server with TLS, mutual TLS and bearer tokens (README,
"Security"), with certificates made by tests/support/make_test_certs.sh (openssl):

* ``tls_ca_file`` + ``tls_cert_file``/``tls_key_file`` + ``token`` connect and serve;
* no token, a wrong token, no client certificate or a plaintext channel are refused;
* ``AAREN_TOKEN`` supplies the token; tenants cannot see each other's sessions (NOT_FOUND).
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from aaren_test_server import REPO, start_server, stop_server

TOKEN_A = "python-tenant-a-token-0123"
TOKEN_B = "python-tenant-b-token-0123"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    subprocess.run(["bash", str(REPO / "tests" / "support" / "make_test_certs.sh"), str(d)],
                   check=True)
    return d


@pytest.fixture(scope="module")
def secure_server(pki, tmp_path_factory):
    tokens = pki / "tokens"
    tokens.write_text(f"tenant-a {TOKEN_A}\ntenant-b {TOKEN_B}\n")
    srv = start_server(
        tmp_path_factory.mktemp("secure-server"),
        ["--tls_cert_file", str(pki / "server.pem"), "--tls_key_file", str(pki / "server.key"),
         "--tls_client_ca_file", str(pki / "ca.pem"), "--auth_tokens_file", str(tokens)],
        client_kwargs=dict(tls_ca_file=str(pki / "ca.pem"), tls_cert_file=str(pki / "client.pem"),
                           tls_key_file=str(pki / "client.key")))
    yield srv
    stop_server(srv)


def client(srv, pki, **kwargs):
    from aaren_client import AarenClient

    tls = dict(tls_ca_file=str(pki / "ca.pem"), tls_cert_file=str(pki / "client.pem"),
               tls_key_file=str(pki / "client.key"))
    tls.update(kwargs)
    return AarenClient(srv.target, timeout=30, **tls)


def test_tls_with_a_token_serves(secure_server, pki):
    with client(secure_server, pki, token=TOKEN_A) as c:
        assert c.health() == "SERVING"
        assert sorted(m.name for m in c.list_models()) == ["demo-lm", "demo-ts"]
        out = c.score("demo-lm", [[1, 2, 3]])[0]
        assert out.shape == (3, 43) and np.all(np.isfinite(out))
        with c.stream(model="demo-lm") as s:
            assert s.append([4, 5]).shape == (2, 43)


def test_missing_or_wrong_tokens_are_unauthenticated(secure_server, pki, monkeypatch):
    from aaren_client import Unauthenticated

    monkeypatch.delenv("AAREN_TOKEN", raising=False)
    for token in (None, "a-token-nobody-issued-00"):
        with client(secure_server, pki, token=token) as c:
            assert c.health() == "SERVING"  # health stays open
            with pytest.raises(Unauthenticated):
                c.list_models()
            with pytest.raises(Unauthenticated):
                with c.stream(model="demo-lm") as s:
                    s.append([1])


def test_the_token_comes_from_the_environment(secure_server, pki, monkeypatch):
    monkeypatch.setenv("AAREN_TOKEN", TOKEN_B)
    with client(secure_server, pki) as c:
        assert len(c.list_models()) == 2


def test_no_client_certificate_or_plaintext_is_refused(secure_server, pki):
    from aaren_client import AarenClient, Unavailable

    with AarenClient(secure_server.target, timeout=5, tls_ca_file=str(pki / "ca.pem"),
                     token=TOKEN_A) as c:
        with pytest.raises(Unavailable):
            c.list_models()
    with AarenClient(secure_server.target, timeout=5, token=TOKEN_A) as c:
        with pytest.raises(Unavailable):
            c.list_models()


def test_tenants_do_not_see_each_other(secure_server, pki):
    from aaren_client import NotFound

    with client(secure_server, pki, token=TOKEN_A) as a, \
            client(secure_server, pki, token=TOKEN_B) as b:
        s = a.create_session("demo-lm", session_id="py-shared", prefix=[1, 2])
        assert s.position == 2
        with pytest.raises(NotFound):
            b.get_session("py-shared")
        with pytest.raises(NotFound):
            b.append("py-shared", [3])
        with pytest.raises(NotFound):
            b.export_session("py-shared")
        b.create_session("demo-lm", session_id="py-shared")  # B's own, separate
        assert b.get_session("py-shared").position == 0
        assert a.get_session("py-shared").position == 2
        b.delete_session("py-shared")
        assert a.get_session("py-shared").position == 2
