"""Loading certificates and private keys from bytes, and matching them."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from shared import pki


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> pki.CA:
    return pki.init_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_load_certificates_bundle_skips_other_blocks(ca: pki.CA) -> None:
    issued = pki.issue_server(ca, ["example.test"])
    combined = issued.key_pem() + issued.cert_pem() + b"\n" + ca.cert_pem()
    assert pki.load_certificates(combined) == [issued.certificate, ca.certificate]


def test_load_certificates_der(ca: pki.CA) -> None:
    der = ca.certificate.public_bytes(serialization.Encoding.DER)
    assert pki.load_certificates(der) == [ca.certificate]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "file is empty"),
        (b"   \n", "file is empty"),
        (b"hello world", "neither a PEM nor a DER certificate"),
        (b"\x30\x03\x02\x01\x01", "neither a PEM nor a DER certificate"),
        (b"-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n", "malformed"),
        (b"-----BEGIN PUBLIC KEY-----\nAA==\n-----END PUBLIC KEY-----\n", "no PEM certificate"),
    ],
)
def test_load_certificates_errors(data: bytes, match: str) -> None:
    with pytest.raises(pki.PKIError, match=f"^bundle.pem: {match}"):
        pki.load_certificates(data, source="bundle.pem")


def test_load_certificates_rejects_a_key_file(ca: pki.CA) -> None:
    with pytest.raises(pki.PKIError, match="is this a key"):
        pki.load_certificates(pki.private_key_pem(ca.private_key))


def _pem(key: pki.PrivateKey, fmt: serialization.PrivateFormat) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def test_load_private_key_formats(ca: pki.CA, rsa_key: rsa.RSAPrivateKey) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    cases: list[tuple[pki.PrivateKey, bytes]] = [
        (ec_key, _pem(ec_key, serialization.PrivateFormat.PKCS8)),
        (ec_key, _pem(ec_key, serialization.PrivateFormat.TraditionalOpenSSL)),
        (rsa_key, _pem(rsa_key, serialization.PrivateFormat.PKCS8)),
        (rsa_key, _pem(rsa_key, serialization.PrivateFormat.TraditionalOpenSSL)),
        (ed_key, _pem(ed_key, serialization.PrivateFormat.PKCS8)),
        (
            ec_key,
            ec_key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        ),
    ]
    for key, data in cases:
        loaded = pki.load_private_key(data)
        assert type(loaded) is type(key)
        assert pki.private_key_pem(loaded) == pki.private_key_pem(key)
    assert b"BEGIN EC PRIVATE KEY" in cases[1][1]
    assert b"BEGIN RSA PRIVATE KEY" in cases[3][1]


@pytest.mark.parametrize("fmt", ["PKCS8", "TraditionalOpenSSL"])
def test_load_private_key_refuses_encrypted(rsa_key: rsa.RSAPrivateKey, fmt: str) -> None:
    data = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        getattr(serialization.PrivateFormat, fmt),
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(pki.PKIError, match=r"^key\.pem: private key is encrypted.*openssl pkey"):
        pki.load_private_key(data, source="key.pem")


def test_load_private_key_refuses_encrypted_der(rsa_key: rsa.RSAPrivateKey) -> None:
    data = rsa_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(pki.PKIError, match="encrypted"):
        pki.load_private_key(data, source="key.der")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "not a readable private key"),
        (b"garbage", "not a readable private key"),
        (b"-----BEGIN PRIVATE KEY-----\nbm9wZQ==\n-----END PRIVATE KEY-----\n", "not a readable"),
        (b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n", "certificate rather"),
    ],
)
def test_load_private_key_garbage(data: bytes, match: str) -> None:
    with pytest.raises(pki.PKIError, match=f"^key.pem: .*{match}"):
        pki.load_private_key(data, source="key.pem")


def test_load_private_key_unsupported_type() -> None:
    from cryptography.hazmat.primitives.asymmetric import dsa

    key = dsa.generate_private_key(key_size=2048)
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(pki.PKIError, match="not supported"):
        pki.load_private_key(data)


def test_key_matches_certificate(ca: pki.CA, rsa_key: rsa.RSAPrivateKey) -> None:
    issued = pki.issue_client(ca, "a@example.com")
    assert pki.key_matches_certificate(issued.private_key, issued.certificate)
    assert not pki.key_matches_certificate(ca.private_key, issued.certificate)
    assert not pki.key_matches_certificate(rsa_key, issued.certificate)
    assert pki.key_matches_certificate(ca.private_key, ca.certificate)


def test_load_pkcs12_garbage(tmp_path: Path) -> None:
    with pytest.raises(pki.PKIError, match=r"^x\.p12: cannot open as PKCS#12"):
        pki.load_pkcs12(b"nope", "changeit", source="x.p12")
