"""ID token validation, OIDC Core section 3.1.3.7.

Only asymmetric algorithms the provider advertises are accepted, and the key must be
of the type that algorithm needs: so neither `alg: none` nor an HS256 token signed
with a published RSA key as its "secret" gets through (RFC 8725 sections 2.1, 3.1).
The claims are checked here rather than by joserfc so that each refusal has its own
reason for the log and for tests.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import warnings
from collections.abc import Collection, Mapping
from typing import Any

from joserfc import jws
from joserfc.errors import BadSignatureError, JoseError, SecurityWarning
from joserfc.jwk import JWKRegistry

from services.authenticate.oidc.errors import IdTokenError
from services.authenticate.oidc.jwks import ALG_KEYS, JWKSCache

DEFAULT_LEEWAY = 60.0
# An ID token is a few KiB even with many groups; refuse anything absurd before parsing.
MAX_TOKEN_LENGTH = 64 * 1024


def _segment(text: str, what: str) -> Any:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return json.loads(raw)
    except (binascii.Error, ValueError):
        raise IdTokenError("malformed", f"{what} is not base64url JSON") from None


def read_header(raw: str) -> dict[str, Any]:
    if len(raw) > MAX_TOKEN_LENGTH:
        raise IdTokenError("malformed", f"longer than {MAX_TOKEN_LENGTH} characters")
    parts = raw.split(".")
    if len(parts) == 5:
        raise IdTokenError("malformed", "encrypted ID tokens are not supported")
    if len(parts) != 3:
        raise IdTokenError("malformed", "not a compact JWS (header.payload.signature)")
    header = _segment(parts[0], "header")
    if not isinstance(header, dict):
        raise IdTokenError("malformed", "header is not a JSON object")
    return header


def check_alg(header: Mapping[str, Any], allowed: Collection[str]) -> str:
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise IdTokenError("malformed", "header has no alg")
    if alg.lower() == "none":
        raise IdTokenError("alg none refused", "unsigned tokens are never accepted")
    if alg not in ALG_KEYS:
        raise IdTokenError(
            "alg not allowed", f"{alg} is not an asymmetric signature algorithm Vallum accepts"
        )
    if alg not in allowed:
        raise IdTokenError(
            "alg not allowed", f"{alg}; the provider advertises {', '.join(allowed) or 'none'}"
        )
    if "crit" in header:
        # RFC 7515 section 4.1.11: extensions we do not understand mean refusal.
        raise IdTokenError("malformed", "crit header parameters are not supported")
    return alg


def _verify_signature(raw: str, jwk: Mapping[str, Any], alg: str) -> dict[str, Any]:
    try:
        key = JWKRegistry.import_key(dict(jwk))
    except (JoseError, ValueError, TypeError) as exc:
        raise IdTokenError("unusable key", f"{type(exc).__name__}: {exc}") from None
    try:
        with warnings.catch_warnings():
            # joserfc flags EdDSA as superseded by Ed25519 (RFC 9864); both are fine here.
            warnings.simplefilter("ignore", SecurityWarning)
            compact = jws.deserialize_compact(raw, key, algorithms=[alg])
    except BadSignatureError:
        raise IdTokenError("bad signature") from None
    except (JoseError, ValueError) as exc:
        raise IdTokenError("malformed", f"{type(exc).__name__}: {exc}") from None
    try:
        claims = json.loads(compact.payload)
    except ValueError:
        raise IdTokenError("malformed", "payload is not JSON") from None
    if not isinstance(claims, dict):
        raise IdTokenError("malformed", "payload is not a JSON object")
    return claims


def _number(claims: Mapping[str, Any], name: str, required: bool) -> float | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise IdTokenError("malformed", f"{name} is missing or not a number")
    return float(value)


def check_claims(
    claims: Mapping[str, Any],
    *,
    issuer: str,
    client_id: str,
    nonce: str | None,
    now: float,
    leeway: float = DEFAULT_LEEWAY,
) -> None:
    """Section 3.1.3.7 steps 2-4 and 9-11. `nonce` None: a refreshed ID token
    (section 12.2), which need not carry one."""
    if claims.get("iss") != issuer:
        raise IdTokenError("wrong issuer", f"{claims.get('iss')!r}, expected {issuer!r}")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or client_id not in audiences:
        raise IdTokenError("wrong audience", f"{aud!r} does not name {client_id!r}")
    azp = claims.get("azp")
    if azp is None and len(audiences) > 1:
        raise IdTokenError("azp missing", "several audiences, but no authorized party")
    if azp is not None and azp != client_id:
        raise IdTokenError("azp mismatch", f"{azp!r}, expected {client_id!r}")
    exp = _number(claims, "exp", required=True)
    iat = _number(claims, "iat", required=True)
    nbf = _number(claims, "nbf", required=False)
    assert exp is not None and iat is not None
    if now > exp + leeway:
        raise IdTokenError("expired", f"{int(now - exp)}s ago")
    if iat > now + leeway:
        raise IdTokenError("issued in the future", f"iat is {int(iat - now)}s ahead")
    if nbf is not None and nbf > now + leeway:
        raise IdTokenError("not yet valid", f"nbf is {int(nbf - now)}s ahead")
    if nonce is not None:
        got = claims.get("nonce")
        if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
            raise IdTokenError("wrong nonce", "the token was not issued for this sign-in")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise IdTokenError("malformed", "no sub")


async def verify_id_token(
    raw: str,
    *,
    issuer: str,
    client_id: str,
    allowed_algs: Collection[str],
    jwks: JWKSCache,
    nonce: str | None,
    now: float,
    leeway: float = DEFAULT_LEEWAY,
) -> dict[str, Any]:
    """The claims of a valid ID token, or IdTokenError with the reason."""
    header = read_header(raw)
    alg = check_alg(header, allowed_algs)
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise IdTokenError("malformed", "kid is not a string")
    jwk = await jwks.key_for(kid, alg)
    claims = _verify_signature(raw, jwk, alg)
    check_claims(claims, issuer=issuer, client_id=client_id, nonce=nonce, now=now, leeway=leeway)
    return claims
