"""TLS is one setting away: a server with a certificate, corral connecting with CORRAL_NATS_TLS_CA."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from corral.harness.server import EmbeddedServer
from corral.core.spawn import corral_argv


def openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def certs(tmp_path):
    """A throwaway CA and a server certificate for 127.0.0.1, made with openssl."""
    d = tmp_path / "certs"
    d.mkdir()
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
            "-subj", "/CN=corral-test-ca", cwd=d)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem",
            "-days", "1", "-extfile", "ext.cnf", cwd=d)
    return d


def corral(*args: str, env: dict) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(corral_argv(*args), capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def test_corral_works_over_tls_with_the_ca_setting_and_fails_clearly_without_it(certs, tmp_path):
    """With CORRAL_NATS_TLS_CA the CLI provisions and submits over TLS; without it the error says why."""
    tls = ["--tls", "--tlscert", str(certs / "server.pem"), "--tlskey", str(certs / "server.key")]
    server = EmbeddedServer(tmp_path / "tls", extra=tls).start()
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            url = f"tls://127.0.0.1:{server.port}"
            # Without the CA the first connect gives up only at its deadline (7 s): that runs beside the rest.
            refusing = pool.submit(corral, "status", env={"CORRAL_NATS_URL": url, "CORRAL_NATS_TLS_CA": ""})
            ok = {"CORRAL_NATS_URL": url, "CORRAL_NATS_TLS_CA": str(certs / "ca.pem")}
            assert corral("provision", env=ok).returncode == 0
            out = corral("submit", "sum", "a=1", "b=2", "--id", "over-tls", env=ok)
            assert out.returncode == 0 and out.stdout.strip() == "over-tls"
            missing = corral("status", env={**ok, "CORRAL_NATS_TLS_CA": str(tmp_path / "nope.pem")})
            assert missing.returncode == 2 and "TLS settings unusable" in missing.stderr
            refused = refusing.result()
            assert refused.returncode == 5 and "cannot reach NATS" in refused.stderr  # 5: unreachable (docs/cli.md)
    finally:
        server.kill()
