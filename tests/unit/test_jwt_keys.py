"""shared.jwt.keys: loading signing keys, deriving one, and publishing the JWKS."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from joserfc.jwk import ECKey, OKPKey, RSAKey

from shared.jwt import JWTKeyError, SigningKeys, thumbprint

PrivateKey = (
    ec.EllipticCurvePrivateKey
    | rsa.RSAPrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
    | dsa.DSAPrivateKey
)


def pem(
    key: PrivateKey, fmt: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8
) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_B"
    "JECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_F"
    "DW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4"
    "vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)


def test_thumbprint_matches_rfc_7638_section_3_1_example() -> None:
    jwk = {"kty": "RSA", "n": RFC7638_N, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"}
    assert thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_thumbprint_of_an_incomplete_jwk_is_refused() -> None:
    with pytest.raises(JWTKeyError, match="'y'"):
        thumbprint({"kty": "EC", "crv": "P-256", "x": "AA"})


@pytest.mark.parametrize(
    ("fixture", "alg", "cls"),
    [("ec_key", "ES256", ECKey), ("rsa_key", "RS256", RSAKey), ("ed_key", "EdDSA", OKPKey)],
)
def test_public_jwk_and_kid_agree_with_joserfc(
    fixture: str, alg: str, cls: type[ECKey | RSAKey | OKPKey], request: pytest.FixtureRequest
) -> None:
    key_pem = pem(request.getfixturevalue(fixture))
    signer = SigningKeys.from_pem(key_pem).signer
    reference = cls.import_key(key_pem)
    assert signer.alg == alg
    assert signer.kid == reference.thumbprint()
    expected = {**reference.as_dict(private=False), "use": "sig", "alg": alg, "kid": signer.kid}
    assert dict(signer.public_jwk) == expected


def test_every_private_key_format_loads(ec_key: ec.EllipticCurvePrivateKey) -> None:
    traditional = pem(ec_key, serialization.PrivateFormat.TraditionalOpenSSL)
    assert traditional.startswith(b"-----BEGIN EC PRIVATE KEY-----")
    kid = SigningKeys.from_pem(pem(ec_key)).signer.kid
    assert SigningKeys.from_pem(traditional).signer.kid == kid
    # `openssl ecparam -genkey` (without -noout) writes the curve first.
    params = b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
    assert SigningKeys.from_pem(params + traditional).signer.kid == kid


def test_first_key_signs_and_every_key_is_published(
    ec_key: ec.EllipticCurvePrivateKey,
    rsa_key: rsa.RSAPrivateKey,
    ed_key: ed25519.Ed25519PrivateKey,
) -> None:
    keys = SigningKeys.from_pem(pem(rsa_key) + b"\n" + pem(ec_key) + pem(ed_key))
    assert [key.alg for key in keys.keys] == ["RS256", "ES256", "EdDSA"]
    assert keys.signer is keys.keys[0]
    jwks = keys.jwks()
    assert [jwk["kid"] for jwk in jwks["keys"]] == [key.kid for key in keys.keys]
    assert json.loads(keys.jwks_json) == jwks
    for jwk in jwks["keys"]:
        assert jwk["use"] == "sig"
        assert not {"d", "p", "q", "dp", "dq", "qi"} & jwk.keys()


def test_the_same_key_twice_is_refused(ec_key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(JWTKeyError, match="key 2 is the same key as key 1"):
        SigningKeys.from_pem(pem(ec_key) + pem(ec_key, serialization.PrivateFormat.PKCS8))


def test_derive_is_deterministic_per_secret() -> None:
    first = SigningKeys.derive(b"s" * 32)
    again = SigningKeys.derive(b"s" * 32)
    other = SigningKeys.derive(b"t" * 32)
    assert first.signer.alg == "ES256"
    assert first.jwks_json == again.jwks_json
    assert first.signer.kid != other.signer.kid
    assert len(first.keys) == 1


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ec.generate_private_key(ec.SECP384R1()), "key 1: EC curve secp384r1"),
        (
            lambda: rsa.generate_private_key(65537, 1024),  # noqa: S505 (must be refused)
            "key 1: RSA key of 1024 bits is too short",
        ),
        (lambda: ed448.Ed448PrivateKey.generate(), "key 1: Ed448 keys are not supported"),
        (lambda: dsa.generate_private_key(2048), "key 1: DSA keys are not supported"),
    ],
)
def test_unsupported_keys_are_refused_by_name(make: object, message: str) -> None:
    assert callable(make)
    with pytest.raises(JWTKeyError, match=message) as caught:
        SigningKeys.from_pem(pem(make()))
    # Each message says what would work instead.
    assert "P-256" in str(caught.value) or "at least 2048" in str(caught.value)


def test_second_bad_key_is_named(ec_key: ec.EllipticCurvePrivateKey) -> None:
    weak = rsa.generate_private_key(65537, 1024)  # noqa: S505 (refused, which is the point)
    with pytest.raises(JWTKeyError, match=r"^key 2: RSA"):
        SigningKeys.from_pem(pem(ec_key) + pem(weak))


def test_encrypted_key_is_refused(ec_key: ec.EllipticCurvePrivateKey) -> None:
    encrypted = ec_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(JWTKeyError, match="key 1 is encrypted"):
        SigningKeys.from_pem(encrypted)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "holds no PEM private key"),
        (b"not pem at all", "holds no PEM private key"),
        (
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "key 1 is not a readable",
        ),
        (
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "key 1 is a CERTIFICATE",
        ),
    ],
)
def test_garbage_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(JWTKeyError, match=message):
        SigningKeys.from_pem(data)


def test_repr_never_shows_the_private_key(ec_key: ec.EllipticCurvePrivateKey) -> None:
    keys = SigningKeys.from_pem(pem(ec_key))
    assert "private_key" not in repr(keys)
