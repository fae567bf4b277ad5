"""Downstream mTLS as users meet it: client certificates from mkcert, the project's CA
and `openssl ca`, presented by Python's ssl, curl and `openssl s_client` to a running
Vallum (all-in-one) on 127.0.0.1.

One Vallum per configuration, shared by the tests of one class:

- `TestDefaultDeny`: `downstream_mtls` with a CA bundle, CRLs and SAN rules, the default
  enforcement: every reason a 495 page can give, the header template, curl with PEM
  and PKCS#12, a CRL reloaded while running;
- `TestPerRouteCAs`: routes with their own CA (and one without): what each host asks
  for, that a CA opens only its own route, no SNI, session resumption, a CA reloaded;
- `TestPolicyEnforcement`: `enforcement: policy` and the PPL certificate criteria;
- `TestRejectConnection`: the handshake itself refuses (CAs and CRL given inline);
- `TestOlderGlobalKey`: `client_ca_file`;
- `TestUnusableCRL`: a CRL that mkcert's root signs but may not sign.

Locally a missing tool skips the test with its name; under CI=true it fails.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.client_certs import (
    ClientCert,
    Material,
    concat,
    make_material,
    replace_file,
)
from tests.support.net import free_port
from tests.support.procs import vallum_once
from tests.support.stack import Upstream, Vallum, all_in_one, route_host, upstream
from tests.support.tools import require_tool

pytestmark = pytest.mark.integration

PUBLIC: dict[str, Any] = {"allow_public_unauthenticated_access": True}
FINGERPRINT_HEADER = {"X-Cert-Fingerprint": "${pomerium.client_cert_fingerprint}"}
# How long a changed CA or CRL file may take to be seen by new connections.
RELOAD_WITHIN = 10.0

REQUIRED = "client-certificate-required"
UNTRUSTED = "invalid-client-certificate-untrusted"


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    require_tool("mkcert")
    require_tool("openssl")
    return make_material(tmp_path_factory.mktemp("client-certs"))


@pytest.fixture(scope="module")
def app() -> Iterator[Upstream]:
    with upstream() as up:
        yield up


# -- clients ---------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def reasons(self) -> list[str]:
        return [r["name"] for r in self.json()["reasons"]]

    def upstream_header(self, name: str) -> list[str]:
        """The values of `name` the upstream's /echo saw."""
        return [v for k, v in self.json()["headers"] if k == name.lower()]


def fetch(
    v: Vallum,
    host: str,
    path: str = "/echo",
    *,
    cert: ClientCert | None = None,
    sni: bool = True,
    accept: str = "application/json",
    headers: dict[str, str] | None = None,
) -> Reply:
    """One request on a fresh connection (so a fresh handshake) from Python's ssl; the
    server is verified against Vallum's CA. `sni=False` sends no server name at all."""
    ctx = cert.context(v.ca) if cert else ssl.create_default_context(cafile=str(v.ca))
    if not sni:
        ctx.check_hostname = False  # the chain is still verified
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{v.port}",
        f"Accept: {accept}",
        "Connection: close",
        *(f"{k}: {val}" for k, val in (headers or {}).items()),
    ]
    with (
        socket.create_connection(("127.0.0.1", v.port), timeout=15) as raw,
        ctx.wrap_socket(raw, server_hostname=host if sni else None) as tls,
    ):
        tls.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        response = http.client.HTTPResponse(tls)
        response.begin()
        body = response.read()
        return Reply(response.status, {k.lower(): val for k, val in response.getheaders()}, body)


def assert_495(reply: Reply, reason: str) -> None:
    assert reply.status == 495, (reply.status, reply.body[:500])
    assert reply.headers["content-type"].startswith("application/json"), reply.headers
    page = reply.json()
    assert page["status"] == 495
    assert reply.reasons == [reason], page
    assert all(r["text"] for r in page["reasons"]), page
    assert page["request_id"], page


def host_of(name: str) -> str:
    return f"{name}.localhost"


@dataclass
class CurlResult:
    returncode: int
    status: int  # 0 when no HTTP response came
    body: str
    stderr: str


