"""The proxy's view of the routes, prepared once per config.

For each route: its upstream targets (with TLS contexts built once), weighted
load balancing that skips an upstream for a while after it failed, the Host header
to send, and the header sets to apply. Plus the two things every request needs from
the config: where the session handle is, and how many X-Forwarded-For hops to trust.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from services.proxy.http import Request
from services.proxy.upstream import Target
from services.proxy.upstream_tls import UpstreamTLS
from shared.config import Config, Route, WeightedURL
from shared.config.reload import routes_version
from shared.routing import RouteTable

DOWN_SECONDS = 10.0
BEARER_PREFIX = b"pomerium "


def split_host(host: str) -> tuple[str, str | None]:
    """`example.com:8443` → (`example.com`, `8443`); IPv6 literals keep their brackets."""
    if host.startswith("["):
        end = host.find("]")
        if end != -1:
            rest = host[end + 1 :]
            return host[: end + 1], rest[1:] if rest.startswith(":") else None
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        return name, port
    return host, None


@dataclass(slots=True)
class Upstream:
    url: str
    weight: int
    target: Target
    host_header: bytes
    down_until: float = 0.0


@dataclass(slots=True)
class RouteRuntime:
    index: int
    route: Route
    upstreams: list[Upstream]
    remove_headers: frozenset[bytes]
    response_headers: tuple[tuple[str, str], ...]

    def targets(self) -> list[Upstream]:
        """Upstreams to try in order: a weighted pick among the healthy, then the rest."""
        if len(self.upstreams) == 1:
            return self.upstreams
        now = asyncio.get_running_loop().time()
        healthy = [u for u in self.upstreams if u.down_until <= now]
        pool = healthy or self.upstreams
        first = random.choices(pool, weights=[u.weight for u in pool])[0]
        return (
            [first]
            + [u for u in healthy if u is not first]
            + [u for u in self.upstreams if u not in healthy]
        )

    def mark_down(self, target: Target) -> None:
        now = asyncio.get_running_loop().time()
        for upstream in self.upstreams:
            if upstream.target is target:
                upstream.down_until = now + DOWN_SECONDS

    def host_header(self, request: Request, first: Upstream) -> bytes:
        route = self.route
        if route.preserve_host_header:
            return request.header(b"host") or first.host_header
        if route.host_rewrite:
            return route.host_rewrite.encode("latin-1")
        if route.host_rewrite_header:
            value = request.header(route.host_rewrite_header.lower().encode("latin-1"))
            if value:
                return value
        return first.host_header


def _upstream(url: str, weight: int, tls: UpstreamTLS | None) -> Upstream:
    parts = urlsplit(url)
    host = parts.hostname or ""
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    default = port == (443 if secure else 80)
    shown = f"[{host}]" if ":" in host else host
    host_header = (shown if default else f"{shown}:{port}").encode("latin-1")
    if secure:
        assert tls is not None
        target = Target(host, port, tls, tls.server_name(host))
    else:
        target = Target(host, port, None, None)
    return Upstream(url, weight, target, host_header)


class ProxyRoutes:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.version = routes_version(config)
        self.table = RouteTable.compile(config.routes)
        self.trusted_hops = config.xff_num_trusted_hops
        self.cookie_name = config.cookie_name.encode("latin-1")
        self.runtime: list[RouteRuntime] = []
        for index, route in enumerate(config.routes):
            needs_tls = any(urlsplit(t.url).scheme == "https" for t in route.to)
            tls = UpstreamTLS(route) if needs_tls else None
            self.runtime.append(
                RouteRuntime(
                    index=index,
                    route=route,
                    upstreams=[_upstream(t.url, t.weight, tls) for t in route.to],
                    remove_headers=frozenset(
                        h.lower().encode("latin-1") for h in route.remove_request_headers
                    ),
                    response_headers=tuple(route.set_response_headers.items()),
                )
            )

        # Metric labels by route index, bounded and stable: name or id, else `from`.
        self.route_labels = tuple(r.name or r.id or r.from_url for r in config.routes)

        # In all-in-one (or when the proxy fronts authenticate), the authenticate host is
        # forwarded to authenticate's own pages without a Check: signed-out users must
        # reach the sign-in pages.
        self.authenticate: RouteRuntime | None = None
        self._authenticate_table: RouteTable | None = None
        public, internal = config.authenticate_service_url, config.authenticate_internal_service_url
        if public and internal:
            route = Route(
                from_url=public,
                to=(WeightedURL(internal),),
                preserve_host_header=True,
                tls_custom_ca=config.certificate_authority,
            )
            tls = UpstreamTLS(route) if urlsplit(internal).scheme == "https" else None
            self.authenticate = RouteRuntime(
                -2, route, [_upstream(internal, 1, tls)], frozenset(), ()
            )
            self._authenticate_table = RouteTable.compile([route])

    def match(self, scheme: str, host: str, path: str) -> RouteRuntime | None:
        found = self.table.match(scheme, host, path)
        return None if found is None else self.runtime[found.index]

    def match_authenticate(self, scheme: str, host: str, path: str) -> RouteRuntime | None:
        table = self._authenticate_table
        if table is None or table.match(scheme, host, path) is None:
            return None
        return self.authenticate

    def session_handle(self, headers: Sequence[tuple[bytes, bytes]], keys: list[bytes]) -> str:
        """From the session cookie, or `Authorization: Pomerium <handle>` for API clients.

        `keys` are the lower-case names of `headers`, position for position.
        """
        prefix = self.cookie_name + b"="
        for key, (_, value) in zip(keys, headers, strict=True):
            if key == b"cookie":
                for part in value.split(b";"):
                    part = part.strip()
                    if part.startswith(prefix):
                        return part[len(prefix) :].decode("latin-1")
            elif key == b"authorization" and value[:9].lower() == BEARER_PREFIX:
                return value[9:].strip().decode("latin-1")
        return ""

    def without_session_credentials(
        self, headers: list[tuple[bytes, bytes]], keys: list[bytes]
    ) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
        """The headers (and their lower-case names) without the session handle.

        The handle is Vallum's, not the app's: a compromised app must not be able to
        replay it against other routes.
        """
        if b"cookie" not in keys and b"authorization" not in keys:
            return headers, keys
        prefix = self.cookie_name + b"="
        out: list[tuple[bytes, bytes]] = []
        out_keys: list[bytes] = []
        for key, (name, value) in zip(keys, headers, strict=True):
            if key == b"cookie" and prefix in value:
                kept = [p for p in value.split(b";") if not p.strip().startswith(prefix)]
                if not any(p.strip() for p in kept):
                    continue
                value = b";".join(kept).strip()
            elif key == b"authorization" and value[:9].lower() == BEARER_PREFIX:
                continue
            out.append((name, value))
            out_keys.append(key)
        return out, out_keys


def redirect_location(route: Route, scheme: str, host: str, path: str, query: str) -> str:
    """Pomerium's redirect route options applied to the request URL."""
    redirect = route.redirect
    assert redirect is not None
    hostname, port = split_host(host)
    if redirect.https_redirect:
        scheme = "https"
    if redirect.scheme_redirect:
        scheme = redirect.scheme_redirect
    if redirect.host_redirect:
        hostname = redirect.host_redirect
    if redirect.port_redirect:
        port = str(redirect.port_redirect)
    elif redirect.https_redirect or redirect.scheme_redirect:
        port = None
    if redirect.path_redirect:
        path = redirect.path_redirect
    elif redirect.prefix_rewrite is not None:
        # Envoy: the route's matched prefix is replaced (the whole path when no prefix).
        prefix = route.prefix or "/"
        if path.startswith(prefix):
            path = redirect.prefix_rewrite + path[len(prefix) :]
    authority = hostname + (f":{port}" if port else "")
    location = f"{scheme}://{authority}{path}"
    if query and not redirect.strip_query:
        location += "?" + query
    return location
