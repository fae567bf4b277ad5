"""RouteTable: which route a request belongs to. Tables of (request → route index)."""

from __future__ import annotations

from typing import Any

import pytest

from shared.config import Route, WeightedURL
from shared.routing import Match, RouteTable

UPSTREAM = (WeightedURL("http://upstream.internal:8080"),)


def route(from_url: str, **options: Any) -> Route:
    options.setdefault("to", UPSTREAM)
    return Route(from_url=from_url, **options)


def table(*routes: Route) -> RouteTable:
    return RouteTable.compile(routes)


def index_of(found: Match | None) -> int | None:
    return None if found is None else found.index


HOSTS = table(
    route("https://app.example.com"),  # 0
    route("https://ports.example.com:8443"),  # 1
    route("http://plain.example.com"),  # 2
    route("https://*.wild.test"),  # 3
    route("https://[::1]"),  # 4
    route("https://explicit.example.com:443"),  # 5
    route("https://[2001:DB8:0::1]:8443"),  # 6: stored in RFC 5952 form
    route("https://Mixed.Example.com"),  # 7
    route("https://127.0.0.1"),  # 8
    route("http://*.plainwild.test:8080"),  # 9
    route("tcp+https://db.example.com:5432", to=(WeightedURL("tcp://db:5432"),)),  # 10
    route("https://k.example.com"),  # 11
)


@pytest.mark.parametrize(
    ("scheme", "host", "expected"),
    [
        # exact host, default port either way, any case
        ("https", "app.example.com", 0),
        ("https", "app.example.com:443", 0),
        ("https", "APP.Example.COM", 0),
        ("https", "App.Example.Com:443", 0),
        ("https", "mixed.example.com", 7),
        # the scheme does not filter: plain HTTP behind a TLS-terminating balancer
        ("http", "app.example.com", 0),
        # the default port is the from URL's scheme's, and ports compare as text
        ("https", "app.example.com:80", None),
        ("http", "app.example.com:80", None),
        ("https", "app.example.com:8443", None),
        ("https", "app.example.com:0443", None),
        ("https", "app.example.com:", None),
        # a trailing dot is another name
        ("https", "app.example.com.", None),
        ("https", "example.com", None),
        ("https", "other.example.com", None),
        ("https", "", None),
        # explicit port
        ("https", "ports.example.com:8443", 1),
        ("http", "ports.example.com:8443", 1),
        ("https", "ports.example.com", None),
        ("https", "ports.example.com:443", None),
        # an explicit default port is the same as none (Pomerium's GetDomainsForURL)
        ("https", "explicit.example.com", 5),
        ("https", "explicit.example.com:443", 5),
        ("https", "explicit.example.com:80", None),
        # http routes default to 80
        ("http", "plain.example.com", 2),
        ("http", "plain.example.com:80", 2),
        ("https", "plain.example.com", 2),
        ("http", "plain.example.com:443", None),
        # wildcards: one or more extra labels, never the bare domain or an empty label
        ("https", "a.wild.test", 3),
        ("https", "a.b.wild.test", 3),
        ("https", "A.B.WILD.TEST:443", 3),
        ("https", "wild.test", None),
        ("https", ".wild.test", None),
        ("https", "awild.test", None),
        ("https", "a.wild.test.", None),
        ("https", "a.wild.test:8443", None),
        ("https", "x:1.wild.test", None),
        ("http", "a.plainwild.test:8080", 9),
        ("http", "a.plainwild.test", None),
        ("http", "a.plainwild.test:80", None),
        # IPv6 and IPv4 literals
        ("https", "[::1]", 4),
        ("https", "[::1]:443", 4),
        ("https", "[::1]:8443", None),
        ("https", "::1", None),
        ("https", "[0:0::1]", None),  # compared in RFC 5952 form, as browsers send it
        ("https", "[2001:db8::1]:8443", 6),
        ("https", "[2001:DB8::1]:8443", 6),
        ("https", "[2001:db8::1]", None),
        ("https", "127.0.0.1", 8),
        ("https", "127.0.0.1:443", 8),
        # tcp+https routes only answer CONNECT
        ("https", "db.example.com:5432", None),
        # ASCII case folding only: U+212A KELVIN SIGN lower-cases to "k"
        ("https", "K.example.com", 11),
        ("https", "\u212a.example.com", None),
    ],
)
def test_host_and_port(scheme: str, host: str, expected: int | None) -> None:
    assert index_of(HOSTS.match(scheme, host, "/")) == expected


PATHS = table(
    route("https://p.test", prefix="/admin"),  # 0
    route("https://p.test", path="/exact"),  # 1
    route("https://p.test", regex="/items/[0-9]+"),  # 2
    route("https://p.test", regex="/re"),  # 3
    route("https://p.test"),  # 4: no matcher, every path
)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/admin", 0),
        ("/admin/x", 0),
        ("/administrator", 0),  # Envoy's prefix is a plain string prefix
        ("/Admin", 4),  # paths are case-sensitive
        ("/exact", 1),
        ("/exact/", 4),
        ("/exactly", 4),
        ("/items/42", 2),
        ("/items/42/x", 4),  # regex must match the whole path
        ("/items/", 4),
        ("/re", 3),
        ("/re/x", 4),
        ("/x/re", 4),
        ("/anything", 4),
        ("*", 4),
    ],
)
def test_path_matchers(path: str, expected: int) -> None:
    assert index_of(PATHS.match("https", "p.test", path)) == expected