def curl(
    v: Vallum,
    host: str,
    path: str = "/echo",
    *args: str,
    env: dict[str, str] | None = None,
) -> CurlResult:
    result = subprocess.run(
        [
            require_tool("curl"),
            "-sS",
            "--cacert",
            str(v.ca),
            "--resolve",
            f"{host}:{v.port}:127.0.0.1",
            "-H",
            "Accept: application/json",
            "-w",
            "\n%{http_code}",
            *args,
            f"https://{host}:{v.port}{path}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
        check=False,
    )
    body, _, code = result.stdout.rpartition("\n")
    return CurlResult(result.returncode, int(code or 0), body, result.stderr)


def pem_args(cert: ClientCert) -> list[str]:
    return ["--cert", str(cert.cert), "--key", str(cert.key)]


def p12_args(cert: ClientCert) -> list[str]:
    assert cert.p12 is not None
    return ["--cert-type", "P12", "--cert", f"{cert.p12}:{cert.p12_password}"]


def s_client(
    port: int,
    server_name: str | None,
    *,
    cert: ClientCert | None = None,
    sess_out: Path | None = None,
    sess_in: Path | None = None,
    request_host: str | None = None,
) -> str:
    """`openssl s_client`'s whole output; with `request_host`, after a GET / for it."""
    argv = [require_tool("openssl"), "s_client", "-connect", f"127.0.0.1:{port}"]
    argv += ["-servername", server_name] if server_name else ["-noservername"]
    if cert is not None:
        argv += ["-cert", str(cert.cert), "-key", str(cert.key)]
    if sess_out is not None:
        argv += ["-sess_out", str(sess_out)]
    if sess_in is not None:
        argv += ["-sess_in", str(sess_in)]
    request = ""
    if request_host is not None:
        argv.append("-ign_eof")  # read the answer to the end, not stop at stdin's
        request = (
            f"GET /echo HTTP/1.1\r\nHost: {request_host}:{port}\r\n"
            "Accept: application/json\r\nConnection: close\r\n\r\n"
        )
    result = subprocess.run(
        argv, input=request, capture_output=True, text=True, timeout=30, check=False
    )
    return result.stdout + result.stderr


def acceptable_ca_names(output: str) -> list[str] | None:
    """The CA names of the server's CertificateRequest as s_client prints them; None
    when it sent none."""
    if "No client certificate CA names sent" in output:
        return None
    lines = output.splitlines()
    start = lines.index("Acceptable client certificate CA names") + 1
    names = []
    for line in lines[start:]:
        if not line or line.startswith(("Requested Signature", "Client Certificate Types", "---")):
            break
        names.append(line.strip())
    return names


def openssl_name(cert: Path) -> str:
    """The subject as `openssl` prints it (`CN = x, O = y` in RFC 2253 order reversed)."""
    out = subprocess.run(
        [require_tool("openssl"), "x509", "-in", str(cert), "-noout", "-subject"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return out.strip().removeprefix("subject=").strip()


def wait_until(check: Callable[[], bool], what: str, timeout: float = RELOAD_WITHIN) -> float:
    """Seconds it took for `check` to hold."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, f"{what} within {timeout} s"
        time.sleep(0.25)
    return time.monotonic() - start


def hits(app: Upstream) -> int:
    return app.hits().get("/echo", 0)


# -- the material itself, checked by openssl alone -----------------------------------


def test_material_verifies_with_openssl_as_intended(material: Material, tmp_path: Path) -> None:
    """Independently of Vallum: `openssl verify` gives every certificate the verdict
    its tests expect, so a wrong 495 reason cannot be the fixture's fault."""
    m = material
    bundle = concat(
        tmp_path / "bundle.pem", m.mkcert.root, m.project.root, m.chain_root.path, m.ossl.root
    )
    crls = m.usable_crls(tmp_path / "crls.pem")

    def verify(cert: ClientCert, *extra: str) -> str:
        argv = [require_tool("openssl"), "verify", "-CAfile", str(bundle), "-purpose", "sslclient"]
        argv += ["-untrusted", str(cert.cert), *extra, str(cert.cert)]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        out = result.stdout + result.stderr
        found = re.search(r"error (\d+) at", out)
        assert (found is None) == (result.returncode == 0), out
        return found.group(1) if found else "ok"

    expected = {
        "ok": [
            *(m.user, m.bob, m.p12user, m.outsider, m.revoked, m.san_dns, m.san_uri),
            *(m.san_ip, m.san_upn, m.san_partial, m.chained, m.project_user, m.ossl_user),
            *(m.ossl_revoked, m.project_revoked, m.victim),
        ],
        "20": [m.twin_user, m.stranger],  # unable to get local issuer certificate
        "10": [m.expired],
        "9": [m.not_yet_valid],
        "26": [m.server_only],  # unsuitable certificate purpose
        "7": [m.bad_signature],  # certificate signature failure
        "34": [m.unknown_critical],  # unhandled critical extension
    }
    for code, certs in expected.items():
        for cert in certs:
            assert verify(cert) == code, cert.name
    crl_args = ("-CRLfile", str(crls), "-crl_check")
    for cert in (m.project_revoked, m.ossl_revoked):
        assert verify(cert, *crl_args) == "23", cert.name  # revoked
    for cert in (m.project_user, m.ossl_user, m.victim):
        assert verify(cert, *crl_args) == "ok", cert.name
    assert verify(m.chained, "-verify_depth", "0") == "22"  # chain too long
    # mkcert's root may not sign CRLs: any verifier must refuse its CRL.
    assert verify(m.user, "-CRLfile", str(m.mkcert_root_crl), "-crl_check") == "35"
    # The UPN otherName is what openssl reads as one.
    text = subprocess.run(
        [require_tool("openssl"), "x509", "-in", str(m.san_upn.cert), "-noout", "-text"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "othername: UPN::alice@corp.example.com" in text


# -- policy_with_default_deny: the reasons, templates, curl, CRL reload ----------------


@dataclass
class DenyStack:
    vallum: Vallum
    crl_file: Path
    host: str


@pytest.fixture(scope="class")
def deny(
    material: Material, app: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DenyStack]:
    m = material
    tmp = tmp_path_factory.mktemp("mtls-deny")
    bundle = concat(
        tmp / "bundle.pem", m.mkcert.root, m.project.root, m.chain_root.path, m.ossl.root
    )
    crl_file = m.usable_crls(tmp / "crls.pem")
    port = free_port()
    routes = [
        {
            "from": route_host("m", port),
            "to": app.url,
            **PUBLIC,
            "set_request_headers": FINGERPRINT_HEADER,
        }
    ]
    mtls = {
        "ca_file": str(bundle),
        "crl_file": str(crl_file),
        "match_subject_alt_names": [
            {"email": r".*@example\.com"},
            {"dns": r".*\.example\.com"},
            {"uri": r"spiffe://example\.com/.*"},
            {"ip_address": r"10\.1\.2\.3"},
            {"user_principal_name": r".*@corp\.example\.com"},
        ],
    }
    with all_in_one(tmp, routes, port, downstream_mtls=mtls) as v:
        yield DenyStack(v, crl_file, host_of("m"))


INVALID = [
    ("twin_user", UNTRUSTED),  # another mkcert CA with CA1's very name
    ("stranger", UNTRUSTED),
    ("expired", "invalid-client-certificate-expired"),
    ("not_yet_valid", "invalid-client-certificate-not-yet-valid"),
    ("project_revoked", "invalid-client-certificate-revoked"),  # `vallum ca revoke`
    ("ossl_revoked", "invalid-client-certificate-revoked"),  # `openssl ca -revoke`
    ("outsider", "invalid-client-certificate-san-mismatch"),
    ("san_partial", "invalid-client-certificate-san-mismatch"),  # matches only in part
    ("chained", "invalid-client-certificate-chain-too-long"),
    ("server_only", "invalid-client-certificate-purpose"),
    # Claims CA1 as issuer, but CA1 never signed it: not issued by a trusted CA.
    ("bad_signature", UNTRUSTED),
    ("unknown_critical", "invalid-client-certificate"),
]


class TestDefaultDeny:
    def test_valid_certificates_from_each_ca_reach_the_upstream(
        self, deny: DenyStack, material: Material, app: Upstream
    ) -> None:
        m = material
        for cert in (m.user, m.project_user, m.ossl_user, m.p12user):
            reply = fetch(deny.vallum, deny.host, cert=cert)
            assert reply.status == 200, (cert.name, reply.body[:500])
            # ${pomerium.client_cert_fingerprint}: the leaf's SHA-256, computed here.
            assert reply.upstream_header("x-cert-fingerprint") == [cert.fingerprint], cert.name

    def test_a_client_cannot_forge_the_fingerprint_header(
        self, deny: DenyStack, material: Material
    ) -> None:
        forged = {"X-Cert-Fingerprint": "00" * 32}
        reply = fetch(deny.vallum, deny.host, cert=material.user, headers=forged)
        assert reply.status == 200, reply.body[:500]
        assert reply.upstream_header("x-cert-fingerprint") == [material.user.fingerprint]

    def test_every_san_kind_can_satisfy_match_subject_alt_names(
        self, deny: DenyStack, material: Material
    ) -> None:
        m = material
        for cert in (m.san_dns, m.san_uri, m.san_ip, m.san_upn):
            reply = fetch(deny.vallum, deny.host, cert=cert)
            assert reply.status == 200, (cert.name, reply.body[:500])

    def test_no_certificate_is_495_required(self, deny: DenyStack, app: Upstream) -> None:
        before = hits(app)
        reply = fetch(deny.vallum, deny.host)
        assert_495(reply, REQUIRED)
        assert hits(app) == before
        # The id on the page finds the request in the log.
        deny.vallum.proc.wait_for(reply.json()["request_id"], timeout=5)

    @pytest.mark.parametrize(("name", "reason"), INVALID, ids=[n for n, _ in INVALID])
    def test_invalid_certificate_is_495_with_its_reason(
        self, deny: DenyStack, material: Material, app: Upstream, name: str, reason: str
    ) -> None:
        before = hits(app)
        assert_495(fetch(deny.vallum, deny.host, cert=getattr(material, name)), reason)
        assert hits(app) == before, "a refused request reached the upstream"

    def test_browsers_get_the_html_page(self, deny: DenyStack, material: Material) -> None:
        accept = "text/html,application/xhtml+xml,*/*;q=0.8"
        missing = fetch(deny.vallum, deny.host, accept=accept)
        assert missing.status == 495
        assert missing.headers["content-type"].startswith("text/html")
        text = missing.body.decode()
        assert "Client certificate required" in text
        assert REQUIRED in text
        invalid = fetch(deny.vallum, deny.host, cert=material.expired, accept=accept)
        assert invalid.status == 495
        assert "Client certificate not accepted" in invalid.body.decode()

    def test_curl_with_pem_pkcs12_and_nothing(self, deny: DenyStack, material: Material) -> None:
        m, v = material, deny.vallum
        for cert, args, env in (
            (m.user, pem_args(m.user), None),
            (m.project_user, p12_args(m.project_user), None),  # AES PKCS#12
            # mkcert's RC2-40 PKCS#12 needs OpenSSL 3's legacy provider in curl.
            (m.p12user, p12_args(m.p12user), {"OPENSSL_CONF": str(m.legacy_openssl_conf)}),
        ):
            result = curl(v, deny.host, "/echo", *args, env=env)
            assert result.returncode == 0, (cert.name, result.stderr)
            assert result.status == 200, (cert.name, result.body[:500])
            headers = {k: val for k, val in json.loads(result.body)["headers"]}
            assert headers["x-cert-fingerprint"] == cert.fingerprint, cert.name
        none = curl(v, deny.host)
        assert none.returncode == 0, none.stderr
        assert none.status == 495
        assert [r["name"] for r in json.loads(none.body)["reasons"]] == [REQUIRED]
        expired = curl(v, deny.host, "/echo", *pem_args(m.expired))
        assert expired.status == 495
        assert "invalid-client-certificate-expired" in expired.body

    def test_crl_file_change_revokes_a_working_certificate(
        self, deny: DenyStack, material: Material
    ) -> None:
        m, v = material, deny.vallum
        assert fetch(v, deny.host, cert=m.victim).status == 200
        m.ossl.revoke(m.victim.cert)
        new_crl = m.ossl.crl(deny.crl_file.parent / "ossl-crl-2.pem")
        fresh = concat(deny.crl_file.parent / "crls-2.pem", m.project_crl, new_crl, m.chain_crl)
        replace_file(fresh, deny.crl_file)
        wait_until(
            lambda: fetch(v, deny.host, cert=m.victim).status == 495,
            "the revoked certificate refused",
        )
        assert_495(fetch(v, deny.host, cert=m.victim), "invalid-client-certificate-revoked")
        # The rest of the CRL still holds, and other certificates still pass.
        assert_495(fetch(v, deny.host, cert=m.ossl_revoked), "invalid-client-certificate-revoked")
        assert fetch(v, deny.host, cert=m.ossl_user).status == 200


# -- per-route CAs ---------------------------------------------------------------------


@dataclass
class PerRouteStack:
    vallum: Vallum
    reload_ca: Path  # route r's CA file, replaced by a test


@pytest.fixture(scope="class")
def per_route(
    material: Material, app: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PerRouteStack]:
    m = material
    tmp = tmp_path_factory.mktemp("mtls-per-route")
    reload_ca = concat(tmp / "r-ca.pem", m.other.path)
    port = free_port()

    def route(name: str, ca: Path | None) -> dict[str, Any]:
        entry: dict[str, Any] = {"from": route_host(name, port), "to": app.url, **PUBLIC}
        if ca is not None:
            entry["tls_downstream_client_ca_file"] = str(ca)
        return entry

    routes = [
        route("a", m.mkcert.root),
        route("b", m.project.root),
        route("c", None),
        route("r", reload_ca),
    ]
    with all_in_one(tmp, routes, port) as v:
        yield PerRouteStack(v, reload_ca)


@dataclass(frozen=True)
class Resumption:
    id: str
    first: tuple[str, str | None]  # (server name, certificate) of the first handshake
    second: tuple[str, str | None]  # the same for the handshake that offers its session
    second_host: str  # the Host of the request on the second connection
    reused: bool
    status: int
    reason: str | None = None


RESUMPTIONS = [
    # Control: a host that asks for no certificate resumes (so the test can tell).
    Resumption("control-unasked-host", ("c", None), ("c", None), "c", True, 200),
    # A valid certificate's session, offered without the certificate.
    Resumption("same-host", ("a", "user"), ("a", None), "a", False, 495, REQUIRED),
    # A session of a host that asks for nothing, offered to one that asks.
    Resumption("unasked-to-asked", ("c", None), ("a", None), "a", False, 495, REQUIRED),
    # A session whose certificate verified against A's CA, offered to B.
    Resumption("across-route-cas", ("a", "user"), ("b", None), "b", False, 495, REQUIRED),
    # An invalid certificate's session, offered again with it: still invalid.
    Resumption(
        "invalid-stays-invalid", ("a", "twin_user"), ("a", "twin_user"), "a", False, 495, UNTRUSTED
    ),
    # A resumed session of the unasked host, used for the asking host's Host.
    Resumption(
        "resumed-unasked-session-asks-for-asked-host",
        ("c", None),
        ("c", None),
        "a",
        True,
        421,
        "misdirected-request",
    ),
]


class TestPerRouteCAs:
    def test_each_host_names_only_its_own_ca(
        self, per_route: PerRouteStack, material: Material
    ) -> None:
        port = per_route.vallum.port
        a = acceptable_ca_names(s_client(port, host_of("a")))
        assert a == [openssl_name(material.mkcert.root)]
        b = acceptable_ca_names(s_client(port, host_of("b")))
        assert b == [openssl_name(material.project.root)]
        assert acceptable_ca_names(s_client(port, host_of("c"))) is None

    def test_a_route_ca_opens_only_its_own_route(
        self, per_route: PerRouteStack, material: Material
    ) -> None:
        v, m = per_route.vallum, material
        assert fetch(v, host_of("a"), cert=m.user).status == 200
        assert fetch(v, host_of("b"), cert=m.project_user).status == 200
        assert_495(fetch(v, host_of("b"), cert=m.user), UNTRUSTED)
        assert_495(fetch(v, host_of("a"), cert=m.project_user), UNTRUSTED)
        assert_495(fetch(v, host_of("a")), REQUIRED)
        assert_495(fetch(v, host_of("b")), REQUIRED)

    def test_a_route_without_a_ca_needs_no_certificate(self, per_route: PerRouteStack) -> None:
        v = per_route.vallum
        assert v.request("GET", host_of("c"), "/echo").status_code == 200
        assert fetch(v, host_of("c")).status == 200

    def test_no_sni_cannot_dodge_the_certificate_request(
        self, per_route: PerRouteStack, material: Material, app: Upstream
    ) -> None:
        """Without a server name the handshake cannot know which route's CA to ask
        for; the request for that route must then fail closed, not go through."""
        v = per_route.vallum
        before = hits(app)
        assert_495(fetch(v, host_of("a"), sni=False), REQUIRED)
        # Holding a valid certificate does not help: nobody asked for it.
        assert_495(fetch(v, host_of("a"), sni=False, cert=material.user), REQUIRED)
        assert hits(app) == before

    @pytest.mark.parametrize("case", RESUMPTIONS, ids=[c.id for c in RESUMPTIONS])
    def test_session_resumption_does_not_skip_the_check(
        self, per_route: PerRouteStack, material: Material, tmp_path: Path, case: Resumption
    ) -> None:
        port = per_route.vallum.port
        session = tmp_path / "session.pem"

        def cert(name: str | None) -> ClientCert | None:
            return getattr(material, name) if name else None

        first = s_client(
            port,
            host_of(case.first[0]),
            cert=cert(case.first[1]),
            sess_out=session,
            request_host=host_of(case.first[0]),
        )
        assert re.search(r"HTTP/1\.1 (\d{3})", first), first
        assert session.exists(), first
        second = s_client(
            port,
            host_of(case.second[0]),
            cert=cert(case.second[1]),
            sess_in=session,
            request_host=host_of(case.second_host),
        )
        status = re.search(r"HTTP/1\.1 (\d{3})", second)
        assert status is not None, second
        handshake = "Reused," if case.reused else "New,"
        assert re.search(f"^{handshake}", second, re.MULTILINE), second
        assert int(status.group(1)) == case.status, second
        if case.reason is not None:
            assert f'"name":"{case.reason}"' in second, second

    def test_route_ca_file_change_is_seen_by_new_connections(
        self, per_route: PerRouteStack, material: Material
    ) -> None:
        v, m = per_route.vallum, material
        host = host_of("r")
        assert fetch(v, host, cert=m.stranger).status == 200
        assert_495(fetch(v, host, cert=m.ossl_user), UNTRUSTED)
        replace_file(m.ossl.root, per_route.reload_ca)
        wait_until(lambda: fetch(v, host, cert=m.ossl_user).status == 200, "the new CA trusted")
        assert_495(fetch(v, host, cert=m.stranger), UNTRUSTED)
        names = acceptable_ca_names(s_client(v.port, host))
        assert names == [openssl_name(m.ossl.root)]

    def test_older_route_key_is_warned_about(self, per_route: PerRouteStack) -> None:
        lines = [
            line
            for line in per_route.vallum.proc.lines
            if "tls_downstream_client_ca" in line and "downstream_mtls.ca" in line
        ]
        assert lines, per_route.vallum.proc.output
        assert all("WARN" in line.upper() for line in lines), lines


# -- enforcement: policy -------------------------------------------------------------


@pytest.fixture(scope="class")
def policy_stack(
    material: Material, app: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Vallum]:
    m = material
    tmp = tmp_path_factory.mktemp("mtls-policy")
    bundle = concat(tmp / "bundle.pem", m.mkcert.root, m.project.root, m.chain_root.path)
    port = free_port()

    def route(name: str, policy: Any) -> dict[str, Any]:
        return {
            "from": route_host(name, port),
            "to": app.url,
            "policy": policy,
            "set_request_headers": FINGERPRINT_HEADER,
        }

    def allow(*criteria: dict[str, Any], op: str = "and") -> dict[str, Any]:
        return {"allow": {op: list(criteria)}}

    routes = [
        route("fp", allow({"client_certificate": {"fingerprint": m.user.fingerprint}})),
        route("spki", allow({"client_certificate": {"spki_hash": m.bob.spki_hash}})),
        route(
            "san",
            allow(
                {"client_certificate": {"san_email": {"ends_with": "@example.com"}}},
                {"client_certificate": {"san_dns": {"is": "svc.example.com"}}},
                {"client_certificate": {"san_uri": {"starts_with": "spiffe://example.com/"}}},
                op="or",
            ),
        ),
        route(
            "guard",
            [
                allow({"accept": True}),
                {"deny": {"and": [{"invalid_client_certificate": True}]}},
            ],
        ),
        route("open", allow({"accept": True})),
    ]
    crls = concat(tmp / "crls.pem", m.chain_crl, m.inter_crl)
    mtls = {
        "ca_file": str(bundle),
        "crl_file": str(crls),
        "enforcement": "policy",
        "max_verify_depth": 2,
    }
    with all_in_one(tmp, routes, port, downstream_mtls=mtls) as v:
        yield v


class TestPolicyEnforcement:
    def test_fingerprint_rule(self, policy_stack: Vallum, material: Material) -> None:
        v, m = policy_stack, material
        ok = fetch(v, host_of("fp"), cert=m.user)
        assert ok.status == 200, ok.body[:500]
        assert ok.upstream_header("x-cert-fingerprint") == [m.user.fingerprint]
        other = fetch(v, host_of("fp"), cert=m.bob)
        assert other.status == 403, other.body[:500]
        assert "client-certificate-unauthorized" in other.reasons

    def test_fingerprint_rule_without_a_certificate(
        self, policy_stack: Vallum, material: Material
    ) -> None:
        """No implicit deny, but the only rule needs a certificate, and none came:
        the page says a certificate is required."""
        assert_495(fetch(policy_stack, host_of("fp")), REQUIRED)

    def test_fingerprint_rule_with_an_invalid_certificate(
        self, policy_stack: Vallum, material: Material
    ) -> None:
        assert_495(fetch(policy_stack, host_of("fp"), cert=material.twin_user), UNTRUSTED)

    def test_spki_hash_rule(self, policy_stack: Vallum, material: Material) -> None:
        v, m = policy_stack, material
        assert fetch(v, host_of("spki"), cert=m.bob).status == 200
        assert fetch(v, host_of("spki"), cert=m.user).status == 403

    def test_san_rules(self, policy_stack: Vallum, material: Material) -> None:
        v, m = policy_stack, material
        for cert in (m.user, m.project_user, m.san_dns, m.san_uri):
            assert fetch(v, host_of("san"), cert=cert).status == 200, cert.name
        for cert in (m.outsider, m.san_partial, m.san_ip, m.san_upn):
            assert fetch(v, host_of("san"), cert=cert).status == 403, cert.name

    def test_max_verify_depth_2_admits_an_intermediate(
        self, policy_stack: Vallum, material: Material
    ) -> None:
        reply = fetch(policy_stack, host_of("san"), cert=material.chained)
        assert reply.status == 200, reply.body[:500]
        assert reply.upstream_header("x-cert-fingerprint") == [material.chained.fingerprint]

    def test_an_intermediate_ca_crl_revokes_what_it_lists(
        self, policy_stack: Vallum, material: Material
    ) -> None:
        """The intermediate is in no bundle; its CRL in crl_file still counts."""
        assert_495(
            fetch(policy_stack, host_of("guard"), cert=material.chained_revoked),
            "invalid-client-certificate-revoked",
        )
        assert fetch(policy_stack, host_of("guard"), cert=material.chained).status == 200

    def test_invalid_client_certificate_deny_rule(
        self, policy_stack: Vallum, material: Material, app: Upstream
    ) -> None:
        v, m = policy_stack, material
        assert fetch(v, host_of("guard"), cert=m.user).status == 200
        before = hits(app)
        assert_495(fetch(v, host_of("guard")), REQUIRED)
        assert_495(fetch(v, host_of("guard"), cert=m.twin_user), UNTRUSTED)
        assert_495(fetch(v, host_of("guard"), cert=m.expired), "invalid-client-certificate-expired")
        assert hits(app) == before

    def test_no_implicit_deny_in_policy_mode(
        self, policy_stack: Vallum, material: Material
    ) -> None:
        v, m = policy_stack, material
        assert fetch(v, host_of("open")).status == 200
        assert fetch(v, host_of("open"), cert=m.twin_user).status == 200
        assert fetch(v, host_of("open"), cert=m.user).status == 200


# -- enforcement: reject_connection --------------------------------------------------


@pytest.fixture(scope="class")
def reject_stack(
    material: Material, app: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Vallum]:
    """The CAs and the CRL given inline (`ca`, `crl`: base64 of the PEM) this time."""
    m = material
    tmp = tmp_path_factory.mktemp("mtls-reject")
    port = free_port()
    routes = [{"from": route_host("x", port), "to": app.url, **PUBLIC}]
    bundle = concat(tmp / "bundle.pem", m.mkcert.root, m.ossl.root)
    mtls = {
        "ca": base64.b64encode(bundle.read_bytes()).decode(),
        "crl": base64.b64encode(m.ossl_crl.read_bytes()).decode(),
        "enforcement": "reject_connection",
    }
    with all_in_one(tmp, routes, port, downstream_mtls=mtls) as v:
        yield v


class TestRejectConnection:
    def test_valid_certificates_pass(self, reject_stack: Vallum, material: Material) -> None:
        for cert in (material.user, material.ossl_user):
            assert fetch(reject_stack, host_of("x"), cert=cert).status == 200, cert.name
            result = curl(reject_stack, host_of("x"), "/echo", *pem_args(cert))
            assert result.status == 200, (cert.name, result.stderr)

    @pytest.mark.parametrize(
        ("name", "alert", "reason"),
        [
            # The TLS alerts of RFC 8446 §6.2, as curl's OpenSSL words them.
            (None, "alert certificate required", REQUIRED),
            ("twin_user", "alert unknown ca", UNTRUSTED),
            ("expired", "alert certificate expired", "invalid-client-certificate-expired"),
            ("server_only", "alert unsupported certificate", "invalid-client-certificate-purpose"),
            ("ossl_revoked", "alert certificate revoked", "invalid-client-certificate-revoked"),
        ],
        ids=["none", "twin_user", "expired", "server_only", "ossl_revoked"],
    )
    def test_curl_gets_a_tls_alert_and_no_http_answer(
        self,
        reject_stack: Vallum,
        material: Material,
        app: Upstream,
        name: str | None,
        alert: str,
        reason: str,
    ) -> None:
        before = hits(app)
        cert: ClientCert | None = getattr(material, name) if name else None
        start = len(reject_stack.proc.lines)
        result = curl(reject_stack, host_of("x"), "/echo", *(pem_args(cert) if cert else []))
        assert result.returncode != 0, result
        assert result.status == 0, result
        assert alert in result.stderr, result.stderr
        assert hits(app) == before
        # The log says which rule refused the handshake.
        reject_stack.proc.wait_for(f"TLS handshake refused: {reason} ", timeout=5, start=start)

    def test_python_handshake_fails(self, reject_stack: Vallum, material: Material) -> None:
        # With TLS 1.3 the client's handshake ends before the server has judged its
        # certificate: the alert may surface on the first read.
        for cert in (None, material.stranger):
            with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
                fetch(reject_stack, host_of("x"), cert=cert)


# -- the older global key ------------------------------------------------------------


@pytest.fixture(scope="class")
def legacy_stack(
    material: Material, app: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Vallum]:
    tmp = tmp_path_factory.mktemp("mtls-legacy")
    port = free_port()
    routes = [{"from": route_host("l", port), "to": app.url, **PUBLIC}]
    with all_in_one(tmp, routes, port, client_ca_file=str(material.mkcert.root)) as v:
        yield v


class TestOlderGlobalKey:
    def test_client_ca_file_still_works(self, legacy_stack: Vallum, material: Material) -> None:
        assert fetch(legacy_stack, host_of("l"), cert=material.user).status == 200
        assert_495(fetch(legacy_stack, host_of("l")), REQUIRED)
        assert_495(fetch(legacy_stack, host_of("l"), cert=material.project_user), UNTRUSTED)

    def test_start_up_warning_names_the_new_key(self, legacy_stack: Vallum) -> None:
        proc = legacy_stack.proc
        proc.wait_for("downstream_mtls.ca", timeout=5)
        lines = [line for line in proc.lines if "client_ca_file" in line]
        assert any("downstream_mtls.ca" in line and "WARN" in line.upper() for line in lines), (
            proc.output
        )


# -- a CRL its CA may not sign -------------------------------------------------------


class TestUnusableCRL:
    def test_a_crl_from_a_ca_without_crl_sign_is_refused_at_start(
        self, material: Material, app: Upstream, tmp_path: Path
    ) -> None:
        """mkcert's root has no cRLSign, so `openssl ca -gencrl` with it makes a CRL no
        verifier may use (OpenSSL error 35 at every handshake). Vallum says so at start,
        naming the key, instead of refusing every certificate of that CA later."""
        port = free_port()
        config = {
            "address": f"127.0.0.1:{port}",
            "authorize_service_url": f"https://127.0.0.1:{free_port()}",
            "databroker_service_url": f"https://127.0.0.1:{free_port()}",
            "data_dir": str(tmp_path / "data"),
            "downstream_mtls": {
                "ca_file": str(material.mkcert.root),
                "crl_file": str(material.mkcert_root_crl),
            },
            "routes": [{"from": route_host("k", port), "to": app.url, **PUBLIC}],
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        result = vallum_once("run", "--config", str(path))
        output = result.stdout + result.stderr
        # The proxy exits 78 (configuration); the supervisor then stops everything, 1.
        assert result.returncode == 1, output
        assert "proxy cannot start: downstream_mtls.crl: the CRL of" in output
        assert "cRLSign" in output
        assert "stopping everything" in output
        assert "Traceback" not in output
