"""Checking one assertion against a key set: signature first, then the claims.

Pure code: the key set and the time are arguments. The order matters: nothing the
token says is believed (or even reported) before its signature checks out, and the
replay cache is only written for an otherwise valid token, so forged ones cannot
fill it.

The rules follow RFC 8725 (JWT best current practices): the algorithm comes from an
allow-list the app chose, never from the token alone (section 3.1), and it must be
the one the key is for, so a public key can never double as an HMAC secret
("algorithm confusion", section 2.1); issuer and audience are always checked
(sections 3.8, 3.9).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from joserfc import jws
from joserfc.errors import BadSignatureError, JoseError, SecurityWarning
from joserfc.jwk import ECKey, OKPKey, RSAKey

from shared.verify.model import (
    ALGORITHM_NOT_ALLOWED,
    BAD_SIGNATURE,
    EXPIRED,
    MALFORMED,
    NOT_YET_VALID,
    REPLAYED,
    UNKNOWN_KEY,
    WRONG_AUDIENCE,
    WRONG_ISSUER,
    Identity,
    VerificationError,
)
from shared.verify.replay import ReplayCache

# The algorithms Vallum signs with (shared/jwt/keys.py) and the key type and curve
# each needs. HMAC is deliberately absent: a JWKS of public keys cannot verify it.
KEY_TYPES: Mapping[str, tuple[str, str | None]] = MappingProxyType(
    {"ES256": ("EC", "P-256"), "RS256": ("RSA", None), "EdDSA": ("OKP", "Ed25519")}
)
# Assertions are a few hundred bytes; refuse megabytes before decoding anything.
MAX_TOKEN = 16 * 1024

PublicKey = ECKey | RSAKey | OKPKey
_KEY_CLASSES: Mapping[str, type[ECKey] | type[RSAKey] | type[OKPKey]] = MappingProxyType(
    {"EC": ECKey, "RSA": RSAKey, "OKP": OKPKey}
)
_PUBLIC_MEMBERS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"EC": ("kty", "crv", "x", "y"), "RSA": ("kty", "n", "e"), "OKP": ("kty", "crv", "x")}
)


@dataclass(frozen=True, slots=True)
class Expectations:
    """What the app requires of every token (the Verifier's settings, minus I/O)."""

    issuers: frozenset[str]
    audiences: frozenset[str]
    algorithms: frozenset[str]
    leeway: float = 30.0


def _b64json(part: str, what: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):
        # RecursionError: a header of nested arrays, e.g. 11 kB of "[" (still under
        # MAX_TOKEN), must be a malformed token, not an unhandled exception.
        raise VerificationError(MALFORMED, f"the {what} is not base64url JSON") from None
    if not isinstance(value, dict):
        raise VerificationError(MALFORMED, f"the {what} is not a JSON object")
    return value


def split(token: str) -> tuple[dict[str, Any], str]:
    """The protected header and the `kid` of a compact JWS, still unverified."""
    if len(token) > MAX_TOKEN:
        raise VerificationError(MALFORMED, f"longer than {MAX_TOKEN} characters")
    if token.count(".") != 2:
        raise VerificationError(MALFORMED, "not a compact JWS (header.payload.signature)")
    header = _b64json(token.split(".", 1)[0], "header")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise VerificationError(MALFORMED, "the header has no kid")
    return header, kid


def unverified_claims(token: str) -> dict[str, Any]:
    """The claims as the token states them, NOT verified: only for choosing where to
    fetch keys from (trust on first use), never for trusting anything."""
    split(token)
    return _b64json(token.split(".")[1], "payload")


class KeySet:
    """A JWKS document (RFC 7517 section 5), indexed by `kid` once."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        keys = document.get("keys") if isinstance(document, Mapping) else None
        if not isinstance(keys, list):
            raise ValueError("a JWKS is a JSON object with a `keys` list")
        self._jwks: dict[str, Mapping[str, Any]] = {}
        self._imported: dict[str, PublicKey] = {}
        for jwk in keys:
            # Keys this verifier cannot use are skipped, not fatal: a JWKS may publish
            # other keys for other consumers.
            if isinstance(jwk, Mapping) and isinstance(jwk.get("kid"), str):
                self._jwks.setdefault(jwk["kid"], jwk)

    def __contains__(self, kid: object) -> bool:
        return kid in self._jwks

    def __len__(self) -> int:
        return len(self._jwks)

    def key(self, kid: str, alg: str) -> PublicKey:
        """The key for `kid`, if it is a key for `alg`; VerificationError otherwise."""
        jwk = self._jwks.get(kid)
        if jwk is None:
            raise VerificationError(UNKNOWN_KEY, f"no key with kid {kid!r} in the JWKS")
        kty, crv = KEY_TYPES[alg]
        if jwk.get("kty") != kty or jwk.get("crv") != crv or jwk.get("alg", alg) != alg:
            raise VerificationError(
                ALGORITHM_NOT_ALLOWED, f"key {kid!r} is not a key for {alg} ({kty})"
            )
        if jwk.get("use", "sig") != "sig":
            raise VerificationError(ALGORITHM_NOT_ALLOWED, f"key {kid!r} is not for signatures")
        imported = self._imported.get(kid)
        if imported is None:
            # Only the public members: a JWKS that leaks a private key ("d") must not
            # turn this verifier into something that could sign.
            members = {name: jwk[name] for name in _PUBLIC_MEMBERS[kty] if name in jwk}
            try:
                imported = _KEY_CLASSES[kty].import_key(dict(members))
            except (JoseError, ValueError, TypeError) as exc:
                raise VerificationError(UNKNOWN_KEY, f"key {kid!r} is unusable: {exc}") from None
            self._imported[kid] = imported
        return imported


def _number(claims: Mapping[str, Any], name: str, required: bool) -> float | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise VerificationError(MALFORMED, f"`{name}` must be a NumericDate (RFC 7519 section 2)")
    return float(value)


def _string(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name, "")
    if not isinstance(value, str):
        raise VerificationError(MALFORMED, f"`{name}` must be a string")
    return value


def _strings(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise VerificationError(MALFORMED, f"`{name}` must be a string or a list of strings")


def _time(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def check(
    token: str,
    keys: KeySet,
    expect: Expectations,
    now: float,
    replay_cache: ReplayCache | None = None,
) -> Identity:
    """The Identity in `token`, or VerificationError saying why it must be refused."""
    header, kid = split(token)
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in expect.algorithms:
        raise VerificationError(
            ALGORITHM_NOT_ALLOWED, f"alg {alg!r} is not one of {sorted(expect.algorithms)}"
        )
    if header.get("crit") is not None:
        # RFC 7515 section 4.1.11: extensions we do not understand must be refused.
        raise VerificationError(MALFORMED, "the header names critical extensions")
    key = keys.key(kid, alg)
    try:
        with warnings.catch_warnings():
            # joserfc flags "EdDSA" as superseded (RFC 9864); Vallum signs with it.
            warnings.simplefilter("ignore", SecurityWarning)
            signed = jws.deserialize_compact(token, key, algorithms=[alg])
    except BadSignatureError:
        raise VerificationError(
            BAD_SIGNATURE, f"the signature does not verify with {kid!r}"
        ) from None
    except (JoseError, ValueError) as exc:
        raise VerificationError(MALFORMED, f"{type(exc).__name__}: {exc}") from None
    try:
        claims = json.loads(signed.payload)
    except ValueError:
        raise VerificationError(MALFORMED, "the payload is not JSON") from None
    if not isinstance(claims, dict):
        raise VerificationError(MALFORMED, "the payload is not a JSON object")
    return _claims(claims, expect, now, replay_cache)


def _claims(
    claims: dict[str, Any], expect: Expectations, now: float, replay_cache: ReplayCache | None
) -> Identity:
    exp = _number(claims, "exp", required=True)
    iat = _number(claims, "iat", required=True)
    nbf = _number(claims, "nbf", required=False)
    assert exp is not None and iat is not None
    # RFC 7519 section 4.1.4: not accepted "on or after" exp.
    if now >= exp + expect.leeway:
        raise VerificationError(EXPIRED, f"expired at {_time(exp).isoformat()}")
    starts = max(iat, nbf) if nbf is not None else iat
    if now < starts - expect.leeway:
        raise VerificationError(NOT_YET_VALID, f"valid from {_time(starts).isoformat()}")
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or issuer not in expect.issuers:
        raise VerificationError(WRONG_ISSUER, f"iss {issuer!r} is not expected here")
    audience = _strings(claims.get("aud"), "aud") if "aud" in claims else ()
    if not expect.audiences.intersection(audience):
        raise VerificationError(WRONG_AUDIENCE, f"aud {list(audience)!r} is not this app")
    jti = _string(claims, "jti")
    # Every claim is read before the replay cache is written: a token refused as
    # malformed must not use up its jti.
    identity = Identity(
        user=_string(claims, "user") or _string(claims, "sub"),
        email=_string(claims, "email"),
        groups=_strings(claims.get("groups", []), "groups"),
        name=_string(claims, "name"),
        session_id=_string(claims, "sid"),
        issuer=issuer,
        audience=audience,
        issued_at=_time(iat),
        expires_at=_time(exp),
        jwt_id=jti,
        claims=MappingProxyType(claims),
    )
    if replay_cache is not None:
        if not jti:
            raise VerificationError(MALFORMED, "no jti, so a replay cannot be detected")
        if replay_cache.seen(jti, exp + expect.leeway):
            raise VerificationError(REPLAYED, f"jti {jti!r} was already used")
    return identity


def expectations(
    issuer: str | Sequence[str] | None,
    audience: str | Sequence[str] | None,
    algorithms: Sequence[str],
    leeway: float,
) -> Expectations:
    """Validated Verifier settings; ValueError says what is wrong with them."""
    issuers = _required(issuer, "issuer")
    audiences = _required(audience, "audience")
    if isinstance(algorithms, str):
        algorithms = (algorithms,)
    algs = frozenset(algorithms)
    unknown = algs - KEY_TYPES.keys()
    if not algs or unknown:
        raise ValueError(
            f"algorithms {sorted(unknown)} are not allowed: choose from {sorted(KEY_TYPES)}"
            " (Vallum signs with asymmetric keys; HMAC and `none` are never accepted)"
        )
    if not math.isfinite(leeway) or leeway < 0:
        raise ValueError("leeway must be a number of seconds, 0 or more")
    return Expectations(issuers, audiences, algs, leeway)


def _required(value: str | Sequence[str] | None, name: str) -> frozenset[str]:
    values = (value,) if isinstance(value, str) else tuple(value or ())
    if not values or not all(isinstance(v, str) and v for v in values):
        raise ValueError(
            f"{name} is required: the route host(s) this app is served on, e.g. "
            f"{name}='app.example.com'. Without it a token Vallum signed for another app "
            "would be accepted here."
        )
    return frozenset(values)
