"""Hosts and ports on both sides of a match: a route's `from` URL and a request's Host.

A route accepts a fixed set of Host spellings, decided once at compile time, the way
Pomerium's `urlutil.GetDomainsForURL` lists Envoy domains: `https://app.example.com`
(or `...:443`) accepts `app.example.com` and `app.example.com:443`; `http://` the same
with 80; any other explicit port accepts only `host:port`. The default port is always
the one of the `from` URL's scheme, never the request's: behind a TLS-terminating load
balancer (`insecure_server`) requests arrive as plain HTTP for `https://` routes.

Ports are compared as text, as Envoy compares domains: `app.example.com:0443` and
`app.example.com:` match nothing. A trailing dot makes a different name
(`app.example.com.` is not `app.example.com`; Envoy does not strip it either), and
IPv6 literals are compared in their RFC 5952 form, which browsers send.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

DEFAULT_PORTS: Final = {"https": 443, "http": 80}
TCP_SCHEME: Final = "tcp+https"
_SCHEMES: Final = (*DEFAULT_PORTS, TCP_SCHEME)
WILDCARD: Final = "*."


@dataclass(frozen=True, slots=True)
class FromAuthority:
    """The host part of one route's `from` URL, ready to compare against a Host header."""

    scheme: str
    # Lower case; IPv6 literals bracketed; a wildcard keeps its leading "*.".
    host: str
    # Accepted port suffixes: ":443", or "" for a Host header that carries no port.
    ports: frozenset[str]

    @property
    def is_wildcard(self) -> bool:
        return self.host.startswith(WILDCARD)

    @property
    def suffix(self) -> str:
        """What a wildcard's matching names end with: `*.example.com` → `.example.com`."""
        return self.host[1:]

    @property
    def name(self) -> str:
        """The host as a certificate names it: no brackets around an IPv6 address."""
        return self.host.strip("[]")

    def host_values(self) -> tuple[str, ...]:
        """Every Host header value this route accepts (exact routes only)."""
        return tuple(self.host + port for port in sorted(self.ports))


def _canonical_host(hostname: str) -> str:
    try:
        address = ipaddress.ip_address(hostname)
    except ValueError:
        return hostname
    return f"[{address.compressed}]" if address.version == 6 else address.compressed


def parse_from(url: str) -> FromAuthority:
    """Raises ValueError for a URL the config loader would have refused."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ValueError(f"from must be an http, https or tcp+https URL, got {url!r}")
    # urlsplit lower-cases the hostname and drops IPv6 brackets.
    hostname = parts.hostname
    if not hostname:
        raise ValueError(f"from must name a host, got {url!r}")
    port = parts.port  # ValueError for a port out of range or not a number
    host = _canonical_host(hostname)
    if scheme == TCP_SCHEME:
        if port is None:
            raise ValueError(f"a tcp+https from needs a port, got {url!r}")
        return FromAuthority(scheme, host, frozenset({f":{port}"}))
    default = DEFAULT_PORTS[scheme]
    if port is None or port == default:
        ports = frozenset({"", f":{default}"})
    else:
        ports = frozenset({f":{port}"})
    return FromAuthority(scheme, host, ports)


def split_host(host: str) -> tuple[str, str]:
    """`name[:port]` → (name, ":port" or ""). The port is not checked: an odd one simply
    matches no route's accepted set. Splitting at the first colon outside brackets
    keeps a malformed `x:1.example.com` from passing as a name in `*.example.com`."""
    start = host.find("]") + 1 if host.startswith("[") else 0
    colon = host.find(":", start)
    if colon == -1:
        return host, ""
    return host[:colon], host[colon:]
