"""Which route a request belongs to, compiled once per config.

Per request: one dict lookup for the exact host, then one per parent domain of the
name for wildcard routes, each candidate list in config order and cut off at the best
index found so far. No regex is compiled and nothing but the lower-cased host and its
slices is allocated; the `Match` returned is built at compile time.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from shared.config.model import Route
from shared.routing.authority import TCP_SCHEME, FromAuthority, parse_from, split_host
from shared.routing.rewrite import check_rewrites

_ANY: Final = 0
_PREFIX: Final = 1
_PATH: Final = 2
_REGEX: Final = 3


@dataclass(frozen=True, slots=True)
class Match:
    """The route a request belongs to; `index` is its position in `Config.routes`."""

    index: int
    route: Route


@dataclass(frozen=True, slots=True)
class _Entry:
    match: Match
    index: int
    kind: int
    text: str
    pattern: re.Pattern[str] | None
    # Checked for wildcard routes only; an exact route's ports are its dict keys.
    ports: frozenset[str]

    def accepts(self, path: str) -> bool:
        kind = self.kind
        if kind == _PREFIX:
            return path.startswith(self.text)
        if kind == _PATH:
            return path == self.text
        if kind == _REGEX:
            assert self.pattern is not None
            return self.pattern.fullmatch(path) is not None
        return True


class _Index:
    """Routes of one kind (HTTP or CONNECT), in config order."""

    __slots__ = ("exact", "first_wildcard", "wildcards")

    def __init__(self) -> None:
        # Host header value → candidates; wildcard suffix (".example.com") → candidates.
        # Routes are added in config order, so every list stays sorted by index.
        self.exact: dict[str, list[_Entry]] = {}
        self.wildcards: dict[str, list[_Entry]] = {}
        # With no wildcard route before the exact winner, the suffix walk is skipped.
        self.first_wildcard = sys.maxsize

    def add(self, entry: _Entry, authority: FromAuthority) -> None:
        if authority.is_wildcard:
            self.wildcards.setdefault(authority.suffix, []).append(entry)
            self.first_wildcard = min(self.first_wildcard, entry.index)
            return
        for value in authority.host_values():
            self.exact.setdefault(value, []).append(entry)

    def find(self, host: str, path: str) -> Match | None:
        # A Host header is ASCII on the wire (IDNs travel as punycode); refusing
        # anything else keeps str.lower() from folding e.g. U+212A KELVIN into "k".
        if not host.isascii():
            return None
        host = host.lower()
        best: _Entry | None = None
        for entry in self.exact.get(host, ()):
            if entry.accepts(path):
                best = entry
                break
        limit = best.index if best is not None else sys.maxsize
        if limit > self.first_wildcard:
            # Merge by index: a wildcard route wins only if it comes earlier in the
            # config than the best so far. `*` is one or more labels, so the suffixes
            # to look up start at every dot but a leading one (Envoy's suffix rule).
            name, port = split_host(host)
            dot = name.find(".", 1)
            while dot != -1:
                for entry in self.wildcards.get(name[dot:], ()):
                    if entry.index >= limit:
                        break
                    if port in entry.ports and entry.accepts(path):
                        best, limit = entry, entry.index
                        break
                dot = name.find(".", dot + 1)
        return best.match if best is not None else None


class RouteTable:
    """The routes of one config, compiled for matching. Immutable once built."""

    __slots__ = ("_connect", "_hosts", "_http", "routes")

    def __init__(
        self, routes: tuple[Route, ...], http: _Index, connect: _Index, hosts: tuple[str, ...]
    ) -> None:
        self.routes = routes
        self._http = http
        self._connect = connect
        self._hosts = hosts

    @classmethod
    def compile(cls, routes: Sequence[Route]) -> RouteTable:
        """Raises ValueError, naming the route, for what the config loader refuses
        anyway (a bad `from`, two path matchers, a bad regex or rewrite)."""
        http, connect = _Index(), _Index()
        # A dict keeps first-seen order: hosts() lists names in config order.
        names: dict[str, None] = {}
        for index, route in enumerate(routes):
            try:
                authority = parse_from(route.from_url)
                entry = _entry(index, route, authority)
                check_rewrites(route)
            except ValueError as exc:
                raise ValueError(f"routes[{index}]: {exc}") from None
            target = connect if authority.scheme == TCP_SCHEME else http
            target.add(entry, authority)
            names[authority.name] = None
        return cls(tuple(routes), http, connect, tuple(names))

    def match(self, scheme: str, host: str, path: str) -> Match | None:
        """The first route, in config order, whose host, port and path matcher accept
        the request; None if there is none.

        `host` is the Host header as received (`name`, `name:port`, `[v6]:port`);
        `path` is the raw request path without the query string. `scheme` is what
        the request arrived over ("https" or "http"). Like Pomerium, Vallum does not
        filter routes by it: `https://` routes must keep working behind a
        TLS-terminating load balancer with `insecure_server`, and in a TLS deployment
        plain HTTP reaches only `http_redirect_addr`, which redirects instead of
        routing. tcp+https routes answer only `match_connect`.
        """
        del scheme  # accepted so both callers pass the same facts; see above
        return self._http.find(host, path)

    def match_connect(self, authority: str) -> Match | None:
        """The tcp+https route for an HTTP CONNECT to `authority` (`host:port`);
        like Envoy's connect_matcher, it has no path to match."""
        return self._connect.find(authority, "")

    def hosts(self) -> tuple[str, ...]:
        """Distinct `from` host names in config order, for certificates: lower case,
        wildcards as `*.example.com`, IPv6 addresses without brackets, no ports."""
        return self._hosts


def _entry(index: int, route: Route, authority: FromAuthority) -> _Entry:
    # Pomerium reads an empty matcher as unset; the config loader allows at most one.
    given = [(kind, text) for kind, text in _matchers(route) if text]
    if len(given) > 1:
        raise ValueError("set at most one of prefix, path and regex")
    kind, text = given[0] if given else (_ANY, "")
    if authority.scheme == TCP_SCHEME:
        kind, text = _ANY, ""  # a CONNECT request has no path to match
    pattern = None
    if kind == _REGEX:
        try:
            pattern = re.compile(text)
        except re.error as exc:
            raise ValueError(f"invalid regex: {exc}") from None
    return _Entry(Match(index, route), index, kind, text, pattern, authority.ports)


def _matchers(route: Route) -> tuple[tuple[int, str | None], ...]:
    return ((_PREFIX, route.prefix), (_PATH, route.path), (_REGEX, route.regex))
