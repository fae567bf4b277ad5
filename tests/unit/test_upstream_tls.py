"""Upstream TLS contexts and failure words, without sockets (the handshakes are in
tests/integration/test_upstream_tls.py)."""

from __future__ import annotations

import errno
import logging
import os
import ssl
import tempfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from services.proxy.upstream_tls import (
    UpstreamTLS,
    build_context,
    describe_tls_failure,
    uses_tls,
)
from shared import pki
from shared.config import Route, Source, WeightedURL
from shared.material import MaterialError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> pki.CA:
    return pki.init_ca(tmp_path_factory.mktemp("ca") / "ca")


def route(**kw: object) -> Route:
    return Route(
        from_url="https://app.example.com",
        to=(WeightedURL("https://10.0.0.5:8443"),),
        **kw,  # type: ignore[arg-type]
    )


def root_names(ctx: ssl.SSLContext) -> list[str]:
    certs = [x509.load_der_x509_certificate(der) for der in ctx.get_ca_certs(binary_form=True)]
    return [str(c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value) for c in certs]


def file_source(path: Path) -> Source:
    return Source(str(path), None)


def test_default_routes_share_the_system_context() -> None:
    a, b = UpstreamTLS(route()), UpstreamTLS(route(tls_server_name="x.example"))
    assert a.context is b.context
    ctx = a.context
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.options & ssl.OP_NO_RENEGOTIATION
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


def test_renegotiation_only_when_allowed() -> None:
    ctx = build_context(route(tls_upstream_allow_renegotiation=True))
    assert not ctx.options & ssl.OP_NO_RENEGOTIATION
    assert ctx.verify_mode == ssl.CERT_REQUIRED


def test_custom_ca_replaces_the_system_store(ca: pki.CA) -> None:
    ctx = build_context(route(tls_custom_ca=file_source(ca.cert_path)))
    assert root_names(ctx) == [pki.DEFAULT_CA_NAME]
    assert ctx.options & ssl.OP_NO_RENEGOTIATION


def test_custom_ca_inline(ca: pki.CA) -> None:
    pem = ca.cert_path.read_bytes()
    ctx = build_context(route(tls_custom_ca=Source(None, pem)))
    assert len(ctx.get_ca_certs()) == 1


def test_skip_verify_warns_naming_the_route(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "vallum.proxy.upstream_tls"):
        tls = UpstreamTLS(route(tls_skip_verify=True, name="billing"))
    assert tls.context.verify_mode == ssl.CERT_NONE
    assert not tls.context.check_hostname
    assert tls.warnings() and "billing" in tls.warnings()[0]
    assert "tls_skip_verify" in caplog.text and "billing" in caplog.text
    assert UpstreamTLS(route()).warnings() == []


def test_client_certificate_inline_and_from_files(
    ca: pki.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    issued = pki.issue_service(ca, "proxy")
    inline = route(
        tls_client_cert=Source(None, issued.cert_pem()),
        tls_client_key=Source(None, issued.key_pem()),
    )
    assert UpstreamTLS(inline).presents_client_certificate
    # The inline key was written only for the instant ssl needed a file.
    assert list(scratch.iterdir()) == []
    paths = pki.write_issued(issued, tmp_path, "proxy")
    build_context(
        route(tls_client_cert=file_source(paths.cert), tls_client_key=file_source(paths.key))
    )


def test_bad_material_names_route_and_key(ca: pki.CA, tmp_path: Path) -> None:
    a, b = pki.issue_service(ca, "proxy"), pki.issue_service(ca, "other")
    mismatched = route(
        name="billing",
        tls_client_cert=Source(None, a.cert_pem()),
        tls_client_key=Source(None, b.key_pem()),
    )
    with pytest.raises(MaterialError, match=r"route billing: tls_client_key: .*does not match"):
        UpstreamTLS(mismatched)
    with pytest.raises(MaterialError, match=r"tls_custom_ca: cannot read"):
        build_context(route(tls_custom_ca=file_source(tmp_path / "missing.pem")))
    with pytest.raises(MaterialError, match="together"):
        build_context(route(tls_client_cert=Source(None, a.cert_pem())))


def test_server_name_precedence() -> None:
    assert UpstreamTLS(route()).server_name("App.Internal.") == "app.internal"
    assert UpstreamTLS(route(tls_server_name="a.example")).server_name("10.0.0.5") == "a.example"
    both = route(tls_server_name="a.example", tls_upstream_server_name="b.example")
    assert UpstreamTLS(both).server_name("10.0.0.5") == "b.example"
    # IP literals are passed through: Python's ssl sends no SNI and checks IP SANs.
    assert UpstreamTLS(route()).server_name("10.0.0.5") == "10.0.0.5"
    assert UpstreamTLS(route()).server_name("[::1]") == "::1"


def test_uses_tls() -> None:
    assert uses_tls(route())
    assert not uses_tls(Route(from_url="https://a.example", to=(WeightedURL("http://b:80"),)))


def test_reload_at_most_once_per_interval(ca: pki.CA, tmp_path: Path) -> None:
    other = pki.init_ca(tmp_path / "other", common_name="Other CA")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_path.read_bytes())
    clock = Clock()
    tls = UpstreamTLS(route(tls_custom_ca=file_source(ca_file)), clock=clock)
    first = tls.context

    replacement = tmp_path / "new.pem"
    replacement.write_bytes(other.cert_path.read_bytes())
    os.replace(replacement, ca_file)
    clock.now += 0.5
    assert tls.context is first  # not looked at yet
    clock.now += 0.6
    second = tls.context
    assert second is not first
    assert root_names(second) == ["Other CA"]

    # A broken file is logged and the working context kept.
    ca_file.write_bytes(b"not a certificate")
    clock.now += 1.1
    assert tls.context is second
    clock.now += 1.1
    assert tls.context is second  # unchanged since, so not rebuilt again


