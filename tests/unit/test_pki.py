"""The internal CA: root and leaf certificate contents, files on disk, inspection."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared import pki

SERVER = ExtendedKeyUsageOID.SERVER_AUTH
CLIENT = ExtendedKeyUsageOID.CLIENT_AUTH


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> pki.CA:
    return pki.init_ca(tmp_path_factory.mktemp("ca") / "root")


def ext(
    cert: x509.Certificate, kind: type[x509.ExtensionType]
) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(kind)


def sans(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    value = ext(cert, x509.SubjectAlternativeName).value
    assert isinstance(value, x509.SubjectAlternativeName)
    return value


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def cn(cert: x509.Certificate) -> str | bytes:
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def assert_common_leaf(ca: pki.CA, issued: pki.Issued) -> None:
    cert = issued.certificate
    cert.verify_directly_issued_by(ca.certificate)
    assert pki.key_matches_certificate(issued.private_key, cert)
    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value == x509.BasicConstraints(ca=False, path_length=None)
    ku = ext(cert, x509.KeyUsage)
    assert ku.critical
    assert isinstance(ku.value, x509.KeyUsage)
    assert ku.value.digital_signature and not ku.value.key_cert_sign and not ku.value.crl_sign
    assert ku.value.key_encipherment == isinstance(issued.private_key, rsa.RSAPrivateKey)
    ski = ext(cert, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(issued.private_key.public_key())
    aki = ext(cert, x509.AuthorityKeyIdentifier).value
    assert isinstance(aki, x509.AuthorityKeyIdentifier)
    ca_ski = ext(ca.certificate, x509.SubjectKeyIdentifier).value
    assert isinstance(ca_ski, x509.SubjectKeyIdentifier)
    assert aki.key_identifier == ca_ski.digest
    assert 2**126 <= cert.serial_number < 2**127
    now = dt.datetime.now(dt.UTC)
    skew = now - cert.not_valid_before_utc
    assert dt.timedelta(minutes=4) < skew <= dt.timedelta(minutes=6)
    assert cert.signature_hash_algorithm is not None
    assert cert.signature_hash_algorithm.name == "sha256"


def eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    value = ext(cert, x509.ExtendedKeyUsage).value
    assert isinstance(value, x509.ExtendedKeyUsage)
    return list(value)


# --- the root -----------------------------------------------------------------------


def test_init_ca_writes_a_root_with_the_required_extensions(tmp_path: Path) -> None:
    ca_dir = tmp_path / "nested" / "ca"
    ca = pki.init_ca(ca_dir)
    assert mode(ca_dir) == 0o700
    assert mode(ca_dir / "ca-key.pem") == 0o600
    cert = pki.load_certificates((ca_dir / "ca.pem").read_bytes())[0]
    assert cert == ca.certificate
    assert cn(cert) == "Vallum Internal CA"
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)
    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value == x509.BasicConstraints(ca=True, path_length=0)
    ku = ext(cert, x509.KeyUsage)
    assert ku.critical
    assert isinstance(ku.value, x509.KeyUsage)
    assert ku.value.key_cert_sign and ku.value.crl_sign
    assert not (ku.value.digital_signature or ku.value.key_encipherment)
    assert ext(cert, x509.SubjectKeyIdentifier).value == (
        x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    )
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(days=3650) < lifetime < dt.timedelta(days=3651)


def test_init_ca_rsa_with_custom_name_and_lifetime(tmp_path: Path) -> None:
    ca = pki.init_ca(tmp_path, common_name="Test Root", key_type="rsa", rsa_bits=2048, days=30)
    assert cn(ca.certificate) == "Test Root"
    assert pki.describe_certificate(ca.certificate).key_type == "RSA 2048"
    assert ca.certificate.not_valid_after_utc - dt.datetime.now(dt.UTC) < dt.timedelta(days=31)
    leaf = pki.issue_client(ca, "a@example.com", 1)
    leaf.certificate.verify_directly_issued_by(ca.certificate)


@pytest.mark.parametrize("existing", ["ca.pem", "ca-key.pem"])
def test_init_ca_refuses_to_overwrite(tmp_path: Path, existing: str) -> None:
    (tmp_path / existing).write_bytes(b"precious")
    with pytest.raises(pki.PKIError, match=f"refusing to overwrite existing CA file .*{existing}"):
        pki.init_ca(tmp_path)
    assert (tmp_path / existing).read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing]


def test_init_ca_leaves_an_existing_directory_mode_alone(tmp_path: Path) -> None:
    tmp_path.chmod(0o750)
    pki.init_ca(tmp_path)
    assert mode(tmp_path) == 0o750


@pytest.mark.parametrize("days", [0, -1, 40000])
def test_validity_is_bounded(tmp_path: Path, ca: pki.CA, days: int) -> None:
    with pytest.raises(pki.PKIError, match="validity"):
        pki.init_ca(tmp_path, days=days)
    with pytest.raises(pki.PKIError, match="validity"):
        pki.issue_client(ca, "a@example.com", days)


def test_load_ca_round_trip(ca: pki.CA) -> None:
    loaded = pki.load_ca(ca.dir)
    assert loaded.certificate == ca.certificate
    assert pki.key_matches_certificate(loaded.private_key, ca.certificate)


def test_load_ca_missing(tmp_path: Path) -> None:
    with pytest.raises(pki.PKIError, match=r"no CA certificate at .*ca\.pem.*vallum ca init"):
        pki.load_ca(tmp_path / "nowhere")


def test_load_ca_rejects_a_leaf(tmp_path: Path, ca: pki.CA) -> None:
    leaf = pki.issue_server(ca, ["example.test"])
    (tmp_path / "ca.pem").write_bytes(leaf.cert_pem())
    (tmp_path / "ca-key.pem").write_bytes(leaf.key_pem())
    with pytest.raises(pki.PKIError, match="is not a CA certificate"):
        pki.load_ca(tmp_path)


def test_load_ca_rejects_a_key_from_another_ca(tmp_path: Path, ca: pki.CA) -> None:
    other = pki.init_ca(tmp_path / "other")
    (tmp_path / "other" / "ca-key.pem").write_bytes(pki.private_key_pem(ca.private_key))
    with pytest.raises(pki.PKIError, match=r"ca-key\.pem does not match .*ca\.pem"):
        pki.load_ca(other.dir)


def test_load_ca_garbage(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_bytes(b"not a certificate")
    (tmp_path / "ca-key.pem").write_bytes(b"nor a key")
    with pytest.raises(pki.PKIError, match=r"ca\.pem: neither a PEM nor a DER certificate"):
        pki.load_ca(tmp_path)


# --- leaves -------------------------------------------------------------------------


def test_service_certificate(ca: pki.CA) -> None:
    issued = pki.issue_service(
        ca, "authorize", "example.org", ["authorize.vallum.svc", "AUTHORIZE"], ["10.0.0.7"]
    )
    cert = issued.certificate
    assert_common_leaf(ca, issued)
    assert cn(cert) == "authorize"
    assert eku(cert) == [SERVER, CLIENT]
    names = sans(cert)
    assert names.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://example.org/authorize"
    ]
    # Duplicates (case-insensitive) collapse; loopback names are there by default.
    assert names.get_values_for_type(x509.DNSName) == [
        "authorize",
        "authorize.vallum.svc",
        "localhost",
    ]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.7"),
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert not ext(cert, x509.SubjectAlternativeName).critical
    assert pki.spiffe_ids(cert) == ["spiffe://example.org/authorize"]
    lifetime = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=364) < lifetime <= dt.timedelta(days=365)


def test_service_certificate_without_loopback(ca: pki.CA) -> None:
    cert = pki.issue_service(ca, "proxy", include_loopback=False).certificate
    assert pki.spiffe_ids(cert) == ["spiffe://vallum.internal/proxy"]
    assert sans(cert).get_values_for_type(x509.DNSName) == ["proxy"]
    assert sans(cert).get_values_for_type(x509.IPAddress) == []


@pytest.mark.parametrize(
    ("service", "domain", "match"),
    [
        ("Proxy", "vallum.internal", "invalid service name"),
        ("a/b", "vallum.internal", "invalid service name"),
        ("proxy", "Vallum.Internal", "invalid trust domain"),
        ("proxy", "", "invalid trust domain"),
        ("proxy", "a/b", "invalid trust domain"),
    ],
)
def test_service_names_are_validated(ca: pki.CA, service: str, domain: str, match: str) -> None:
    with pytest.raises(pki.PKIError, match=match):
        pki.issue_service(ca, service, domain)


def test_server_certificate_with_wildcard_and_ips(ca: pki.CA) -> None:
    issued = pki.issue_server(ca, ["*.localhost", "Example.TEST.", "127.0.0.1", "::1"], 30)
    cert = issued.certificate
    assert_common_leaf(ca, issued)
    assert cn(cert) == "*.localhost"
    assert eku(cert) == [SERVER]
    assert sans(cert).get_values_for_type(x509.DNSName) == ["*.localhost", "example.test"]
    assert [str(ip) for ip in sans(cert).get_values_for_type(x509.IPAddress)] == [
        "127.0.0.1",
        "::1",
    ]
    assert sans(cert).get_values_for_type(x509.UniformResourceIdentifier) == []


def test_server_certificate_for_an_ip_only(ca: pki.CA) -> None:
    cert = pki.issue_server(ca, ["192.0.2.1"]).certificate
    assert cn(cert) == "192.0.2.1"
    assert sans(cert).get_values_for_type(x509.DNSName) == []


def test_server_certificate_with_unicode_name_uses_a_labels(ca: pki.CA) -> None:
    cert = pki.issue_server(ca, ["bücher.example"]).certificate
    assert sans(cert).get_values_for_type(x509.DNSName) == ["xn--bcher-kva.example"]


@pytest.mark.parametrize("bad", ["a*.example", "*", "foo.*.example", "bad name", "a..b", ""])
def test_server_names_are_validated(ca: pki.CA, bad: str) -> None:
    with pytest.raises(pki.PKIError, match="DNS name"):
        pki.issue_server(ca, [bad])


def test_server_needs_a_name(ca: pki.CA) -> None:
    with pytest.raises(pki.PKIError, match="at least one"):
        pki.issue_server(ca, [])


def test_client_certificate(ca: pki.CA) -> None:
    issued = pki.issue_client(ca, "alice@example.com", 90)
    cert = issued.certificate
    assert_common_leaf(ca, issued)
    assert cn(cert) == "alice@example.com"
    assert eku(cert) == [CLIENT]
    assert sans(cert).get_values_for_type(x509.RFC822Name) == ["alice@example.com"]
    assert sans(cert).get_values_for_type(x509.DNSName) == []


def test_rsa_client_certificate_adds_key_encipherment(ca: pki.CA) -> None:
    issued = pki.issue_client(ca, "bob@example.com", key_type="rsa")
    assert isinstance(issued.private_key, rsa.RSAPrivateKey)
    assert issued.private_key.key_size == 2048
    assert_common_leaf(ca, issued)


def test_long_email_leaves_subject_empty_and_san_critical(ca: pki.CA) -> None:
    email = "a" * 60 + "@example.com"
    cert = pki.issue_client(ca, email).certificate
    assert len(cert.subject) == 0
    assert ext(cert, x509.SubjectAlternativeName).critical
    assert sans(cert).get_values_for_type(x509.RFC822Name) == [email]


@pytest.mark.parametrize(
    "bad",
    [
        "alice",
        "@example.com",
        "alice@",
        "al ice@example.com",
        "ålice@example.com",
        "alice@*.example.com",
    ],
)
def test_client_email_is_validated(ca: pki.CA, bad: str) -> None:
    with pytest.raises(pki.PKIError):
        pki.issue_client(ca, bad)


def test_each_leaf_gets_a_fresh_key_and_serial(ca: pki.CA) -> None:
    a = pki.issue_client(ca, "a@example.com")
    b = pki.issue_client(ca, "a@example.com")
    assert a.certificate.serial_number != b.certificate.serial_number
    assert pki.spki_sha256_b64(a.certificate) != pki.spki_sha256_b64(b.certificate)


def test_leaf_never_outlives_the_root(tmp_path: Path) -> None:
    short = pki.init_ca(tmp_path, days=10)
    cert = pki.issue_server(short, ["example.test"], 365).certificate
    assert cert.not_valid_after_utc == short.certificate.not_valid_after_utc


# --- writing ------------------------------------------------------------------------


def test_write_issued_pem_and_pkcs12(tmp_path: Path, ca: pki.CA) -> None:
    issued = pki.issue_client(ca, "alice@example.com")
    out = tmp_path / "out"
    paths = pki.write_issued(issued, out, "alice", pkcs12=True)
    assert paths == pki.IssuedPaths(out / "alice.pem", out / "alice-key.pem", out / "alice.p12")
    assert mode(out) == 0o700
    assert mode(paths.key) == 0o600
    assert paths.pkcs12 is not None and mode(paths.pkcs12) == 0o600
    assert pki.load_certificates(paths.cert.read_bytes()) == [issued.certificate]
    key = pki.load_private_key(paths.key.read_bytes())
    assert pki.key_matches_certificate(key, issued.certificate)
    bundle = pki.load_pkcs12(paths.pkcs12.read_bytes(), "changeit")
    assert bundle.certificate == issued.certificate
    assert bundle.additional == (ca.certificate,)
    assert bundle.private_key is not None
    assert pki.key_matches_certificate(bundle.private_key, issued.certificate)
    assert list(tmp_path.rglob(".*.tmp")) == []


def test_pkcs12_uses_pbes2_aes(ca: pki.CA) -> None:
    data = pki.pkcs12_bytes(pki.issue_client(ca, "a@example.com"), "s3cret")
    # OIDs as DER: PBES2 (1.2.840.113549.1.5.13), aes256-CBC (2.16.840.1.101.3.4.1.42).
    assert bytes.fromhex("2a864886f70d01050d") in data
    assert bytes.fromhex("60864801650304012a") in data
    # No RC2 / 3DES PKCS#12 PBE (1.2.840.113549.1.12.1.x).
    assert bytes.fromhex("2a864886f70d010c01") not in data
    with pytest.raises(pki.PKIError, match="check --password"):
        pki.load_pkcs12(data, "changeit")
    with pytest.raises(pki.PKIError, match="must not be empty"):
        pki.pkcs12_bytes(pki.issue_client(ca, "a@example.com"), "")


def test_write_issued_refuses_overwrite_and_writes_nothing(tmp_path: Path, ca: pki.CA) -> None:
    issued = pki.issue_server(ca, ["example.test"])
    (tmp_path / "web.pem").write_bytes(b"old")
    with pytest.raises(pki.PKIError, match=r"refusing to overwrite .*web\.pem.*--force"):
        pki.write_issued(issued, tmp_path, "web", pkcs12=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["web.pem"]
    assert (tmp_path / "web.pem").read_bytes() == b"old"
    paths = pki.write_issued(issued, tmp_path, "web", force=True)
    assert paths.cert.read_bytes() == issued.cert_pem()
    assert mode(paths.key) == 0o600


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", ""])
def test_write_issued_rejects_unsafe_names(tmp_path: Path, ca: pki.CA, name: str) -> None:
    with pytest.raises(pki.PKIError, match="invalid output name"):
        pki.write_issued(pki.issue_server(ca, ["example.test"]), tmp_path, name)


# --- inspection ---------------------------------------------------------------------


def test_describe_bundle(ca: pki.CA) -> None:
    issued = pki.issue_service(ca, "proxy", dns_names=["proxy.internal"])
    infos = pki.describe(issued.cert_pem() + issued.chain_pem())
    assert len(infos) == 2
    leaf, root = infos
    assert leaf.subject == "CN=proxy"
    assert leaf.issuer == root.subject == "CN=Vallum Internal CA"
    assert leaf.serial == format(issued.certificate.serial_number, "x")
    assert [str(s) for s in leaf.sans] == [
        "URI:spiffe://vallum.internal/proxy",
        "DNS:proxy",
        "DNS:proxy.internal",
        "DNS:localhost",
        "IP:127.0.0.1",
        "IP:::1",
    ]
    assert leaf.sans[0] == pki.SAN("uri", "spiffe://vallum.internal/proxy")
    assert leaf.spiffe_ids() == ["spiffe://vallum.internal/proxy"]
    der = issued.certificate.public_bytes(serialization.Encoding.DER)
    assert leaf.fingerprint_sha256 == hashlib.sha256(der).hexdigest()
    spki = issued.certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert leaf.spki_sha256 == base64.b64encode(hashlib.sha256(spki).digest()).decode()
    assert leaf.not_before == issued.certificate.not_valid_before_utc
    assert leaf.not_after.tzinfo is not None
    assert (leaf.is_ca, root.is_ca) == (False, True)
    assert leaf.key_type == "ECDSA P-256"
    assert root.sans == ()


def test_describe_client_san_kind(ca: pki.CA) -> None:
    (info,) = pki.describe(pki.issue_client(ca, "a@example.com").cert_pem())
    assert info.sans == (pki.SAN("email", "a@example.com"),)


def test_fingerprint_helpers_agree_with_cryptography(ca: pki.CA) -> None:
    cert = ca.certificate
    assert pki.fingerprint_sha256(cert) == cert.fingerprint(hashes.SHA256()).hex()
    assert ":" not in pki.fingerprint_sha256(cert)
    assert pki.fingerprint_sha256(cert) == pki.fingerprint_sha256(cert).lower()
    assert len(base64.b64decode(pki.spki_sha256_b64(cert))) == 32
    assert pki.spiffe_ids(cert) == []
