"""TLS as users set it up, through a running Vallum (all-in-one) on 127.0.0.1.

Upstream side: `openssl s_server -www` with mkcert certificates (plain TLS and
required client certificates), the reasons on the 502 page for each way the
handshake can fail, and a real HTTPS app under uvicorn with a certificate from the
project's CA. Downstream side: `certificates:` chosen by SNI, reloaded on change,
mkcert's PKCS#8 keys, an ACME-style full chain, `insecure_server` and
`http_redirect_addr`.

Locally a missing tool skips the test with its name; under CI=true it fails.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared import pki
from tests.support.certs import Pair
from tests.support.net import free_port
from tests.support.procs import Proc
from tests.support.stack import Upstream, Vallum, all_in_one, route_host, upstream
from tests.support.tools import require_tool as tool

pytestmark = pytest.mark.integration

NO_CLIENT_CERT = "no client certificate available"
PUBLIC: dict[str, Any] = {"allow_public_unauthenticated_access": True}


def mkcert(caroot: Path, out: Path, name: str, *args: str) -> Pair:
    """A pair from mkcert with its CA in `caroot` (never -install: the machine's
    trust store stays untouched)."""
    pair = Pair(out / f"{name}.pem", out / f"{name}-key.pem")
    subprocess.run(
        [tool("mkcert"), "-cert-file", str(pair.cert), "-key-file", str(pair.key), *args],
        env={**os.environ, "CAROOT": str(caroot)},
        check=True,
        capture_output=True,
        timeout=60,
    )
    return pair


def _ski_aki(
    builder: x509.CertificateBuilder, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate
) -> x509.CertificateBuilder:
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski)
    return builder.add_extension(ski, critical=False).add_extension(aki, critical=False)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def full_chain(out: Path, host: str) -> tuple[Path, Pair]:
    """(root, pair): an ACME-style pair whose file holds the leaf and then the
    intermediate that signed it; the root stays out, as a client already has it.
    (The project's CA allows no intermediates, as a CA for leaves only should.)"""
    now = dt.datetime.now(dt.UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test ACME Root")])
    root = (
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False
        )
        .sign(root_key, hashes.SHA256())
    )
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter_builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test Intermediate")]))
        .issuer_name(root.subject)
        .public_key(inter_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
    )
    inter = _ski_aki(inter_builder, inter_key, root).sign(root_key, hashes.SHA256())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf_builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(inter.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    leaf = _ski_aki(leaf_builder, leaf_key, inter).sign(inter_key, hashes.SHA256())
    pair = Pair(out / "chain.pem", out / "chain-key.pem")
    pem = serialization.Encoding.PEM
    pair.cert.write_bytes(leaf.public_bytes(pem) + inter.public_bytes(pem))
    pair.key.write_bytes(pki.private_key_pem(leaf_key))
    root_path = out / "chain-root.pem"
    root_path.write_bytes(root.public_bytes(pem))
    return root_path, pair


@dataclass(frozen=True)
class Material:
    mkcert_ca: Path
    localhost: Pair  # mkcert, names only `localhost`
    client: Pair  # mkcert -client, from mkcert_ca
    other_ca: Path  # a second mkcert CA that issued nothing used here
    project_ca: Path
    project_server: Pair  # project CA, localhost + 127.0.0.1
    site_a: Pair  # mkcert, a.localhost
    site_b: Pair  # mkcert, *.b.localhost
    reload: Pair  # mkcert, reload.localhost (its files get replaced)
    reload_next: Pair  # mkcert, reload.localhost, the replacement
    chain: Pair  # leaf + intermediate, chain.localhost
    chain_root: Path  # the root above that intermediate
    out: Path


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    base = tmp_path_factory.mktemp("proxy-tls")
    out = base / "out"
    out.mkdir()
    caroot, other = base / "mkcert", base / "other"
    project = pki.init_ca(base / "ca")
    server = pki.write_issued(pki.issue_server(project, ["localhost", "127.0.0.1"]), out, "srv")
    live = base / "live"  # the files Vallum serves for reload.localhost
    live.mkdir()
    chain_root, chain = full_chain(out, "chain.localhost")
    material = Material(
        mkcert_ca=caroot / "rootCA.pem",
        localhost=mkcert(caroot, out, "localhost", "localhost"),
        client=mkcert(caroot, out, "client", "-client", "proxy@vallum.test"),
        other_ca=other / "rootCA.pem",
        project_ca=project.cert_path,
        project_server=Pair(server.cert, server.key),
        site_a=mkcert(caroot, out, "a", "a.localhost"),
        site_b=mkcert(caroot, out, "b", "*.b.localhost"),
        reload=mkcert(caroot, live, "reload", "reload.localhost"),
        reload_next=mkcert(caroot, out, "reload-next", "reload.localhost"),
        chain=chain,
        chain_root=chain_root,
        out=out,
    )
    mkcert(other, out, "unused", "unused.localhost")  # creates the other CA
    return material


@contextlib.contextmanager
def s_server(pair: Pair, *extra: str) -> Iterator[int]:
    port = free_port()
    argv = [tool("openssl"), "s_server", "-www", "-accept", f"127.0.0.1:{port}"]
    argv += ["-cert", str(pair.cert), "-key", str(pair.key), *extra]
    proc = Proc(argv)
    try:
        proc.wait_for("ACCEPT", timeout=15)
        yield port
    finally:
        proc.stop()


def reasons(response: httpx.Response) -> list[str]:
    return [r["name"] for r in response.json()["reasons"]]


def peer_cert(
    port: int, server_name: str, cafile: Path, *, check_hostname: bool = True
) -> dict[str, Any]:
    """The certificate Vallum presents for `server_name`, verified against `cafile`."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    ctx.check_hostname = check_hostname
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        cert: dict[str, Any] = tls.getpeercert()  # type: ignore[assignment]
        return cert


def dns_sans(cert: dict[str, Any]) -> list[str]:
    return [value for kind, value in cert["subjectAltName"] if kind == "DNS"]


# -- upstream TLS ------------------------------------------------------------------


@dataclass
class UpstreamStack:
    vallum: Vallum
    ports: dict[str, int]  # s_server / app ports, which no 502 page may show


@pytest.fixture(scope="module")
def up(material: Material, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamStack]:
    m = material
    port = free_port()
    require = ("-Verify", "1", "-verify_return_error", "-CAfile", str(m.mkcert_ca))
    with (
        s_server(m.localhost) as plain,
        s_server(m.localhost, *require) as mtls,
        upstream(certfile=str(m.project_server.cert), keyfile=str(m.project_server.key)) as app,
    ):
        mk = {"tls_custom_ca_file": str(m.mkcert_ca)}
        client = {
            "tls_client_cert_file": str(m.client.cert),
            "tls_client_key_file": str(m.client.key),
        }

        def h(name: str) -> str:
            return route_host(name, port)

        routes: list[dict[str, Any]] = [
            {"from": h("ok"), "to": f"https://localhost:{plain}", **PUBLIC, **mk},
            {
                "from": h("sni"),
                "to": f"https://127.0.0.1:{plain}",
                "tls_server_name": "localhost",
                **PUBLIC,
                **mk,
            },
            {"from": h("ip"), "to": f"https://127.0.0.1:{plain}", **PUBLIC, **mk},
            {
                "from": h("othername"),
                "to": f"https://localhost:{plain}",
                "tls_server_name": "other.example",
                **PUBLIC,
                **mk,
            },
            {
                "from": h("wrongca"),
                "to": f"https://localhost:{plain}",
                "tls_custom_ca_file": str(m.other_ca),
                **PUBLIC,
            },
            {
                "name": "skippy",
                "from": h("skip"),
                "to": f"https://127.0.0.1:{plain}",
                "tls_skip_verify": True,
                **PUBLIC,
            },
            {"from": h("mtls-none"), "to": f"https://localhost:{mtls}", **PUBLIC, **mk},
            {"from": h("mtls"), "to": f"https://localhost:{mtls}", **PUBLIC, **mk, **client},
            {
                "from": h("app"),
                "to": app.https_url,
                "tls_custom_ca_file": str(m.project_ca),
                **PUBLIC,
            },
        ]
        tmp = tmp_path_factory.mktemp("up-vallum")
        with all_in_one(tmp, routes, port) as v:
            yield UpstreamStack(v, {"plain": plain, "mtls": mtls, "app": app.port})


def get(stack: UpstreamStack, name: str, path: str = "/") -> httpx.Response:
    return stack.vallum.request("GET", f"{name}.localhost", path)


def assert_502(stack: UpstreamStack, response: httpx.Response, *accepted: str) -> None:
    assert response.status_code == 502, response.text
    assert reasons(response)[0] in accepted, response.text
    # The page says what failed, never where: addresses belong in the log.
    for port in stack.ports.values():
        assert f":{port}" not in response.text
        assert str(port) not in response.text.replace(response.json()["request_id"], "")
    assert "127.0.0.1" not in response.text


def test_s_server_through_vallum_with_mkcert_ca(up: UpstreamStack) -> None:
    for name in ("ok", "sni"):  # by name in `to`, or by IP with tls_server_name
        response = get(up, name)
        assert response.status_code == 200, response.text
        assert "s_server -www" in response.text or "Ciphers supported" in response.text
        assert NO_CLIENT_CERT in response.text


def test_s_server_status_page_with_curl(up: UpstreamStack) -> None:
    v = up.vallum
    result = subprocess.run(
        [
            tool("curl"),
            "-sS",
            "--fail",
            "--cacert",
            str(v.ca),
            "--resolve",
            f"ok.localhost:{v.port}:127.0.0.1",
            f"https://ok.localhost:{v.port}/",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert NO_CLIENT_CERT in result.stdout


def test_upstream_requires_a_client_certificate_vallum_has_none(up: UpstreamStack) -> None:
    # Several times: with TLS 1.3 the server's alert races the request Vallum writes.
    for _ in range(5):
        assert_502(
            up,
            get(up, "mtls-none"),
            "upstream-client-certificate-required",
            "upstream-client-certificate-rejected",
        )


def test_upstream_mtls_with_vallum_client_certificate(
    up: UpstreamStack, material: Material
) -> None:
    response = get(up, "mtls")
    assert response.status_code == 200, response.text
    assert NO_CLIENT_CERT not in response.text
    cert = x509.load_pem_x509_certificate(material.client.cert.read_bytes())
    (ou,) = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    assert isinstance(ou.value, str)
    assert "Client certificate" in response.text
    assert f"Subject: O=mkcert development certificate, OU={ou.value}" in response.text


def test_untrusted_upstream_certificate(up: UpstreamStack) -> None:
    assert_502(up, get(up, "wrongca"), "upstream-tls-untrusted")


def test_upstream_name_mismatch_and_tls_server_name(up: UpstreamStack) -> None:
    # The certificate names only `localhost`: by IP it does not match, nor under
    # another tls_server_name; tls_server_name: localhost (route "sni") fixes it.
    assert_502(up, get(up, "ip"), "upstream-tls-name-mismatch")
    assert_502(up, get(up, "othername"), "upstream-tls-name-mismatch")
    assert get(up, "sni").status_code == 200


def test_tls_skip_verify_connects_and_is_warned_about(up: UpstreamStack) -> None:
    response = get(up, "skip")
    assert response.status_code == 200, response.text
    assert NO_CLIENT_CERT in response.text
    warned = [
        line
        for line in up.vallum.proc.lines
        if "tls_skip_verify" in line and "skippy" in line and "WARN" in line.upper()
    ]
    assert warned, up.vallum.proc.output


def test_https_app_under_uvicorn_with_keep_alive(up: UpstreamStack) -> None:
    for i in range(6):
        response = get(up, "app", f"/echo?i={i}")
        assert response.status_code == 200, response.text
        data = response.json()
        assert data["scheme"] == "https" and data["query"] == f"i={i}"
    # Larger bodies over the same kind of connection, too.
    body = get(up, "app", "/bytes?size=3000000")
    assert body.status_code == 200 and len(body.content) == 3_000_000


# -- downstream TLS ----------------------------------------------------------------


@dataclass
class DownstreamStack:
    vallum: Vallum
    redirect_port: int
    app: Upstream


@pytest.fixture(scope="module")
def down(material: Material, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DownstreamStack]:
    m = material
    port, redirect = free_port(), free_port()
    with upstream() as app:
        routes: list[dict[str, Any]] = [
            {"from": route_host(name, port), "to": app.url, **PUBLIC}
            for name in ("a", "x.b", "reload", "chain")
        ]
        pairs = [m.site_a, m.site_b, m.reload, m.chain]
        certificates = [{"cert": str(p.cert), "key": str(p.key)} for p in pairs]
        tmp = tmp_path_factory.mktemp("down-vallum")
        with all_in_one(
            tmp,
            routes,
            port,
            server_ca=m.mkcert_ca,
            certificates=certificates,
            http_redirect_addr=f"127.0.0.1:{redirect}",
        ) as v:
            yield DownstreamStack(v, redirect, app)


def test_certificate_chosen_by_sni(down: DownstreamStack, material: Material) -> None:
    port = down.vallum.port
    assert dns_sans(peer_cert(port, "a.localhost", material.mkcert_ca)) == ["a.localhost"]
    assert dns_sans(peer_cert(port, "x.b.localhost", material.mkcert_ca)) == ["*.b.localhost"]
    # A name no certificate has gets the first pair, the default.
    unknown = peer_cert(port, "nobody.example", material.mkcert_ca, check_hostname=False)
    assert dns_sans(unknown) == ["a.localhost"]
    for host in ("a.localhost", "x.b.localhost"):
        response = down.vallum.request("GET", host, "/echo")
        assert response.status_code == 200, response.text


def test_mkcert_pkcs8_key_loads_as_it_is(down: DownstreamStack, material: Material) -> None:
    assert b"-----BEGIN PRIVATE KEY-----" in material.site_a.key.read_bytes()
    result = subprocess.run(
        [
            tool("curl"),
            "-sS",
            "--fail",
            "--cacert",
            str(material.mkcert_ca),
            "--resolve",
            f"a.localhost:{down.vallum.port}:127.0.0.1",
            f"https://a.localhost:{down.vallum.port}/echo",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert '"path": "/echo"' in result.stdout


def test_full_chain_is_served(down: DownstreamStack, material: Material) -> None:
    # Only the root as trust anchor: verification needs the intermediate from Vallum.
    cert = peer_cert(down.vallum.port, "chain.localhost", material.chain_root)
    assert dns_sans(cert) == ["chain.localhost"]
    result = subprocess.run(
        [
            tool("openssl"),
            "s_client",
            "-connect",
            f"127.0.0.1:{down.vallum.port}",
            "-servername",
            "chain.localhost",
            "-showcerts",
            "-CAfile",
            str(material.chain_root),
            "-verify_return_error",
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("-----BEGIN CERTIFICATE-----") == 2
    assert "Verify return code: 0 (ok)" in result.stdout


def _replace(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _serial(cert: dict[str, Any]) -> int:
    return int(cert["serialNumber"], 16)


def _serial_of(pair: Pair) -> int:
    return x509.load_pem_x509_certificate(pair.cert.read_bytes()).serial_number


def test_certificate_files_reloaded_without_dropping_connections(
    down: DownstreamStack, material: Material
) -> None:
    v, m = down.vallum, material
    old, new = _serial_of(m.reload), _serial_of(m.reload_next)
    assert _serial(peer_cert(v.port, "reload.localhost", m.mkcert_ca)) == old
    ctx = ssl.create_default_context(cafile=str(m.mkcert_ca))
    headers = {"Host": f"reload.localhost:{v.port}", "Accept": "application/json"}
    with httpx.Client(verify=ctx, timeout=30) as kept:

        def kept_get() -> tuple[httpx.Response, int]:
            response = kept.get(
                f"https://127.0.0.1:{v.port}/echo",
                headers=headers,
                extensions={"sni_hostname": "reload.localhost"},
            )
            stream = response.extensions["network_stream"]
            der = stream.get_extra_info("ssl_object").getpeercert(True)
            return response, x509.load_der_x509_certificate(der).serial_number

        response, serial = kept_get()
        assert response.status_code == 200 and serial == old
        # Key first would briefly pair a new key with the old certificate; the
        # watcher must cope either way, as files land one by one.
        _replace(m.reload_next.key, m.reload.key)
        _replace(m.reload_next.cert, m.reload.cert)
        deadline = time.monotonic() + 5
        while _serial(peer_cert(v.port, "reload.localhost", m.mkcert_ca)) != new:
            assert time.monotonic() < deadline, "the new certificate was not served within 5 s"
            time.sleep(0.2)
        # The connection opened before the swap is still there and still serves.
        response, serial = kept_get()
        assert response.status_code == 200, response.text
        assert serial == old
    assert "server certificates reloaded" in v.proc.output


def test_http_redirect_addr_redirects_to_https(down: DownstreamStack) -> None:
    v, rport = down.vallum, down.redirect_port
    response = httpx.get(
        f"http://127.0.0.1:{rport}/p/q?x=1&y=2",
        headers={"Host": f"a.localhost:{rport}"},
        follow_redirects=False,
        timeout=10,
    )
    assert response.status_code in (301, 308), response.text
    assert response.headers["location"] == f"https://a.localhost:{v.port}/p/q?x=1&y=2"
    posted = httpx.post(
        f"http://127.0.0.1:{rport}/form",
        headers={"Host": f"a.localhost:{rport}"},
        content=b"x",
        timeout=10,
    )
    assert posted.status_code in (307, 308), posted.text
    # And a client that follows it lands on the app, over TLS.
    result = subprocess.run(
        [
            tool("curl"),
            "-sS",
            "-L",
            "--fail",
            "--cacert",
            str(v.ca),
            "--resolve",
            f"a.localhost:{rport}:127.0.0.1",
            "--resolve",
            f"a.localhost:{v.port}:127.0.0.1",
            f"http://a.localhost:{rport}/echo?z=3",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert '"query": "z=3"' in result.stdout
    assert '["x-forwarded-proto", "https"]' in result.stdout


# -- insecure_server ---------------------------------------------------------------


def test_insecure_server_plain_http_still_applies_policy(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    port = free_port()
    with upstream() as app:
        routes: list[dict[str, Any]] = [
            {
                "from": route_host("open", port),
                "to": app.url,
                **PUBLIC,
                "policy": [{"deny": {"or": [{"http_path": {"starts_with": "/admin"}}]}}],
            },
            {
                "from": route_host("private", port),
                "to": app.url,
                "policy": {"allow": {"or": [{"email": {"is": "x@example.com"}}]}},
            },
        ]
        tmp = tmp_path_factory.mktemp("insecure")
        with all_in_one(tmp, routes, port, insecure_server=True) as v:
            # No TLS on `address`: a TLS client meets plain HTTP.
            with pytest.raises(ssl.SSLError):
                peer_cert(port, "open.localhost", v.ca, check_hostname=False)
            response = v.request("GET", "open.localhost", "/echo")
            assert response.status_code == 200, response.text
            assert response.json()["path"] == "/echo"
            assert response.url.scheme == "http"
            denied = v.request("GET", "open.localhost", "/admin")
            assert denied.status_code == 403, denied.text
            assert v.request("GET", "private.localhost", "/echo").status_code == 401
            assert app.hits().get("/admin", 0) == 0
            assert app.hits().get("/echo", 0) == 1
