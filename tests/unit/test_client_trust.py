"""Which hosts ask for client certificates, whom each route trusts, and CRLs refused at
start. Material from the project's CA module and `cryptography`, in tmp files; no
sockets."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.proxy.client_trust import DownstreamTrust
from shared.config import Config, DownstreamMTLS, Route, Source
from shared.material import MaterialError
from shared.pki import CA, fingerprint_sha256, init_ca, issue_server, write_issued
from shared.server_tls import CertificateSet, PairSource

NOW = dt.datetime.now(dt.UTC)


def crl_of(name: x509.Name, key: ec.EllipticCurvePrivateKey, out: Path) -> Path:
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(name)
        .last_update(NOW - dt.timedelta(minutes=5))
        .next_update(NOW + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    out.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return out


def source(path: Path) -> Source:
    return Source(str(path), None)


@pytest.fixture
def server(tmp_path: Path) -> CertificateSet:
    ca = init_ca(tmp_path / "server-ca")
    paths = write_issued(issue_server(ca, ["a.test", "b.test", "c.test"]), tmp_path, "srv")
    return CertificateSet(
        [PairSource(source(paths.cert), source(paths.key), "certificate", "certificate_key")]
    )


@pytest.fixture
def cas(tmp_path: Path) -> tuple[CA, CA]:
    return init_ca(tmp_path / "ca-a", common_name="CA A"), init_ca(
        tmp_path / "ca-b", common_name="CA B"
    )


def route(host: str, ca: CA | None = None) -> Route:
    return Route(
        from_url=f"https://{host}",
        tls_downstream_client_ca=source(ca.cert_path) if ca is not None else None,
    )


def test_only_hosts_with_a_client_ca_ask(server: CertificateSet, cas: tuple[CA, CA]) -> None:
    a, b = cas
    config = Config(routes=(route("a.test", a), route("b.test", b), route("c.test")))
    trust = DownstreamTrust(config, server)
    assert trust.enabled
    scope_a, scope_b = trust.scope_for("a.test"), trust.scope_for("b.test")
    assert scope_a is not None and scope_a.anchors == {fingerprint_sha256(a.certificate)}
    assert scope_b is not None and scope_b.anchors == {fingerprint_sha256(b.certificate)}
    assert trust.scope_for("c.test") is None
    assert trust.scope_for(None) is None
    assert trust.route_anchors(0) == scope_a.anchors
    assert trust.route_anchors(2) is None


def test_a_global_ca_makes_every_name_ask(server: CertificateSet, cas: tuple[CA, CA]) -> None:
    a, b = cas
    config = Config(
        downstream_mtls=DownstreamMTLS(ca=source(a.cert_path)),
        routes=(route("a.test"), route("b.test", b)),
    )
    trust = DownstreamTrust(config, server)
    everywhere = {fingerprint_sha256(a.certificate)}
    for name in ("a.test", "unknown.test", None):
        scope = trust.scope_for(name)
        assert scope is not None and scope.anchors == everywhere, name
    # b.test's own CA replaces the global one there.
    scope_b = trust.scope_for("b.test")
    assert scope_b is not None and scope_b.anchors == {fingerprint_sha256(b.certificate)}
    assert trust.route_anchors(1) == scope_b.anchors


def test_a_wildcard_route_covers_its_names(server: CertificateSet, cas: tuple[CA, CA]) -> None:
    trust = DownstreamTrust(Config(routes=(route("*.corp.test", cas[0]),)), server)
    assert trust.scope_for("x.corp.test") is not None
    assert trust.scope_for("corp.test") is None


def test_routes_sharing_a_host_ask_for_both_cas(server: CertificateSet, cas: tuple[CA, CA]) -> None:
    a, b = cas
    trust = DownstreamTrust(Config(routes=(route("a.test", a), route("a.test", b))), server)
    scope = trust.scope_for("a.test")
    assert scope is not None and len(scope.anchors) == 2
    # ... but each route still trusts only its own.
    assert trust.route_anchors(0) == frozenset({fingerprint_sha256(a.certificate)})


def test_a_crl_that_does_not_verify_with_its_named_ca_is_refused(
    tmp_path: Path, server: CertificateSet, cas: tuple[CA, CA]
) -> None:
    a, _ = cas
    impostor = ec.generate_private_key(ec.SECP256R1())
    crl = crl_of(a.certificate.subject, impostor, tmp_path / "bad.crl")
    config = Config(
        downstream_mtls=DownstreamMTLS(ca=source(a.cert_path), crl=source(crl)),
        routes=(route("a.test"),),
    )
    with pytest.raises(MaterialError, match=r"downstream_mtls\.crl: .* does not verify"):
        DownstreamTrust(config, server)


def test_an_intermediate_crl_is_accepted(
    tmp_path: Path, server: CertificateSet, cas: tuple[CA, CA]
) -> None:
    a, _ = cas
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Some Intermediate")])
    crl = crl_of(name, ec.generate_private_key(ec.SECP256R1()), tmp_path / "inter.crl")
    own = crl_of(a.certificate.subject, a.private_key, tmp_path / "own.crl")  # type: ignore[arg-type]
    both = tmp_path / "both.crl"
    both.write_bytes(crl.read_bytes() + own.read_bytes())
    config = Config(
        downstream_mtls=DownstreamMTLS(ca=source(a.cert_path), crl=source(both)),
        routes=(route("a.test"),),
    )
    trust = DownstreamTrust(config, server)
    scope = trust.scope_for("a.test")
    assert scope is not None
    trust.connection(scope, "a.test")  # builds the context with both CRLs


def test_a_changed_ca_file_is_reloaded(
    tmp_path: Path, server: CertificateSet, cas: tuple[CA, CA]
) -> None:
    a, b = cas
    path = tmp_path / "client-ca.pem"
    path.write_bytes(a.cert_pem())
    trust = DownstreamTrust(Config(routes=(route("a.test"),), client_ca=source(path)), server)
    assert trust.route_anchors(0) == frozenset({fingerprint_sha256(a.certificate)})
    assert not trust.reload_if_changed()
    staged = tmp_path / "staged.pem"
    staged.write_bytes(b.cert_pem())
    staged.replace(path)  # as certificate tools do: rename over
    assert trust.reload_if_changed()
    assert trust.route_anchors(0) == frozenset({fingerprint_sha256(b.certificate)})
    path.write_bytes(b"not a certificate")
    assert not trust.reload_if_changed()  # refused, and the old CA stays
    assert trust.route_anchors(0) == frozenset({fingerprint_sha256(b.certificate)})


def test_a_context_is_not_reused_for_another_pair_with_the_same_id(
    server: CertificateSet, cas: tuple[CA, CA]
) -> None:
    a, _ = cas
    trust = DownstreamTrust(Config(routes=(route("a.test", a),)), server)
    scope = trust.scope_for("a.test")
    assert scope is not None
    first = trust.connection(scope, "a.test").get_context()
    assert trust.connection(scope, "a.test").get_context() is first  # cached
    # A replaced pair that was freed, its id now the current pair's: as the cache sees it.
    pair = server.pair_for_name("a.test")
    stale = dataclasses.replace(pair)
    trust._contexts[(scope.key, id(pair))] = (stale, first)
    assert trust.connection(scope, "a.test").get_context() is not first
