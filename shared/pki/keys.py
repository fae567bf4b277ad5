"""Private keys: generating, encoding, loading, and matching them to certificates."""

from __future__ import annotations

from typing import Literal, TypeAlias

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from .errors import PKIError, first_line

KeyType: TypeAlias = Literal["ecdsa", "rsa"]
KEY_TYPES: tuple[KeyType, ...] = ("ecdsa", "rsa")
RSA_KEY_SIZES = (2048, 3072, 4096)
_DER = serialization.Encoding.DER
_SPKI = serialization.PublicFormat.SubjectPublicKeyInfo

# Keys this CA generates and signs with: ECDSA P-256 and RSA are what every TLS stack
# and browser accepts for certificates.
SigningKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
# Keys the loaders accept from elsewhere: an operator's own certificate for a
# service-to-service hop may be Ed25519, which OpenSSL (and so Python's ssl) handles.
PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def generate_private_key(key_type: KeyType = "ecdsa", rsa_bits: int = 2048) -> SigningKey:
    if key_type == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        if rsa_bits not in RSA_KEY_SIZES:
            sizes = ", ".join(str(s) for s in RSA_KEY_SIZES)
            raise PKIError(f"unsupported RSA key size {rsa_bits}; use one of {sizes}")
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    raise PKIError(f"unknown key type {key_type!r}; use 'ecdsa' or 'rsa'")


def signature_hash() -> hashes.SHA256:
    # SHA-256 for both key types: it matches P-256's strength, RSA-2048/3072 gain
    # nothing from a longer hash, and every verifier accepts it.
    return hashes.SHA256()


def private_key_pem(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM, the form mkcert writes and every TLS library reads."""
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def load_private_key(data: bytes, *, source: str = "private key") -> PrivateKey:
    """Parse an unencrypted PEM (PKCS#8, SEC1 "EC PRIVATE KEY", PKCS#1 "RSA PRIVATE KEY")
    or DER private key. `source` names the file in error messages."""
    if b"ENCRYPTED" in data:
        raise _encrypted(source)
    is_pem = b"-----BEGIN" in data
    if is_pem and b"PRIVATE KEY-----" not in data:
        raise PKIError(
            f"{source}: no PEM private key found (expected '-----BEGIN PRIVATE KEY-----'); "
            "is this a certificate rather than its key?"
        )
    try:
        if is_pem:
            key: PrivateKeyTypes = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except TypeError as exc:
        # cryptography signals "needs a password" with TypeError.
        raise _encrypted(source) from exc
    except UnsupportedAlgorithm as exc:
        raise PKIError(f"{source}: unsupported private key algorithm ({exc})") from exc
    except ValueError as exc:
        raise PKIError(
            f"{source}: not a readable private key ({first_line(exc)}); "
            "expected an unencrypted PEM or DER ECDSA, RSA or Ed25519 key"
        ) from exc
    if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        return key
    raise PKIError(
        f"{source}: {type(key).__name__} keys are not supported; use ECDSA, RSA or Ed25519"
    )


def _encrypted(source: str) -> PKIError:
    return PKIError(
        f"{source}: private key is encrypted; write an unencrypted copy with "
        f"`openssl pkey -in {source} -out key.pem` and keep it mode 0600"
    )


def key_matches_certificate(key: PrivateKey, cert: x509.Certificate) -> bool:
    """True when `cert` certifies `key`'s public half (compared as encoded SPKI)."""
    try:
        cert_spki = cert.public_key().public_bytes(_DER, _SPKI)
    except (ValueError, UnsupportedAlgorithm):
        return False
    return cert_spki == key.public_key().public_bytes(_DER, _SPKI)


def describe_public_key(public_key: object) -> str:
    """Short human label such as "ECDSA P-256" or "RSA 2048"."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        curve = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
        return f"ECDSA {curve.get(public_key.curve.name, public_key.curve.name)}"
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"RSA {public_key.key_size}"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    return type(public_key).__name__.removeprefix("_").removesuffix("PublicKey") or "unknown"
