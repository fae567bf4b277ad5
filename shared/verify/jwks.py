"""Where the JWKS comes from and how long it is believed: the rules, without the I/O.

- Only HTTPS, so the keys cannot be swapped on the way; plain HTTP only to loopback,
  for tests.
- Cached for the response's `Cache-Control: max-age` (RFC 9111 section 5.2.2.1),
  5 minutes without one, never more than a day, so a rotated-out key is forgotten.
- Fetched again early only for a `kid` not in the cache (a key rotated in), and then
  no more often than `min_refetch_interval`, so a flood of tokens with made-up kids
  cannot make the app hammer the JWKS endpoint. The same limit spaces out retries
  while the endpoint is down.
- A failed fetch keeps the cached keys in use (a JWKS outage must not lock every user
  out); with nothing cached the answer is "jwks-unavailable".

Pure code: times are arguments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.verify.check import KeySet

DEFAULT_MAX_AGE = 300.0
MAX_MAX_AGE = 86_400.0
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
WELL_KNOWN = "/.well-known/pomerium/jwks.json"

_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(?:no-store|no-cache)\s*(?:[,=]|$)", re.IGNORECASE)


def check_url(url: str) -> str:
    """`url` if keys may be fetched from it; ValueError otherwise."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname in LOOPBACK:
        return url
    raise ValueError(
        f"jwks_url {url!r}: the JWKS must come over https:// (plain http only from "
        "127.0.0.1 or localhost, for tests), or anyone on the path could swap the keys"
    )


def url_for_issuer(issuer: str) -> str:
    """The JWKS URL of a Vallum (or Pomerium) issuer: `host` or `https://host[:port]/`."""
    if issuer.startswith("https://"):
        parts = urlsplit(issuer)
        return check_url(f"https://{parts.netloc}{WELL_KNOWN}")
    if not issuer or "/" in issuer or "@" in issuer or issuer.startswith("http:"):
        raise ValueError(f"issuer {issuer!r} names no host to fetch a JWKS from")
    return check_url(f"https://{issuer}{WELL_KNOWN}")


def max_age(cache_control: str | None) -> float:
    """How long a JWKS response may be used, in seconds."""
    if cache_control is None:
        return DEFAULT_MAX_AGE
    if _NO_CACHE.search(cache_control):
        return 0.0
    match = _MAX_AGE.search(cache_control)
    if match is None:
        return DEFAULT_MAX_AGE
    return min(float(match.group(1)), MAX_MAX_AGE)


@dataclass
class JWKSCache:
    """The keys last fetched and when fetches happened; the Verifier does the fetching."""

    min_refetch_interval: float
    keys: KeySet | None = None
    fresh_until: float = 0.0
    last_attempt: float | None = None
    fetches: int = 0

    def _may_fetch(self, now: float) -> bool:
        return self.last_attempt is None or now - self.last_attempt >= self.min_refetch_interval

    def should_fetch(self, now: float, kid: str) -> bool:
        """Whether to fetch before checking a token with `kid`."""
        if self.keys is None:
            return self._may_fetch(now)
        if self.holds(self.keys, now, kid):
            return False
        return self._may_fetch(now)

    def holds(self, keys: KeySet, now: float, kid: str) -> bool:
        """Whether `keys` (read from this cache) may be used for `kid` without a fetch."""
        return now < self.fresh_until and kid in keys

    def attempted(self, now: float) -> None:
        self.last_attempt = now
        self.fetches += 1

    def fetched(self, keys: KeySet, now: float, cache_control: str | None) -> None:
        self.keys = keys
        self.fresh_until = now + max_age(cache_control)
