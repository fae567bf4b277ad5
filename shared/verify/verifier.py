"""Verifier: checks `X-Pomerium-JWT-Assertion` in an app, fetching the route's JWKS.

The checking itself is pure (check.py) and so are the caching rules (jwks.py); this
module adds the HTTP fetch (httpx, sync and async), the locks, and the clock.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from shared.verify.check import KeySet, check, expectations, split, unverified_claims
from shared.verify.jwks import JWKSCache, check_url, url_for_issuer
from shared.verify.model import (
    JWKS_UNAVAILABLE,
    MALFORMED,
    MISSING,
    WRONG_ISSUER,
    Identity,
    VerificationError,
)
from shared.verify.replay import ReplayCache

log = logging.getLogger("vallum.verify")

ASSERTION_HEADER = "x-pomerium-jwt-assertion"
# A JWKS holds a handful of keys; refuse anything absurd before parsing it.
MAX_JWKS_BYTES = 256 * 1024


class _FetchError(Exception):
    pass


class Verifier:
    """Verifies Vallum's identity assertions for one app.

    Give the keys either as `jwks_url` (fetched, cached, refreshed) or as a `jwks`
    document (fixed; for tests or air-gapped setups). `issuer` and `audience` are
    required: the route host(s) the app is served on (`iss` is `https://host/` with
    `jwt_issuer_format: uri`). `resolve` maps a JWKS host name to the IP address to
    connect to (TLS still checks the name), like curl's --resolve, for hosts that DNS
    does not know. `ca_file` (a path) or `ca_data` (PEM text) replaces the system's CAs
    for the JWKS fetch.
    """

    def __init__(
        self,
        *,
        jwks_url: str | None = None,
        jwks: Mapping[str, Any] | None = None,
        issuer: str | Sequence[str],
        audience: str | Sequence[str],
        algorithms: Sequence[str] = ("ES256",),
        leeway: float = 30.0,
        ca_file: str | None = None,
        ca_data: str | None = None,
        trust_on_first_use: bool = False,
        replay_cache: ReplayCache | None = None,
        min_refetch_interval: float = 30.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        resolve: Mapping[str, str] | None = None,
    ) -> None:
        self._expect = expectations(issuer, audience, algorithms, leeway)
        sources = (jwks_url is not None) + (jwks is not None)
        if trust_on_first_use and sources:
            raise ValueError("trust_on_first_use derives the JWKS URL: give no jwks_url or jwks")
        if not trust_on_first_use and sources != 1:
            raise ValueError("give exactly one of jwks_url (fetched) or jwks (a JWKS document)")
        self._static = KeySet(jwks) if jwks is not None else None
        self._url = check_url(jwks_url) if jwks_url is not None else None
        self._tofu = trust_on_first_use
        self._replay = replay_cache
        self._clock = clock
        self._timeout = timeout
        self._resolve = dict(resolve or {})
        self._verify_tls: ssl.SSLContext = ssl.create_default_context(
            cafile=ca_file, cadata=ca_data
        )
        self._cache = JWKSCache(min_refetch_interval)
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        # An AsyncClient and an asyncio.Lock belong to one event loop.
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._alock: asyncio.Lock | None = None
        self._aclient: httpx.AsyncClient | None = None

    @property
    def jwks_url(self) -> str | None:
        """Where keys come from (with trust on first use: None until the first token)."""
        return self._url

    @property
    def fetches(self) -> int:
        """How many JWKS fetches were attempted (for metrics and tests)."""
        return self._cache.fetches

    def verify(self, token: str) -> Identity:
        """The Identity in `token`; VerificationError (with a `code`) if it is not valid."""
        kid = self._kid(token)
        return check(token, self._keys(token, kid), self._expect, self._clock(), self._replay)

    async def averify(self, token: str) -> Identity:
        """verify() for async apps: fetching the JWKS does not block the event loop."""
        kid = self._kid(token)
        keys = await self._akeys(token, kid)
        return check(token, keys, self._expect, self._clock(), self._replay)

    def verify_headers(self, headers: Mapping[str, str]) -> Identity:
        """verify() of the `X-Pomerium-JWT-Assertion` header, its name in any case."""
        return self.verify(assertion(headers))

    async def averify_headers(self, headers: Mapping[str, str]) -> Identity:
        return await self.averify(assertion(headers))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        if self._aclient is not None:
            await self._aclient.aclose()
            self._aclient = None
        self.close()

    @staticmethod
    def _kid(token: str) -> str:
        if not token:
            raise VerificationError(MISSING, "no X-Pomerium-JWT-Assertion")
        return split(token)[1]

    def _source(self, token: str) -> str:
        if self._url is not None:
            return self._url
        claims = unverified_claims(token)
        issuer = claims.get("iss")
        if not isinstance(issuer, str) or issuer not in self._expect.issuers:
            raise VerificationError(WRONG_ISSUER, f"iss {issuer!r} is not expected here")
        try:
            url = url_for_issuer(issuer)
        except ValueError as exc:
            raise VerificationError(MALFORMED, str(exc)) from None
        with self._lock:
            if self._url is None:
                log.warning("trust on first use: JWKS pinned to %s (from iss %r)", url, issuer)
                self._url = url
            return self._url

    def _keys(self, token: str, kid: str) -> KeySet:
        if self._static is not None:
            return self._static
        url = self._source(token)
        keys = self._fresh(kid)
        if keys is not None:
            return keys  # the common case: no lock to wait for
        with self._lock:
            now = self._clock()
            if self._cache.should_fetch(now, kid):
                self._cache.attempted(now)
                try:
                    response = self._sync_client().send(self._request(url))
                    self._store(response, url)
                except (httpx.HTTPError, _FetchError) as exc:
                    self._failed(url, exc)
            return self._cached(url)

    async def _akeys(self, token: str, kid: str) -> KeySet:
        if self._static is not None:
            return self._static
        url = self._source(token)
        keys = self._fresh(kid)
        if keys is not None:
            return keys
        client, lock = self._async_parts()
        async with lock:
            now = self._clock()
            if self._cache.should_fetch(now, kid):
                self._cache.attempted(now)
                try:
                    response = await client.send(self._request(url))
                    self._store(response, url)
                except (httpx.HTTPError, _FetchError) as exc:
                    self._failed(url, exc)
            return self._cached(url)

    def _fresh(self, kid: str) -> KeySet | None:
        """The cached keys if they hold `kid` and are fresh, else None: then the caller
        takes the lock, and decides there (fetch, or not yet) on the keys cached then.

        Deciding here with the rate limit could hand out a set read just before another
        thread stored the set that holds `kid` (its fetch also resets the limit).
        """
        keys = self._cache.keys
        if keys is None or not self._cache.holds(keys, self._clock(), kid):
            return None
        return keys

    def _request(self, url: str) -> httpx.Request:
        parts = urlsplit(url)
        address = self._resolve.get(parts.hostname or "")
        if address is None:
            return httpx.Request("GET", url, headers={"Accept": "application/json"})
        host = f"[{address}]" if ":" in address else address
        netloc = f"{host}:{parts.port}" if parts.port else host
        return httpx.Request(
            "GET",
            urlunsplit(parts._replace(netloc=netloc)),
            headers={"Host": parts.netloc, "Accept": "application/json"},
            # The certificate is still checked against the name, not the address.
            extensions={"sni_hostname": parts.hostname},
        )

    def _store(self, response: httpx.Response, url: str) -> None:
        if response.status_code != 200:
            raise _FetchError(f"HTTP {response.status_code}")
        if len(response.content) > MAX_JWKS_BYTES:
            raise _FetchError(f"larger than {MAX_JWKS_BYTES} bytes")
        try:
            keys = KeySet(response.json())
        except ValueError as exc:
            raise _FetchError(f"not a JWKS: {exc}") from None
        self._cache.fetched(keys, self._clock(), response.headers.get("cache-control"))
        log.debug("fetched %d keys from %s", len(keys), url)

    def _failed(self, url: str, exc: Exception) -> None:
        kept = "keeping the cached keys" if self._cache.keys is not None else "no keys cached"
        # An exception is always true: its text, which can be empty (httpx timeouts).
        reason = str(exc) or type(exc).__name__
        log.warning("cannot fetch the JWKS from %s (%s); %s", url, reason, kept)

    def _cached(self, url: str) -> KeySet:
        if self._cache.keys is None:
            raise VerificationError(
                JWKS_UNAVAILABLE,
                f"no keys from {url} yet; retrying at most every "
                f"{self._cache.min_refetch_interval:g}s",
            )
        return self._cache.keys

    def _sync_client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                verify=self._verify_tls, timeout=self._timeout, follow_redirects=False
            )
        return self._client

    def _async_parts(self) -> tuple[httpx.AsyncClient, asyncio.Lock]:
        loop = asyncio.get_running_loop()
        if self._aloop is not loop or self._aclient is None or self._alock is None:
            # A client from another (closed) loop cannot be reused; drop it.
            self._aloop = loop
            self._alock = asyncio.Lock()
            self._aclient = httpx.AsyncClient(
                verify=self._verify_tls, timeout=self._timeout, follow_redirects=False
            )
        return self._aclient, self._alock


def assertion(headers: Mapping[str, str]) -> str:
    """The `X-Pomerium-JWT-Assertion` value, the header's name in any case ("" if absent)."""
    value = headers.get(ASSERTION_HEADER)
    if value is None:
        value = next(
            (v for k, v in headers.items() if k.lower() == ASSERTION_HEADER),
            "",
        )
    return value.strip()
