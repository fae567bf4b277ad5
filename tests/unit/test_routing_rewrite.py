"""rewrite_path: the path a matched request is forwarded with."""

from __future__ import annotations

from typing import Any

import pytest

from shared.config import Route, WeightedURL
from shared.routing import rewrite_path
from shared.routing.rewrite import regex_rewriter

PLAIN = (WeightedURL("http://up.internal:8080"),)


def route(to: str | None = None, **options: Any) -> Route:
    upstreams = (WeightedURL(to),) if to is not None else PLAIN
    return Route(from_url="https://app.test", to=upstreams, **options)


@pytest.mark.parametrize(
    ("options", "path", "expected"),
    [
        # nothing to rewrite
        ({}, "/x/y", "/x/y"),
        ({"prefix": "/a"}, "/a/y", "/a/y"),
        # prefix_rewrite replaces the matched prefix, as a plain string
        ({"prefix": "/admin", "prefix_rewrite": "/backend"}, "/admin/x", "/backend/x"),
        ({"prefix": "/admin", "prefix_rewrite": "/backend"}, "/admin", "/backend"),
        ({"prefix": "/admin", "prefix_rewrite": "/b"}, "/administrator", "/bistrator"),
        ({"prefix": "/admin/", "prefix_rewrite": "/"}, "/admin/x", "/x"),
        ({"prefix": "/admin", "prefix_rewrite": "/"}, "/admin/x", "//x"),
        # ...for path and regex matchers, the whole path
        ({"path": "/exact", "prefix_rewrite": "/new"}, "/exact", "/new"),
        ({"regex": "/items/[0-9]+", "prefix_rewrite": "/all"}, "/items/42", "/all"),
        # ...with no matcher, the leading "/" (Pomerium matches such routes as prefix /)
        ({"prefix_rewrite": "/app"}, "/x", "/appx"),
        ({"prefix_rewrite": "/app/"}, "/x", "/app/x"),
        # a path the route did not match is left alone
        ({"prefix": "/admin", "prefix_rewrite": "/b"}, "/other", "/other"),
        ({"path": "/exact", "prefix_rewrite": "/new"}, "/exactly", "/exactly"),
        ({"prefix_rewrite": "/app"}, "*", "*"),
        # regex rewrite, RE2 substitution syntax, every match replaced
        (
            {
                "regex_rewrite_pattern": "^/service/([^/]+)(/.*)$",
                "regex_rewrite_substitution": "\\2/instance/\\1",
            },
            "/service/foo/v1/api",
            "/v1/api/instance/foo",
        ),
        (
            {"regex_rewrite_pattern": "[0-9]", "regex_rewrite_substitution": "#"},
            "/a1b22",
            "/a#b##",
        ),
        ({"regex_rewrite_pattern": "/x", "regex_rewrite_substitution": "\\0\\0"}, "/x", "/x/x"),
        ({"regex_rewrite_pattern": "^/", "regex_rewrite_substitution": "\\\\"}, "/a", "\\a"),
        ({"regex_rewrite_pattern": "^/a", "regex_rewrite_substitution": ""}, "/a/b", "/b"),
        ({"regex_rewrite_pattern": "^/z", "regex_rewrite_substitution": "/y"}, "/a", "/a"),
        # only one rewrite applies, prefix_rewrite first (Pomerium's getRewriteOptions)
        (
            {
                "prefix": "/a",
                "prefix_rewrite": "/p",
                "regex_rewrite_pattern": "p",
                "regex_rewrite_substitution": "r",
            },
            "/a/x",
            "/p/x",
        ),
        # an empty prefix_rewrite counts as unset
        (
            {
                "prefix_rewrite": "",
                "regex_rewrite_pattern": "a",
                "regex_rewrite_substitution": "b",
            },
            "/a",
            "/b",
        ),
    ],
)
def test_rewrite(options: dict[str, Any], path: str, expected: str) -> None:
    assert rewrite_path(route(**options), path) == expected


@pytest.mark.parametrize(
    ("to", "options", "path", "expected"),
    [
        ("http://up:8080/base", {}, "/x", "/basex"),
        ("http://up:8080/base/", {}, "/x", "/base/x"),
        ("http://up:8080/base", {"prefix": "/app"}, "/app/x", "/base/x"),
        ("http://up:8080", {}, "/x", "/x"),
        ("http://up:8080/base", {"prefix_rewrite": "/p"}, "/x", "/px"),
        (
            "http://up:8080/base",
            {"regex_rewrite_pattern": "x", "regex_rewrite_substitution": "y"},
            "/x",
            "/y",
        ),
    ],
)
def test_upstream_path_is_a_prefix_rewrite(
    to: str, options: dict[str, Any], path: str, expected: str
) -> None:
    # Pomerium uses the first `to` URL's path when no rewrite is set.
    assert rewrite_path(route(to, **options), path) == expected


@pytest.mark.parametrize(
    ("pattern", "substitution", "message"),
    [
        ("(", "", "invalid regex_rewrite_pattern"),
        ("/a", "\\1", "group 1"),
        ("(a)", "\\2", "group 2"),
        ("/a", "\\n", "not a rewrite escape"),
        ("/a", "\\g<0>", "not a rewrite escape"),
        ("/a", "x\\", "lone backslash"),
    ],
)
def test_bad_regex_rewrite(pattern: str, substitution: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        regex_rewriter(pattern, substitution)


def test_regex_rewriter_is_compiled_once() -> None:
    assert regex_rewriter("^/a", "/b") is regex_rewriter("^/a", "/b")
