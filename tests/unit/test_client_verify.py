"""The verdict on a client certificate: reasons, per-route trust, SAN rules (incl. UPN)."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.proxy.client_verify import (
    SAN_MISMATCH,
    UNTRUSTED,
    PeerCertificate,
    SanRule,
    VerifyRecord,
    verdict,
)
from shared.config import SanMatcher
from shared.pki import UPN_OID, fingerprint_sha256, subject_alt_names

NOW = dt.datetime.now(dt.UTC)


def _utf8(text: str) -> bytes:
    raw = text.encode()
    assert len(raw) < 128
    return bytes([0x0C, len(raw)]) + raw


def make(
    cn: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    *,
    ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256()), key


ROOT = make("root", ca=True)
OTHER_ROOT = make("other root", ca=True)
INTER = make("inter", ROOT, ca=True)
LEAF = make(
    "user",
    ROOT,
    sans=[
        x509.RFC822Name("ada@example.com"),
        x509.DNSName("laptop.corp.example"),
        x509.UniformResourceIdentifier("spiffe://corp/devices/7"),
        x509.OtherName(UPN_OID, _utf8("ada@corp.example")),
    ],
)[0]
DEEP = make("deep", INTER)[0]


def rule(**patterns: str) -> SanRule:
    return SanRule([SanMatcher(kind, pattern) for kind, pattern in patterns.items()])


def test_upn_other_name_is_read() -> None:
    sans = {(s.kind, s.value) for s in subject_alt_names(LEAF)}
    assert ("upn", "ada@corp.example") in sans
    assert ("email", "ada@example.com") in sans


@pytest.mark.parametrize(
    ("kind", "pattern", "accepted"),
    [
        ("email", r".*@example\.com", True),
        ("email", r"example\.com", False),  # full match, not a search
        ("dns", r".*\.corp\.example", True),
        ("uri", r"spiffe://corp/devices/\d+", True),
        ("user_principal_name", r"ada@corp\.example", True),
        ("user_principal_name", r"ada@example\.com", False),  # an email is not a UPN
        ("ip_address", r"10\..*", False),
    ],
)
def test_san_rules(kind: str, pattern: str, accepted: bool) -> None:
    assert rule(**{kind: pattern}).accepts(LEAF) is accepted


def test_any_rule_is_enough_and_no_rules_accept_everything() -> None:
    assert SanRule([SanMatcher("ip_address", "1.*"), SanMatcher("email", "ada@.*")]).accepts(LEAF)
    assert SanRule([]).accepts(LEAF)
    assert not SanRule([])


def test_a_verified_certificate_names_its_anchor() -> None:
    peer = verdict(LEAF, [LEAF, ROOT[0]], VerifyRecord((ROOT[0],)), SanRule([]), verified=True)
    assert peer.presented and not peer.error
    assert peer.anchor == fingerprint_sha256(ROOT[0])
    assert peer.chain_pem[0].startswith("-----BEGIN CERTIFICATE-----")


def test_per_route_trust() -> None:
    peer = verdict(LEAF, [LEAF, ROOT[0]], VerifyRecord((ROOT[0],)), SanRule([]), verified=True)
    mine = frozenset({fingerprint_sha256(ROOT[0])})
    theirs = frozenset({fingerprint_sha256(OTHER_ROOT[0])})
    assert peer.error_for(mine) == ""
    assert peer.error_for(theirs) == UNTRUSTED
    assert peer.message(theirs).verify_error == UNTRUSTED
    assert peer.message(mine).verify_error == ""
    assert peer.message(mine) is peer.message(mine)  # built once per connection


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (10, "invalid-client-certificate-expired"),
        (9, "invalid-client-certificate-not-yet-valid"),
        (23, "invalid-client-certificate-revoked"),
        (20, "invalid-client-certificate-untrusted"),
        (26, "invalid-client-certificate-purpose"),
        (12, "invalid-client-certificate-crl-unavailable"),
        (7, "invalid-client-certificate-untrusted"),
        (50, "invalid-client-certificate"),
    ],
)
def test_openssl_codes_become_reasons(code: int, reason: str) -> None:
    record = VerifyRecord((ROOT[0],))
    record.note(code, 0)
    peer = verdict(LEAF, [LEAF], record, SanRule([]), verified=False)
    assert peer.error == reason
    # Whatever the route trusts, an invalid certificate stays invalid.
    assert peer.error_for(frozenset({fingerprint_sha256(ROOT[0])})) == reason


def test_the_first_failure_wins_and_a_missing_crl_is_not_one() -> None:
    record = VerifyRecord()
    assert record.note(3, 0) is False  # the issuer has no CRL: not revocation-checked
    record.note(10, 0)
    record.note(23, 0)
    assert record.code == 10


def test_too_deep_to_a_trusted_root_versus_to_an_unknown_one() -> None:
    trusted = VerifyRecord((ROOT[0],))
    trusted.note(22, 1)
    peer = verdict(DEEP, [DEEP, INTER[0]], trusted, SanRule([]), verified=False)
    assert peer.error == "invalid-client-certificate-chain-too-long"
    unknown = VerifyRecord((OTHER_ROOT[0],))
    unknown.note(22, 1)
    peer = verdict(DEEP, [DEEP, INTER[0]], unknown, SanRule([]), verified=False)
    assert peer.error == UNTRUSTED


def test_san_mismatch_and_missing() -> None:
    peer = verdict(LEAF, [LEAF, ROOT[0]], VerifyRecord(), rule(email=".*@other"), verified=True)
    assert peer.error == SAN_MISMATCH
    none = verdict(None, [], VerifyRecord(), SanRule([]), verified=False)
    assert none == PeerCertificate(presented=False)
    assert none.error_for(frozenset()) == "client-certificate-required"
    assert none.message(None).presented is False and none.message(None).requested
