"""The internal CA's files as real tools see them: openssl, curl, mkcert.

Each test needs a command-line tool. Locally a missing tool skips the test with its
name; under CI=true it fails, so CI never passes by quietly testing nothing.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared import pki
from tests.support.tools import require_tool as tool

pytestmark = pytest.mark.integration


def run(*argv: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
    proc = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cwd,
        check=False,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"{argv[0]} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@dataclass(frozen=True)
class Files:
    ca: pki.CA
    out: Path

    def pem(self, name: str) -> Path:
        return self.out / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.out / f"{name}-key.pem"

    def p12(self, name: str) -> Path:
        return self.out / f"{name}.p12"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    base = tmp_path_factory.mktemp("pki")
    ca = pki.init_ca(base / "ca")
    out = base / "out"
    issued = {
        "service": pki.issue_service(ca, "authorize"),
        "server": pki.issue_server(ca, ["*.apps.localhost", "localhost", "127.0.0.1"]),
        "server-rsa": pki.issue_server(ca, ["localhost", "127.0.0.1"], key_type="rsa"),
        "client": pki.issue_client(ca, "alice@example.com"),
        "client-rsa": pki.issue_client(ca, "bob@example.com", key_type="rsa"),
        "revoked": pki.issue_client(ca, "mallory@example.com"),
    }
    for name, leaf in issued.items():
        pki.write_issued(leaf, out, name, pkcs12=name.startswith(("client", "revoked")))
    pki.revoke(ca, issued["revoked"].certificate, "keyCompromise")
    (base / "crl.pem").write_bytes(pki.make_crl(ca))
    return Files(ca=ca, out=out)


# --- openssl on the files -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "purposes"),
    [
        ("service", ["sslserver", "sslclient"]),
        ("server", ["sslserver"]),
        ("server-rsa", ["sslserver"]),
        ("client", ["sslclient"]),
        ("client-rsa", ["sslclient"]),
    ],
)
def test_openssl_verifies_each_kind(files: Files, name: str, purposes: list[str]) -> None:
    openssl = tool("openssl")
    for purpose in purposes:
        proc = run(openssl, "verify", "-purpose", purpose, "-x509_strict",
                   "-CAfile", files.ca.cert_path, files.pem(name))  # fmt: skip
        assert proc.stdout.strip().endswith(": OK")


def test_openssl_enforces_extended_key_usage(files: Files) -> None:
    openssl = tool("openssl")
    proc = run(openssl, "verify", "-purpose", "sslserver", "-CAfile", files.ca.cert_path,
               files.pem("client"), check=False)  # fmt: skip
    assert proc.returncode != 0
    assert "unsuitable certificate purpose" in proc.stdout + proc.stderr


def test_openssl_reads_the_crl_and_rejects_the_revoked_cert(files: Files) -> None:
    openssl = tool("openssl")
    crl = files.ca.dir.parent / "crl.pem"
    proc = run(openssl, "crl", "-in", crl, "-CAfile", files.ca.cert_path, "-noout")
    assert "verify OK" in proc.stdout + proc.stderr
    ok = run(openssl, "verify", "-crl_check", "-CRLfile", crl, "-CAfile", files.ca.cert_path,
             files.pem("client"))  # fmt: skip
    assert ok.stdout.strip().endswith(": OK")
    bad = run(openssl, "verify", "-crl_check", "-CRLfile", crl, "-CAfile", files.ca.cert_path,
              files.pem("revoked"), check=False)  # fmt: skip
    assert bad.returncode != 0
    assert "certificate revoked" in bad.stdout + bad.stderr


@pytest.mark.parametrize("name", ["client", "client-rsa"])
def test_openssl_reads_the_pkcs12_without_legacy(files: Files, name: str) -> None:
    openssl = tool("openssl")
    certs = run(openssl, "pkcs12", "-in", files.p12(name), "-passin", "pass:changeit", "-nokeys")
    loaded = pki.load_certificates(certs.stdout.encode())
    assert [c.subject for c in loaded] == [
        pki.load_certificates(files.pem(name).read_bytes())[0].subject,
        files.ca.certificate.subject,
    ]
    keys = run(openssl, "pkcs12", "-in", files.p12(name), "-passin", "pass:changeit",
               "-nocerts", "-nodes")  # fmt: skip
    key = pki.load_private_key(keys.stdout.encode())
    assert pki.key_matches_certificate(key, loaded[0])


# --- a real mutual-TLS handshake ----------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"openssl s_server exited early:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    pytest.fail(f"openssl s_server did not listen on {port} within 10s:\n{log.read_text()}")


@contextlib.contextmanager
def s_server(files: Files, tmp_path: Path, name: str) -> Iterator[int]:
    """`openssl s_server` with certificate `name`, demanding a client cert from our CA."""
    openssl = tool("openssl")
    port = free_port()
    log = tmp_path / f"s_server-{name}.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [openssl, "s_server", "-accept", f"127.0.0.1:{port}", "-www",
             "-cert", str(files.pem(name)), "-key", str(files.key(name)),
             "-CAfile", str(files.ca.cert_path), "-Verify", "1", "-verify_return_error"],
            stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for_port(port, proc, log)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(params=["server", "server-rsa"])
def tls_server(request: pytest.FixtureRequest, files: Files, tmp_path: Path) -> Iterator[int]:
    with s_server(files, tmp_path, request.param) as port:
        yield port


def curl(files: Files, url: str, *client: str | Path) -> subprocess.CompletedProcess[str]:
    return run(tool("curl"), "-sS", "--fail", "--max-time", "10",
               "--cacert", files.ca.cert_path, *client, url, check=False)  # fmt: skip


@pytest.mark.parametrize("client", ["client", "client-rsa"])
def test_curl_pkcs12_client_cert_is_accepted(files: Files, tls_server: int, client: str) -> None:
    proc = curl(files, f"https://127.0.0.1:{tls_server}/", "--cert-type", "P12",
                "--cert", f"{files.p12(client)}:changeit")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "s_server" in proc.stdout


@pytest.mark.parametrize("client", ["client", "client-rsa", "service"])
def test_curl_pem_client_cert_is_accepted(files: Files, tls_server: int, client: str) -> None:
    proc = curl(files, f"https://localhost:{tls_server}/", "--cert", files.pem(client),
                "--key", files.key(client))  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_wildcard_server_name_is_accepted(files: Files, tmp_path: Path) -> None:
    # Three labels: OpenSSL (so curl) and browsers ignore second-level wildcards such as
    # *.localhost, which is why `vallum ca issue` warns about them.
    with s_server(files, tmp_path, "server") as port:
        proc = curl(files, f"https://app.apps.localhost:{port}/", "--resolve",
                    f"app.apps.localhost:{port}:127.0.0.1", "--cert", files.pem("client"),
                    "--key", files.key("client"))  # fmt: skip
        assert proc.returncode == 0, proc.stderr


def test_handshake_without_client_cert_is_refused(files: Files, tls_server: int) -> None:
    proc = curl(files, f"https://127.0.0.1:{tls_server}/")
    assert proc.returncode != 0


def test_client_cert_from_another_ca_is_refused(
    files: Files, tls_server: int, tmp_path: Path
) -> None:
    other = pki.init_ca(tmp_path / "other")
    paths = pki.write_issued(pki.issue_client(other, "eve@example.com"), tmp_path, "eve")
    proc = curl(files, f"https://127.0.0.1:{tls_server}/", "--cert", paths.cert,
                "--key", paths.key)  # fmt: skip
    assert proc.returncode != 0


# --- mkcert's files through our loaders ---------------------------------------------


@pytest.fixture(scope="module")
def mkcert_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    mkcert = tool("mkcert")
    base = tmp_path_factory.mktemp("mkcert")
    # CAROOT keeps mkcert's root inside the test directory; without -install it never
    # touches a trust store.
    env = {**os.environ, "CAROOT": str(base / "caroot"), "HOME": str(base)}
    run(mkcert, "-client", "-cert-file", "client.pem", "-key-file", "client-key.pem",
        "alice@example.com", env=env, cwd=base)  # fmt: skip
    run(mkcert, "-client", "-pkcs12", "-p12-file", "client.p12", "alice@example.com",
        env=env, cwd=base)  # fmt: skip
    run(mkcert, "-ecdsa", "-cert-file", "server.pem", "-key-file", "server-key.pem",
        "localhost", "*.localhost", "127.0.0.1", env=env, cwd=base)  # fmt: skip
    return base


@pytest.mark.parametrize(("name", "key_type"), [("client", "RSA 2048"), ("server", "ECDSA P-256")])
def test_mkcert_pem_files_load(mkcert_files: Path, name: str, key_type: str) -> None:
    cert_pem = (mkcert_files / f"{name}.pem").read_bytes()
    key_pem = (mkcert_files / f"{name}-key.pem").read_bytes()
    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # mkcert writes PKCS#8
    (cert,) = pki.load_certificates(cert_pem)
    key = pki.load_private_key(key_pem)
    assert pki.key_matches_certificate(key, cert)
    (info,) = pki.describe(cert_pem)
    assert info.key_type == key_type
    assert not info.is_ca
    assert "mkcert" in info.issuer
    if name == "client":
        assert pki.SAN("email", "alice@example.com") in info.sans
    else:
        assert [str(s) for s in info.sans] == ["DNS:localhost", "DNS:*.localhost", "IP:127.0.0.1"]


def test_mkcert_root_loads(mkcert_files: Path) -> None:
    (root,) = pki.load_certificates((mkcert_files / "caroot" / "rootCA.pem").read_bytes())
    key = pki.load_private_key((mkcert_files / "caroot" / "rootCA-key.pem").read_bytes())
    assert pki.key_matches_certificate(key, root)
    assert pki.describe_certificate(root).is_ca


def test_mkcert_pkcs12_loads(mkcert_files: Path) -> None:
    # mkcert uses the legacy PKCS#12 encryption and the fixed password "changeit".
    bundle = pki.load_pkcs12((mkcert_files / "client.p12").read_bytes(), "changeit")
    assert bundle.certificate is not None and bundle.private_key is not None
    assert pki.key_matches_certificate(bundle.private_key, bundle.certificate)
    infos = pki.describe(bundle.certificates())
    assert pki.SAN("email", "alice@example.com") in infos[0].sans
    assert infos[-1].is_ca
