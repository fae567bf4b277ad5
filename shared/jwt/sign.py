"""Signing the identity assertion: one compact JWS per allowed request (RFC 7515 section 7.1).

This is on the hot path, so everything that does not change per request is encoded
once: the protected header when the signer is built, and the claims of a (session,
route) pair when its ClaimsTemplate is built. Per request only `iat`, `exp` and `jti`
are formatted, spliced in front of the cached claims, base64url-encoded and signed.
"""

from __future__ import annotations

import json
from base64 import urlsafe_b64encode
from collections.abc import Mapping
from json.encoder import encode_basestring_ascii
from types import MappingProxyType
from typing import Any

from shared.jwt.keys import SigningKey, b64url

# Pomerium's assertion lives five minutes; upstreams see a fresh one on every request.
ASSERTION_LIFETIME = 300

# Filled per request; a template holding them would put each member in the JSON twice.
DYNAMIC_CLAIMS = frozenset({"iat", "exp", "jti"})


class ClaimsTemplate:
    """The claims of one (session, route) pair, serialised once for many signatures."""

    __slots__ = ("_tail", "claims")

    def __init__(self, claims: Mapping[str, Any]) -> None:
        clash = DYNAMIC_CLAIMS.intersection(claims)
        if clash:
            raise ValueError(f"claims {sorted(clash)} are set per signature, not in a template")
        self.claims: Mapping[str, Any] = MappingProxyType(dict(claims))
        # ensure_ascii keeps the payload pure ASCII whatever the IdP sent (no lone
        # surrogates to trip the encoder); allow_nan=False because NaN is not JSON.
        body = json.dumps(
            dict(claims), separators=(",", ":"), ensure_ascii=True, allow_nan=False
        ).encode("ascii")
        # `{"a":1}` becomes `,"a":1}` and `{}` becomes `}`, to follow the dynamic members.
        self._tail = b"}" if body == b"{}" else b"," + body[1:]

    @property
    def tail(self) -> bytes:
        return self._tail

    def payload(self, iat: int, jti: str) -> bytes:
        """The JWT claims set as UTF-8 JSON (RFC 7519 section 7.1 step 1)."""
        # encode_basestring_ascii quotes and escapes jti exactly as json.dumps would.
        return b'{"iat":%d,"exp":%d,"jti":%s%s' % (
            iat,
            iat + ASSERTION_LIFETIME,
            encode_basestring_ascii(jti).encode("ascii"),
            self._tail,
        )

    def __repr__(self) -> str:
        return f"ClaimsTemplate({dict(self.claims)!r})"


class AssertionSigner:
    """Signs assertions with one key; the protected header is encoded once, here."""

    __slots__ = ("_prefix", "_sign", "key")

    def __init__(self, key: SigningKey) -> None:
        self.key = key
        self._sign = key.signer()
        header = {"alg": key.alg, "kid": key.kid, "typ": "JWT"}
        encoded = b64url(json.dumps(header, separators=(",", ":")).encode("ascii"))
        self._prefix = encoded.encode("ascii") + b"."

    def template(self, claims: Mapping[str, Any]) -> ClaimsTemplate:
        return ClaimsTemplate(claims)

    def sign(self, template: ClaimsTemplate, now: float, jti: str) -> str:
        """A compact JWS: `iat` is `now` in whole seconds, `exp` five minutes later."""
        signing_input = self._prefix + urlsafe_b64encode(template.payload(int(now), jti)).rstrip(
            b"="
        )
        signature = urlsafe_b64encode(self._sign(signing_input)).rstrip(b"=")
        return (signing_input + b"." + signature).decode("ascii")
