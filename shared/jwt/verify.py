"""Checking an identity assertion against a JWKS: for tests and for Vallum's own callers.

Deliberately strict and small: the token must name a `kid` found in the JWKS, its
`alg` must be the one that key is published for (so neither `none` nor an RSA key
used as an HMAC secret can get through, RFC 8725 section 3.1), and `iss`, `aud`,
`exp` and `iat` are required and checked. Pure code: `now` is an argument.
"""

from __future__ import annotations

import base64
import binascii
import json
import warnings
from collections.abc import Mapping
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import ECKey, OKPKey, RSAKey

# The algorithm each key type signs with here; anything else in a header is refused.
_ALG_FOR_KTY = {"EC": "ES256", "RSA": "RS256", "OKP": "EdDSA"}
_KEY_CLASSES: dict[str, type[ECKey] | type[RSAKey] | type[OKPKey]] = {
    "EC": ECKey,
    "RSA": RSAKey,
    "OKP": OKPKey,
}
# A header of a few members: refuse anything big before decoding it.
_MAX_HEADER = 1024


class JWTVerifyError(ValueError):
    """Why a token was refused, in words fit for a log."""


def _header(token: str) -> dict[str, Any]:
    encoded = token.split(".", 1)[0]
    if token.count(".") != 2 or len(encoded) > _MAX_HEADER:
        raise JWTVerifyError("not a compact JWS (header.payload.signature)")
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        header = json.loads(raw)
    except (binascii.Error, ValueError):
        raise JWTVerifyError("header is not base64url JSON") from None
    if not isinstance(header, dict):
        raise JWTVerifyError("header is not a JSON object")
    return header


def _find_key(header: Mapping[str, Any], jwks: Mapping[str, Any]) -> Mapping[str, Any]:
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise JWTVerifyError("header has no kid")
    keys = jwks.get("keys")
    for jwk in keys if isinstance(keys, list) else ():
        if isinstance(jwk, Mapping) and jwk.get("kid") == kid:
            return jwk
    raise JWTVerifyError(f"no key with kid {kid!r} in the JWKS")


def verify(
    token: str,
    jwks: Mapping[str, Any],
    *,
    audience: str,
    issuer: str,
    now: float,
    leeway: float = 0,
) -> dict[str, Any]:
    """The claims of `token` if it is valid for `audience` and `issuer` at `now`."""
    header = _header(token)
    jwk = _find_key(header, jwks)
    kty = jwk.get("kty")
    alg = _ALG_FOR_KTY.get(kty) if isinstance(kty, str) else None
    if alg is None or not isinstance(kty, str):
        raise JWTVerifyError(f"key {jwk.get('kid')!r} has unsupported kty {kty!r}")
    if header.get("alg") != alg or jwk.get("alg", alg) != alg:
        raise JWTVerifyError(f"alg {header.get('alg')!r} does not match the key ({alg})")
    try:
        key = _KEY_CLASSES[kty].import_key(dict(jwk))
        with warnings.catch_warnings():
            # joserfc flags EdDSA as superseded by "Ed25519" (RFC 9864); Pomerium-style
            # verifiers still expect "EdDSA", and it names the same signature.
            warnings.simplefilter("ignore", SecurityWarning)
            token_obj = jwt.decode(token, key, algorithms=[alg])
        registry = jwt.JWTClaimsRegistry(
            now=int(now),
            leeway=int(leeway),
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            exp={"essential": True},
            iat={"essential": True},
        )
        registry.validate(token_obj.claims)
    except JoseError as exc:
        raise JWTVerifyError(f"{type(exc).__name__}: {exc}") from None
    except ValueError as exc:
        raise JWTVerifyError(f"malformed token: {exc}") from None
    return dict(token_obj.claims)
