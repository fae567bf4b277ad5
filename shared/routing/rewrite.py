"""The path a matched request is forwarded with: `prefix_rewrite`, `regex_rewrite_*`.

Pomerium hands Envoy exactly one rewrite per route (`getRewriteOptions`), so the first
that is set wins and the others are ignored:

1. `prefix_rewrite` replaces what the route's matcher matched (Envoy's semantics): the
   `prefix`; for `path`, and for `regex`, the whole path; with no matcher, the leading
   `/` (Pomerium matches such routes as Envoy prefix `/`, so `prefix_rewrite: /app`
   turns `/x` into `/appx`).
2. `regex_rewrite_pattern` / `regex_rewrite_substitution`: every non-overlapping match
   is replaced. Envoy uses RE2 and its rewrite syntax (`\\1`..`\\9` for groups, `\\0`
   for the whole match, `\\\\` for a backslash); the substitution is read that way and
   applied with Python's `re`, so patterns follow Python `re` syntax (as the config
   loader validates them) and any other backslash escape is an error.
3. Otherwise the path of the first `to` URL, as a prefix rewrite: `to:
   http://app:8080/base` forwards `/x` as `/basex`, as in Pomerium.

An empty string counts as unset, as it does in Pomerium. The result is the whole
upstream path: forwarders must not join the `to` path again. Paths are raw (still
percent-encoded) and without the query string, which the caller re-attaches.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache, partial
from urllib.parse import urlsplit

from shared.config.model import Route

_CACHE_SIZE = 1024


def rewrite_path(route: Route, path: str) -> str:
    """The upstream path for `path`, which must be one that `route` matched."""
    if route.prefix_rewrite:
        return _replace_matched(route, path, route.prefix_rewrite)
    if route.regex_rewrite_pattern:
        substitute = regex_rewriter(
            route.regex_rewrite_pattern, route.regex_rewrite_substitution or ""
        )
        return substitute(path)
    if route.to:
        base = _url_path(route.to[0].url)
        if base:
            return _replace_matched(route, path, base)
    return path


def check_rewrites(route: Route) -> None:
    """Raises ValueError now for a rewrite that would otherwise fail per request."""
    if route.regex_rewrite_pattern and not route.prefix_rewrite:
        regex_rewriter(route.regex_rewrite_pattern, route.regex_rewrite_substitution or "")


def _replace_matched(route: Route, path: str, replacement: str) -> str:
    # Envoy replaces the matched part; a path the route did not match is left alone.
    if route.regex:
        return replacement
    if route.path:
        return replacement if path == route.path else path
    prefix = route.prefix or "/"
    if path.startswith(prefix):
        return replacement + path[len(prefix) :]
    return path


@lru_cache(maxsize=_CACHE_SIZE)
def _url_path(url: str) -> str:
    return urlsplit(url).path


@lru_cache(maxsize=_CACHE_SIZE)
def regex_rewriter(pattern: str, substitution: str) -> Callable[[str], str]:
    """Compiled once per (pattern, substitution); raises ValueError for bad input."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regex_rewrite_pattern: {exc}") from None
    template, highest_group = _python_template(substitution)
    if highest_group > compiled.groups:
        raise ValueError(
            f"regex_rewrite_substitution refers to group {highest_group}, "
            f"but the pattern has {compiled.groups}"
        )
    return partial(compiled.sub, template)


def _python_template(substitution: str) -> tuple[str, int]:
    """RE2's rewrite string as an `re.sub` template, and the highest group it uses."""
    out: list[str] = []
    highest = 0
    escaped = False
    for char in substitution:
        if not escaped:
            if char == "\\":
                escaped = True
            else:
                out.append(char)
            continue
        escaped = False
        if "0" <= char <= "9":
            out.append(f"\\g<{char}>")
            highest = max(highest, int(char))
        elif char == "\\":
            out.append("\\\\")
        else:
            raise ValueError(
                f"regex_rewrite_substitution: \\{char} is not a rewrite escape "
                "(use \\0 to \\9 for groups, \\\\ for a backslash)"
            )
    if escaped:
        raise ValueError("regex_rewrite_substitution ends with a lone backslash")
    return "".join(out), highest
