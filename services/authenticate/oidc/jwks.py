"""The provider's signing keys (its JWKS), cached, with key rotation handled.

An ID token naming a `kid` we do not hold usually means the provider rotated its keys,
so the JWKS is fetched again, once, and the lookup retried. Refetches are rate-limited
(`min_refetch_interval`): otherwise anyone could make us hammer the IdP by sending
tokens with made-up `kid`s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from services.authenticate.oidc.calls import DEFAULT_DEADLINE, call
from services.authenticate.oidc.discovery import Discovery
from services.authenticate.oidc.errors import IdPError, IdPUnavailable, IdTokenError

# The asymmetric JWS algorithms an ID token may use (RFC 7518 section 3.1, RFC 8037,
# RFC 9864), with the key type and curves each needs. HS* is absent on purpose: with
# a published key as the "secret" anyone could sign (RFC 8725 section 2.1).
ALG_KEYS: Mapping[str, tuple[str, frozenset[str] | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
    "Ed25519": ("OKP", frozenset({"Ed25519"})),
}

DEFAULT_TTL = 3600.0
MIN_REFETCH_INTERVAL = 30.0

JWK = Mapping[str, Any]


def fits(jwk: JWK, alg: str) -> bool:
    """Whether `jwk` may verify a signature made with `alg`."""
    kty, curves = ALG_KEYS.get(alg, ("", None))
    if jwk.get("kty") != kty or jwk.get("alg", alg) != alg:
        return False
    return curves is None or jwk.get("crv") in curves


def _for_signatures(jwk: JWK) -> bool:
    # RFC 7517 sections 4.2 and 4.3: an encryption key must not verify signatures.
    ops = jwk.get("key_ops")
    return jwk.get("use", "sig") == "sig" and (ops is None or "verify" in ops)


def select(keys: Sequence[JWK], kid: str | None, alg: str) -> JWK | None:
    """The key for a token header, None when there is none (yet).

    IdTokenError when a key with that kid exists but is of the wrong type for `alg`:
    refetching would not help, and it is not a rotation.
    """
    usable = [jwk for jwk in keys if _for_signatures(jwk)]
    if kid is None:
        # OIDC Core section 10.1: kid may be omitted only when the choice is unambiguous.
        fitting = [jwk for jwk in usable if fits(jwk, alg)]
        return fitting[0] if len(fitting) == 1 else None
    for jwk in usable:
        if jwk.get("kid") == kid:
            if not fits(jwk, alg):
                raise IdTokenError(
                    "key does not match alg",
                    f"key {kid!r} is {jwk.get('kty')} {jwk.get('crv', '')}".rstrip()
                    + f", token says {alg}",
                )
            return jwk
    return None


class JWKSCache:
    def __init__(
        self,
        client: httpx.AsyncClient,
        discovery: Discovery,
        *,
        ttl: float = DEFAULT_TTL,
        min_refetch_interval: float = MIN_REFETCH_INTERVAL,
        deadline: float = DEFAULT_DEADLINE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._discovery = discovery
        self._ttl = ttl
        self._min_interval = min_refetch_interval
        self._deadline = deadline
        self._clock = clock
        self._keys: tuple[JWK, ...] | None = None
        self._fetched_at = 0.0
        # Any attempt, failed or not, counts against the rate limit.
        self._attempted_at: float | None = None
        self._generation = 0
        self._lock = asyncio.Lock()

    async def key_for(self, kid: str | None, alg: str) -> JWK:
        """The JWK that verifies a token with this header, refetching once on a miss."""
        keys, generation = await self._current()
        found = select(keys, kid, alg)
        if found is None and self._may_refetch():
            keys = await self._refetch(generation)
            found = select(keys, kid, alg)
        if found is None:
            which = f"kid {kid!r}" if kid is not None else "no kid, and no single key fits"
            raise IdTokenError("unknown key", f"{which} for {alg} in the provider's JWKS")
        return found

    def _may_refetch(self) -> bool:
        return (
            self._attempted_at is None or self._clock() - self._attempted_at >= self._min_interval
        )

    async def _current(self) -> tuple[tuple[JWK, ...], int]:
        if self._keys is not None and not self._stale():
            return self._keys, self._generation
        async with self._lock:
            if self._keys is None or self._stale():
                try:
                    await self._fetch()
                except IdPError:
                    if self._keys is None:
                        raise
                    # A stale key set still verifies tokens signed before the outage.
            assert self._keys is not None
            return self._keys, self._generation

    def _stale(self) -> bool:
        # Past its TTL, a key set is refreshed, but no more often than the rate limit
        # allows while the JWKS endpoint keeps failing.
        return self._clock() - self._fetched_at >= self._ttl and self._may_refetch()

    async def _refetch(self, seen: int) -> tuple[JWK, ...]:
        async with self._lock:
            # Tokens with the new kid arrive together: the first task fetches, the
            # others use what it got.
            if self._generation == seen and self._may_refetch():
                await self._fetch()
            assert self._keys is not None
            return self._keys

    async def _fetch(self) -> None:
        self._attempted_at = self._clock()
        metadata = await self._discovery.metadata()
        answer = await call(
            self._client,
            "GET",
            metadata.jwks_uri,
            what="JWKS",
            deadline=self._deadline,
            headers={"accept": "application/json"},
        )
        if answer.status >= 500:
            raise IdPUnavailable("JWKS fetch failed", f"HTTP {answer.status}")
        if not answer.ok:
            raise IdPError("JWKS fetch failed", f"HTTP {answer.status}", status=answer.status)
        keys = answer.json_object("JWKS").get("keys")
        if not isinstance(keys, list):
            raise IdPError("JWKS malformed", "no keys list")
        self._keys = tuple(jwk for jwk in keys if isinstance(jwk, dict))
        self._fetched_at = self._clock()
        self._generation += 1
