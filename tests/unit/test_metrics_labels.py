"""Metric labels stay bounded, and certificate expiry reads the real notAfter."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from prometheus_client import REGISTRY

from services.authorize.metrics import _decision_labels
from services.proxy.metrics import _request_labels
from services.proxy.routes import ProxyRoutes
from shared.config import Source, parse_config
from shared.metrics.certificates import (
    certificate_name,
    internal_certificates,
    refresh,
    server_certificates,
)
from shared.pb import authorize_pb2
from shared.pki import issue_server, write_issued
from shared.server_tls import CertificateSet, PairSource
from tests.support.certs import TRUST_DOMAIN, make_ca, service_pair


def test_request_labels_keep_common_methods_only() -> None:
    assert _request_labels(("app", "GET", 200)) == ("app", "GET", "200")
    assert _request_labels(("app", "PROPFIND", 207)) == ("app", "other", "207")


def test_decision_labels_name_the_result_and_known_reasons() -> None:
    allow = authorize_pb2.ALLOW
    assert _decision_labels((allow, ("email-ok",))) == ("allow", "email-ok")
    assert _decision_labels((authorize_pb2.DENY, ("http-path-ok", "x-unknown"))) == (
        "deny",
        "http-path-ok,other",
    )
    assert _decision_labels((999, ())) == ("unknown", "")


def test_route_labels_are_name_id_or_from(tmp_path: Path) -> None:
    public = {"to": "http://127.0.0.1:1", "allow_public_unauthenticated_access": True}
    routes = [
        {"from": "https://a.example.com", "name": "app-a", **public},
        {"from": "https://b.example.com", "id": "b-1", **public},
        {"from": "https://c.example.com", **public},
    ]
    routing = ProxyRoutes(parse_config({"routes": routes}, {}, str(tmp_path)))
    assert routing.route_labels == ("app-a", "b-1", "https://c.example.com")


def test_certificate_expiry_is_not_after(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    ca = make_ca(pki)
    pair = service_pair(ca, pki, "authorize")
    server = write_issued(
        issue_server(ca, ["app.example.com", "other.example.com"]), pki, "server", force=True
    )
    served = CertificateSet(
        [PairSource(Source(str(server.cert), None), Source(str(server.key), None), "c", "k")]
    )
    refresh(
        [
            internal_certificates(pair.tls(pki / "ca.pem", TRUST_DOMAIN)),
            server_certificates(served.leaves),
        ]
    )

    def expiry(kind: str, name: str) -> float | None:
        return REGISTRY.get_sample_value(
            "vallum_certificate_expiry_timestamp_seconds", {"kind": kind, "name": name}
        )

    def not_after(path: Path) -> float:
        return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc.timestamp()

    assert expiry("internal", "authorize") == not_after(pair.cert)
    assert expiry("server", "app.example.com") == not_after(server.cert)
    assert expiry("internal_ca", certificate_name(ca.certificate)) == not_after(pki / "ca.pem")
