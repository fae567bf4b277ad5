"""RouteTable.match agrees with a naive reference: a linear scan in config order that
parses every `from` URL and the Host header afresh, written from the documented rules
rather than from the table's data structures."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.config import Route, WeightedURL
from shared.routing import RouteTable

DEFAULT_PORT = {"https": 443, "http": 80}


def parse_request_host(host: str) -> tuple[str, str | None] | None:
    """(name, port text or None) for a well-formed Host; None for a malformed one."""
    if host.startswith("["):
        name, bracket, rest = host.partition("]")
        name += bracket
    elif ":" in host:
        name, _, port = host.partition(":")
        rest = ":" + port
    else:
        name, rest = host, ""
    if not rest:
        return name, None
    if not rest.startswith(":") or not re.fullmatch(r"[0-9]+", rest[1:]):
        return None
    return name, rest[1:]


def reference_match(routes: list[Route], host: str, path: str) -> int | None:
    if not host.isascii():
        return None
    parsed = parse_request_host(host.lower())
    if parsed is None:
        return None
    name, port = parsed
    for index, route in enumerate(routes):
        parts = urlsplit(route.from_url)
        if parts.scheme not in DEFAULT_PORT:
            continue  # tcp+https: CONNECT only
        assert parts.hostname is not None
        route_name = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        default = DEFAULT_PORT[parts.scheme]
        route_port = parts.port if parts.port is not None else default
        port_ok = route_port == default if port is None else port == str(route_port)
        if route_name.startswith("*."):
            host_ok = name.endswith(route_name[1:]) and len(name) > len(route_name) - 1
        else:
            host_ok = name == route_name
        if route.prefix:
            path_ok = path.startswith(route.prefix)
        elif route.path:
            path_ok = path == route.path
        elif route.regex:
            path_ok = re.fullmatch(route.regex, path) is not None
        else:
            path_ok = True
        if port_ok and host_ok and path_ok:
            return index
    return None


LABELS = ("a", "b")
DOMAINS = ("example.com", "a.example.com", "test")
# What a wildcard is filled in with: "" and "a.b" probe the one-or-more-labels rule.
FILLS = ("a", "b", "", "a.b")
ROUTE_PORTS = ("", ":443", ":80", ":8443")
REQUEST_PORTS = ("", ":443", ":80", ":8443", ":0443", ":", ":x")
PATH_CHARS = "/ab1"
PATHS = st.text(PATH_CHARS, max_size=6).map(lambda p: "/" + p)

route_hosts = st.one_of(
    st.builds(
        lambda label, domain: f"{label}.{domain}", st.sampled_from(LABELS), st.sampled_from(DOMAINS)
    ),
    st.sampled_from(DOMAINS),
    st.sampled_from(DOMAINS).map(lambda domain: f"*.{domain}"),
    st.sampled_from(("[::1]", "127.0.0.1", "A.Example.com")),
)
matchers: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.just({}),
    PATHS.map(lambda p: {"prefix": p}),
    PATHS.map(lambda p: {"path": p}),
    st.sampled_from(("/a.*", "/b/[0-9]+", "/(a|b)1?", "/.*1")).map(lambda r: {"regex": r}),
)


@st.composite
def routes(draw: st.DrawFn) -> Route:
    host = draw(route_hosts)
    if draw(st.integers(0, 9)) == 0:
        return Route(
            from_url=f"tcp+https://{host}:5432", to=(WeightedURL("tcp://db.internal:5432"),)
        )
    scheme = draw(st.sampled_from(("https", "http")))
    port = draw(st.sampled_from(ROUTE_PORTS))
    return Route(
        from_url=f"{scheme}://{host}{port}",
        to=(WeightedURL("http://up.internal"),),
        **draw(matchers),
    )


@st.composite
def request_hosts(draw: st.DrawFn, route_list: list[Route]) -> str:
    """Half the time a route's own host and port (wildcards filled in), else a variant."""
    netlocs = [urlsplit(route.from_url).netloc for route in route_list]
    use_route: bool = draw(st.booleans())
    if netlocs and use_route:
        return draw(st.sampled_from(netlocs)).replace("*", draw(st.sampled_from(FILLS)))
    labels = draw(st.lists(st.sampled_from((*LABELS, "")), max_size=2))
    other = ".".join([*labels, draw(st.sampled_from(DOMAINS))]).lstrip(".")
    names = [split_port(netloc) for netloc in netlocs]
    name = draw(st.sampled_from((*names, other, "[::1]", "127.0.0.1", "a:1.test", ".test")))
    name = name.replace("*", draw(st.sampled_from(FILLS)))
    if draw(st.booleans()):
        name = name.upper()
    if draw(st.integers(0, 9)) == 0:
        name += "."
    port = draw(st.sampled_from(REQUEST_PORTS)) if draw(st.booleans()) else ""
    return name + port


@st.composite
def request_paths(draw: st.DrawFn, route_list: list[Route]) -> str:
    """Often a route's prefix or path, maybe extended, so that matchers get exercised."""
    given_paths = [p for route in route_list for p in (route.prefix, route.path) if p]
    use_route: bool = draw(st.booleans())
    if given_paths and use_route:
        return draw(st.sampled_from(given_paths)) + draw(st.sampled_from(("", "", "1", "/a")))
    return draw(PATHS)


def split_port(netloc: str) -> str:
    if netloc.startswith("["):
        return netloc.partition("]")[0] + "]"
    return netloc.partition(":")[0]


@settings(max_examples=400, deadline=None)
@given(st.data(), st.lists(routes(), max_size=10))
def test_match_agrees_with_a_linear_scan(data: st.DataObject, route_list: list[Route]) -> None:
    compiled = RouteTable.compile(route_list)
    requests = st.tuples(
        st.sampled_from(("https", "http")), request_hosts(route_list), request_paths(route_list)
    )
    for scheme, host, path in data.draw(st.lists(requests, min_size=1, max_size=8)):
        found = compiled.match(scheme, host, path)
        expected = reference_match(route_list, host, path)
        assert (found.index if found is not None else None) == expected, (scheme, host, path)
        if found is not None:
            assert found.route is route_list[found.index]
