"""The keys that sign identity assertions, and the JWKS that publishes them.

`signing_key` is a PEM bundle of one or more private keys: the first signs, all are
published, so a key can be rotated in (publish first, sign later) and out without an
upstream ever seeing a `kid` it cannot resolve. With no `signing_key`, every replica
derives the same P-256 key from `shared_secret`, so tokens from any replica verify
against the JWKS served by any other. Pure code: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import (
    dsa,
    ec,
    ed448,
    ed25519,
    padding,
    rsa,
    x448,
    x25519,
)
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MIN_RSA_BITS = 2048
DERIVE_INFO = b"vallum jwt signing key v1"

# Order of the P-256 group (SEC 2 section 2.4.2, also FIPS 186-4 D.1.2.3).
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)
_SUPPORTED = (
    "use an EC P-256 key (ES256), an RSA key of 2048 bits or more (RS256) or Ed25519 (EdDSA)"
)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


class JWTKeyError(ValueError):
    """A signing key that cannot be used; the message names which key and why."""


def b64url(data: bytes) -> str:
    """Unpadded base64url (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _uint(value: int, length: int | None = None) -> str:
    # RFC 7518 sections 6.2.1.2 and 6.3.1.1: EC coordinates are full-length,
    # RSA integers are the shortest big-endian form.
    size = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return b64url(value.to_bytes(size, "big"))


# RFC 7638 section 3.2: the required members of each key type, in lexicographic order.
_REQUIRED_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
    "OKP": ("crv", "kty", "x"),
}


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of a public key."""
    try:
        members = {name: jwk[name] for name in _REQUIRED_MEMBERS[jwk["kty"]]}
    except KeyError as exc:
        raise JWTKeyError(f"JWK lacks a member its thumbprint needs: {exc}") from None
    # Section 3: no whitespace, members sorted, UTF-8.
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One private key with its JWS algorithm and its public JWK (kid = RFC 7638 thumbprint)."""

    alg: str
    kid: str
    public_jwk: Mapping[str, str]
    private_key: PrivateKey = field(repr=False)

    @classmethod
    def from_private_key(cls, key: object, label: str = "key") -> SigningKey:
        alg, members = _public_members(key, label)
        kid = thumbprint(members)
        jwk = {**members, "use": "sig", "alg": alg, "kid": kid}
        assert isinstance(key, PrivateKey)  # _public_members refused everything else
        return cls(alg, kid, MappingProxyType(jwk), key)

    def sign(self, data: bytes) -> bytes:
        """The JWS signature of `data` (RFC 7518 section 3, RFC 8037 section 3.1)."""
        return self.signer()(data)

    def signer(self) -> Callable[[bytes], bytes]:
        """sign() with the key type settled once, for signing many times."""
        key = self.private_key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            ec_sign = key.sign

            def sign_es256(data: bytes) -> bytes:
                # JWS wants r || s at 32 bytes each, not the DER that cryptography
                # returns (RFC 7518 section 3.4).
                r, s = decode_dss_signature(ec_sign(data, _ECDSA_SHA256))
                return r.to_bytes(32, "big") + s.to_bytes(32, "big")

            return sign_es256
        if isinstance(key, rsa.RSAPrivateKey):
            rsa_sign = key.sign
            return lambda data: rsa_sign(data, _PKCS1V15, _SHA256)
        return key.sign


_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_PKCS1V15 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()


def _public_members(key: object, label: str) -> tuple[str, dict[str, str]]:
    """The algorithm and the required public JWK members, or why this key cannot sign."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise JWTKeyError(f"{label}: EC curve {key.curve.name} is not supported ({_SUPPORTED})")
        numbers = key.public_key().public_numbers()
        return "ES256", {
            "kty": "EC",
            "crv": "P-256",
            "x": _uint(numbers.x, 32),
            "y": _uint(numbers.y, 32),
        }
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise JWTKeyError(
                f"{label}: RSA key of {key.key_size} bits is too short (at least {MIN_RSA_BITS})"
            )
        rsa_numbers = key.public_key().public_numbers()
        return "RS256", {"kty": "RSA", "n": _uint(rsa_numbers.n), "e": _uint(rsa_numbers.e)}
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return "EdDSA", {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
    kind = next((name for cls, name in _OTHER_KINDS if isinstance(key, cls)), type(key).__name__)
    raise JWTKeyError(f"{label}: {kind} keys are not supported ({_SUPPORTED})")


_OTHER_KINDS: tuple[tuple[type, str], ...] = (
    (dsa.DSAPrivateKey, "DSA"),
    (ed448.Ed448PrivateKey, "Ed448"),
    (x25519.X25519PrivateKey, "X25519"),
    (x448.X448PrivateKey, "X448"),
)


def _load_block(block: bytes, label: str) -> object:
    try:
        return serialization.load_pem_private_key(block, password=None)
    except TypeError:
        raise JWTKeyError(f"{label} is encrypted; give the key without a passphrase") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "malformed"
        raise JWTKeyError(f"{label} is not a readable private key ({reason})") from None


@dataclass(frozen=True, slots=True)
class SigningKeys:
    """The key that signs (the first) and every key that verifies (all of them)."""

    keys: tuple[SigningKey, ...]
    jwks_json: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.keys:
            raise JWTKeyError("no signing keys")
        kids = [key.kid for key in self.keys]
        for index, kid in enumerate(kids):
            if kid in kids[:index]:
                raise JWTKeyError(
                    f"key {index + 1} is the same key as key {kids.index(kid) + 1}; list each once"
                )
        # Served on every route host for every upstream that verifies: encode once.
        body = json.dumps(self.jwks(), separators=(",", ":")).encode("ascii")
        object.__setattr__(self, "jwks_json", body)

    @property
    def signer(self) -> SigningKey:
        return self.keys[0]

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """RFC 7517 section 5 JWK Set of every public key, signing key first."""
        return {"keys": [dict(key.public_jwk) for key in self.keys]}

    @classmethod
    def from_pem(cls, pem: bytes) -> SigningKeys:
        """Every private key in a PEM bundle, in order; JWTKeyError names the first bad one."""
        blocks: Sequence[re.Match[bytes]] = list(_PEM_BLOCK.finditer(pem))
        keys: list[SigningKey] = []
        for match in blocks:
            kind = match.group(1).decode("ascii")
            # `openssl ecparam -genkey` without -noout writes the curve before the key.
            if kind == "EC PARAMETERS":
                continue
            label = f"key {len(keys) + 1}"
            if not kind.endswith("PRIVATE KEY"):
                raise JWTKeyError(f"{label} is a {kind}, not a private key")
            keys.append(SigningKey.from_private_key(_load_block(match.group(0), label), label))
        if not keys:
            raise JWTKeyError("holds no PEM private key (expected -----BEGIN ... PRIVATE KEY-----)")
        return cls(tuple(keys))

    @classmethod
    def derive(cls, shared_secret: bytes) -> SigningKeys:
        """The P-256 key every replica derives from `shared_secret` (HKDF-SHA256, RFC 5869)."""
        # 128 bits beyond the order's 256 make the modulo bias negligible (FIPS 186-5 A.4.1).
        okm = HKDF(algorithm=hashes.SHA256(), length=48, salt=None, info=DERIVE_INFO).derive(
            shared_secret
        )
        scalar = int.from_bytes(okm, "big") % (_P256_ORDER - 1) + 1
        key = ec.derive_private_key(scalar, ec.SECP256R1())
        return cls((SigningKey.from_private_key(key, "derived key"),))