def _ssl_error(reason: str) -> ssl.SSLError:
    e = ssl.SSLError(1, f"[SSL: {reason}] alert")
    e.reason = reason
    return e


def _verify_error(code: int) -> ssl.SSLCertVerificationError:
    e = ssl.SSLCertVerificationError(1, "certificate verify failed")
    e.verify_code = code
    e.verify_message = "x"
    return e


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (_verify_error(20), "upstream-tls-untrusted"),
        (_verify_error(18), "upstream-tls-untrusted"),
        (_verify_error(19), "upstream-tls-untrusted"),
        (_verify_error(10), "upstream-tls-expired"),
        (_verify_error(9), "upstream-tls-not-yet-valid"),
        (_verify_error(62), "upstream-tls-name-mismatch"),
        (_verify_error(64), "upstream-tls-name-mismatch"),
        (_verify_error(23), "upstream-tls-revoked"),
        (_verify_error(26), "upstream-tls-invalid"),
        (_ssl_error("TLSV13_ALERT_CERTIFICATE_REQUIRED"), "upstream-client-certificate-required"),
        (_ssl_error("TLSV1_ALERT_UNKNOWN_CA"), "upstream-client-certificate-rejected"),
        (_ssl_error("SSLV3_ALERT_BAD_CERTIFICATE"), "upstream-client-certificate-rejected"),
        (_ssl_error("SSLV3_ALERT_HANDSHAKE_FAILURE"), "upstream-tls-handshake-failed"),
        (_ssl_error("WRONG_VERSION_NUMBER"), "upstream-tls-not-tls"),
        (_ssl_error("TLSV1_ALERT_PROTOCOL_VERSION"), "upstream-tls-incompatible"),
        (_ssl_error("UNEXPECTED_EOF_WHILE_READING"), "upstream-connection-reset"),
        (ssl.SSLEOFError(8, "EOF"), "upstream-connection-reset"),
        (
            ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed ('10.0.0.5', 8443)"),
            "upstream-connection-refused",
        ),
        (ConnectionResetError(errno.ECONNRESET, "reset"), "upstream-connection-reset"),
        (BrokenPipeError(errno.EPIPE, "pipe"), "upstream-connection-reset"),
        (TimeoutError(), "upstream-timeout"),
        (OSError(errno.EHOSTUNREACH, "No route to host"), "upstream-unreachable"),
        (
            OSError(
                "Multiple exceptions: [Errno 111] Connect call failed ('::1', 1), "
                "[Errno 111] Connect call failed ('127.0.0.1', 1)"
            ),
            "upstream-connection-refused",
        ),
        (ValueError("odd"), "upstream-unavailable"),
    ],
)
def test_describe_tls_failure(exc: BaseException, code: str) -> None:
    got, words = describe_tls_failure(exc)
    assert got == code
    assert words and "10.0.0.5" not in words and "::1" not in words


def test_handshake_failure_uses_what_vallum_presented() -> None:
    e = _ssl_error("SSLV3_ALERT_HANDSHAKE_FAILURE")
    assert describe_tls_failure(e, client_cert=False)[0] == "upstream-client-certificate-required"
    assert describe_tls_failure(e, client_cert=True)[0] == "upstream-client-certificate-rejected"
    tls = UpstreamTLS(route())
    assert tls.describe_failure(e)[0] == "upstream-client-certificate-required"


def test_describe_follows_the_cause() -> None:
    try:
        try:
            raise _verify_error(62)
        except ssl.SSLError as inner:
            raise RuntimeError("connect to https://10.0.0.5:8443 failed") from inner
    except RuntimeError as outer:
        code, words = describe_tls_failure(outer)
    assert code == "upstream-tls-name-mismatch"
    assert "does not match its name" in words