def test_no_route_matches() -> None:
    only = table(route("https://p.test", prefix="/a"), route("https://q.test", path="/b"))
    assert only.match("https", "p.test", "/b") is None
    assert only.match("https", "q.test", "/a") is None
    assert only.match("https", "r.test", "/a") is None
    assert table().match("https", "p.test", "/") is None


ORDER = table(
    route("https://*.example.com", prefix="/wild"),  # 0
    route("https://a.example.com"),  # 1
    route("https://*.example.com"),  # 2
    route("https://b.example.com"),  # 3
    route("https://dup.test", prefix="/a"),  # 4
    route("https://dup.test:443"),  # 5
    route("https://dup.test"),  # 6: never reached
)


@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        ("a.example.com", "/wild/x", 0),  # an earlier wildcard beats a later exact host
        ("a.example.com", "/x", 1),
        ("b.example.com", "/x", 2),
        ("b.example.com", "/wild", 0),
        ("c.example.com", "/x", 2),
        ("x.a.example.com", "/x", 2),
        ("dup.test", "/a/b", 4),
        ("dup.test", "/b", 5),
        ("dup.test:443", "/b", 5),
    ],
)
def test_first_match_in_config_order(host: str, path: str, expected: int) -> None:
    assert index_of(ORDER.match("https", host, path)) == expected


def test_match_carries_the_route() -> None:
    routes = (route("https://a.test"), route("https://b.test", prefix="/x"))
    found = RouteTable.compile(routes).match("https", "b.test", "/x")
    assert found == Match(1, routes[1])
    assert found is not None and found.route is routes[1]


CONNECT = table(
    route("https://db.example.com"),  # 0
    route("tcp+https://db.example.com:5432", to=(WeightedURL("tcp://db:5432"),)),  # 1
    route("tcp+https://*.db.test:5432", to=(WeightedURL("tcp://db:5432"),)),  # 2
)


@pytest.mark.parametrize(
    ("authority", "expected"),
    [
        ("db.example.com:5432", 1),
        ("DB.Example.com:5432", 1),
        ("db.example.com", None),
        ("db.example.com:443", None),
        ("db.example.com:5433", None),
        ("a.db.test:5432", 2),
        ("db.test:5432", None),
    ],
)
def test_connect(authority: str, expected: int | None) -> None:
    assert index_of(CONNECT.match_connect(authority)) == expected


def test_connect_routes_do_not_answer_plain_requests() -> None:
    assert index_of(CONNECT.match("https", "db.example.com", "/")) == 0
    assert CONNECT.match("https", "a.db.test:5432", "/") is None


def test_hosts_are_distinct_names_in_config_order() -> None:
    routes = table(
        route("https://b.test"),
        route("https://A.test:8443"),
        route("http://a.test"),
        route("https://*.w.test"),
        route("https://[::1]:8443"),
        route("tcp+https://db.test:5432", to=(WeightedURL("tcp://db:5432"),)),
        route("https://b.test", prefix="/x"),
    )
    assert routes.hosts() == ("b.test", "a.test", "*.w.test", "::1", "db.test")


def test_routes_are_kept_in_order() -> None:
    routes = (route("https://a.test"), route("https://b.test"))
    assert RouteTable.compile(list(routes)).routes == routes


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (route("ftp://a.test"), "http, https or tcp+https"),
        (route(""), "http, https or tcp+https"),
        (route("https://"), "must name a host"),
        (route("https://a.test:99999"), "out of range"),
        (route("tcp+https://db.test", to=(WeightedURL("tcp://db:1"),)), "needs a port"),
        (route("https://a.test", prefix="/a", path="/b"), "at most one"),
        (route("https://a.test", regex="("), "invalid regex"),
        (
            route("https://a.test", regex_rewrite_pattern="(", regex_rewrite_substitution=""),
            "invalid regex_rewrite_pattern",
        ),
        (
            route("https://a.test", regex_rewrite_pattern="/a", regex_rewrite_substitution="\\1"),
            "group 1",
        ),
    ],
)
def test_compile_refuses_naming_the_route(bad: Route, message: str) -> None:
    with pytest.raises(ValueError, match=r"^routes\[1\]: ") as caught:
        RouteTable.compile([route("https://ok.test"), bad])
    assert message in str(caught.value)


def test_empty_matchers_count_as_unset() -> None:
    # Pomerium reads an empty prefix, path or regex as "not set".
    loose = table(route("https://a.test", prefix="", path="", regex=""))
    assert index_of(loose.match("https", "a.test", "/anything")) == 0
