"""ID tokens of the demo IdP: compact JWS, ES256, with a key made at start.

DEVELOPMENT ONLY. The key lives in memory only, so a restart signs with a new `kid`:
an RP must then fetch the JWKS again, which is what a real IdP's rotation asks of it.
Pure code: no I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from shared.jwt.keys import SigningKey, b64url


class IdTokenSigner:
    """Signs ID tokens (RFC 7515 section 7.1 compact form) and publishes its JWKS."""

    def __init__(self, key: SigningKey | None = None) -> None:
        self.key = key or SigningKey.from_private_key(ec.generate_private_key(ec.SECP256R1()))
        header = {"alg": self.key.alg, "kid": self.key.kid, "typ": "JWT"}
        self._header = b64url(json.dumps(header, separators=(",", ":")).encode("ascii"))

    @property
    def alg(self) -> str:
        return self.key.alg

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [dict(self.key.public_jwk)]}

    def sign(self, claims: Mapping[str, Any]) -> str:
        payload = b64url(json.dumps(claims, separators=(",", ":")).encode("utf-8"))
        signing_input = f"{self._header}.{payload}"
        return f"{signing_input}.{b64url(self.key.sign(signing_input.encode('ascii')))}"


def at_hash(access_token: str) -> str:
    """OIDC Core section 3.1.3.6: left half of the SHA-256 of the token (ES256/RS256)."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return b64url(digest[: len(digest) // 2])
