"""OpenID Connect Discovery 1.0: the provider's metadata, fetched once and cached.

The document is only trusted if its `issuer` is exactly the configured issuer
(section 4.3): a provider that answers for another issuer could otherwise have its ID
tokens accepted under our issuer's name. Endpoints must be https (or http when the
issuer itself is, i.e. a provider on this machine).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import httpx

from services.authenticate.oidc.calls import DEFAULT_DEADLINE, call
from services.authenticate.oidc.errors import DiscoveryError, IdPError, IdPUnavailable

WELL_KNOWN = "/.well-known/openid-configuration"
DEFAULT_TTL = 3600.0
# After a failed refresh the cached document keeps serving; try again this much later.
RETRY_AFTER = 30.0


def discovery_url(issuer: str) -> str:
    # Section 4: a terminating "/" of the issuer is removed before appending.
    return issuer.rstrip("/") + WELL_KNOWN


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None = None
    end_session_endpoint: str | None = None
    # Discovery section 3 makes this REQUIRED; OIDC Core 3.1.3.7 makes RS256 the default.
    id_token_signing_alg_values_supported: tuple[str, ...] = ("RS256",)
    # Section 3: when omitted, the default is client_secret_basic.
    token_endpoint_auth_methods_supported: tuple[str, ...] = ("client_secret_basic",)
    code_challenge_methods_supported: tuple[str, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), repr=False)

    @classmethod
    def from_document(cls, doc: Mapping[str, Any], issuer: str) -> ProviderMetadata:
        """Validate a discovery document for the configured `issuer`."""
        got = doc.get("issuer")
        if got != issuer:
            raise DiscoveryError(
                "issuer mismatch",
                f"configured {issuer!r}, discovery document says {got!r} "
                "(OIDC Discovery 4.3: they must be identical, including any trailing /)",
            )
        insecure_ok = urlsplit(issuer).scheme == "http"
        return cls(
            issuer=issuer,
            authorization_endpoint=_endpoint(doc, "authorization_endpoint", insecure_ok),
            token_endpoint=_endpoint(doc, "token_endpoint", insecure_ok),
            jwks_uri=_endpoint(doc, "jwks_uri", insecure_ok),
            userinfo_endpoint=_optional_endpoint(doc, "userinfo_endpoint", insecure_ok),
            end_session_endpoint=_optional_endpoint(doc, "end_session_endpoint", insecure_ok),
            id_token_signing_alg_values_supported=_strings(
                doc, "id_token_signing_alg_values_supported", ("RS256",)
            ),
            token_endpoint_auth_methods_supported=_strings(
                doc, "token_endpoint_auth_methods_supported", ("client_secret_basic",)
            ),
            code_challenge_methods_supported=_strings(doc, "code_challenge_methods_supported", ()),
            raw=MappingProxyType(dict(doc)),
        )


def _endpoint(doc: Mapping[str, Any], name: str, insecure_ok: bool) -> str:
    value = doc.get(name)
    if value is None:
        raise DiscoveryError("discovery document incomplete", f"{name} is missing")
    return _check_url(value, name, insecure_ok)


def _optional_endpoint(doc: Mapping[str, Any], name: str, insecure_ok: bool) -> str | None:
    value = doc.get(name)
    return None if value is None else _check_url(value, name, insecure_ok)


def _check_url(value: Any, name: str, insecure_ok: bool) -> str:
    if not isinstance(value, str):
        raise DiscoveryError("discovery document malformed", f"{name} is not a string")
    parts = urlsplit(value)
    allowed = ("https", "http") if insecure_ok else ("https",)
    if parts.scheme not in allowed or not parts.netloc or parts.fragment:
        raise DiscoveryError(
            "discovery document malformed", f"{name} must be an https URL, got {value!r}"
        )
    return value


def _strings(doc: Mapping[str, Any], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = doc.get(name)
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise DiscoveryError("discovery document malformed", f"{name} is not a list of strings")
    return tuple(value)


class Discovery:
    """The provider's metadata, cached for `ttl` seconds.

    A failed refresh keeps serving the cached document (the IdP being briefly down
    should not stop sign-ins whose endpoints have not changed) and is retried
    `retry_after` seconds later; with nothing cached, every call tries again.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        issuer: str,
        *,
        ttl: float = DEFAULT_TTL,
        retry_after: float = RETRY_AFTER,
        deadline: float = DEFAULT_DEADLINE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer
        self._client = client
        self._ttl = ttl
        self._retry_after = retry_after
        self._deadline = deadline
        self._clock = clock
        self._cached: ProviderMetadata | None = None
        self._fetched_at = 0.0
        self._failed_at: float | None = None
        self._lock = asyncio.Lock()

    @property
    def cached(self) -> ProviderMetadata | None:
        return self._cached

    async def metadata(self) -> ProviderMetadata:
        if self._usable():
            assert self._cached is not None
            return self._cached
        async with self._lock:
            # Another task may have refreshed while this one waited for the lock.
            if self._usable():
                assert self._cached is not None
                return self._cached
            try:
                fresh = await self._fetch()
            except IdPError:
                self._failed_at = self._clock()
                if self._cached is not None:
                    return self._cached
                raise
            self._cached, self._fetched_at, self._failed_at = fresh, self._clock(), None
            return fresh

    def _usable(self) -> bool:
        if self._cached is None:
            return False
        now = self._clock()
        if now - self._fetched_at < self._ttl:
            return True
        return self._failed_at is not None and now - self._failed_at < self._retry_after

    async def _fetch(self) -> ProviderMetadata:
        url = discovery_url(self.issuer)
        answer = await call(
            self._client,
            "GET",
            url,
            what="discovery",
            deadline=self._deadline,
            headers={"accept": "application/json"},
        )
        if answer.status >= 500:
            raise IdPUnavailable("discovery failed", f"{url} answered HTTP {answer.status}")
        if not answer.ok:
            raise DiscoveryError("discovery failed", f"{url} answered HTTP {answer.status}")
        return ProviderMetadata.from_document(answer.json_object("discovery"), self.issuer)
