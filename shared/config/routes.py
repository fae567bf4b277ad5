"""The schema of one route (and its `redirect` and `response` objects).

Only shape and obvious constraints are checked here; what a route means at request
time belongs to the proxy and the policy compiler.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.config.assertion import parse_jwt_groups_filter, parse_jwt_issuer_format
from shared.config.errors import FieldError
from shared.config.fields import (
    freeze,
    got,
    parse_bool,
    parse_claims_map,
    parse_duration,
    parse_header_map,
    parse_header_name,
    parse_header_names,
    parse_int,
    parse_regex,
    parse_str,
    parse_str_list,
    parse_url_path,
)
from shared.config.model import DirectResponse, Redirect, Route, WeightedURL
from shared.config.mtls import check_ca_bundle
from shared.config.schema import (
    Ctx,
    Given,
    Key,
    build,
    plain,
    read_object,
    require_together,
    source_key,
)
from shared.config.sources import PemKind
from shared.config.urls import parse_from_url, parse_upstream
from shared.templates import Template, TemplateError

_REDIRECT_CODES = (301, 302, 303, 307, 308)


def _parse_response_code(value: Any) -> int:
    code = parse_int(value, 100, 599)
    if code not in _REDIRECT_CODES:
        raise FieldError(f"must be one of {', '.join(map(str, _REDIRECT_CODES))}, got {code}")
    return code


REDIRECT_KEYS: tuple[Key, ...] = (
    Key("https_redirect", plain(parse_bool)),
    Key("scheme_redirect", plain(parse_str)),
    Key("host_redirect", plain(parse_str)),
    Key("port_redirect", plain(lambda v: parse_int(v, 1, 65535))),
    Key("path_redirect", plain(parse_url_path)),
    Key("prefix_rewrite", plain(parse_str)),
    Key("response_code", plain(_parse_response_code)),
    Key("strip_query", plain(parse_bool)),
)

RESPONSE_KEYS: tuple[Key, ...] = (
    Key("status", plain(lambda v: parse_int(v, 100, 599))),
    Key("body", plain(parse_str)),
)


def _parse_redirect(value: Any, ctx: Ctx) -> Redirect:
    given = read_object(value, REDIRECT_KEYS, ctx)
    if "path_redirect" in given and "prefix_rewrite" in given:
        ctx.child("prefix_rewrite").add("set either path_redirect or prefix_rewrite, not both")
    return Redirect(**build(given, REDIRECT_KEYS, ctx))


def _parse_response(value: Any, ctx: Ctx) -> DirectResponse | None:
    given = read_object(value, RESPONSE_KEYS, ctx)
    values = build(given, RESPONSE_KEYS, ctx)
    if "status" not in given and isinstance(value, Mapping):
        ctx.child("status").add("required")
    return DirectResponse(**values) if "status" in values else None


def _parse_to(value: Any, ctx: Ctx) -> tuple[WeightedURL, ...]:
    if isinstance(value, str):
        return (parse_upstream(value),)
    if not isinstance(value, list):
        raise FieldError(f"expected a URL or a list of URLs, got {got(value)}")
    if not value:
        raise FieldError("must name at least one upstream URL")
    upstreams: list[WeightedURL] = []
    for index, entry in enumerate(value):
        try:
            upstreams.append(parse_upstream(entry))
        except FieldError as exc:
            ctx.item(index).add(str(exc))
    return tuple(upstreams)


def _parse_set_request_headers(value: Any, ctx: Ctx) -> Mapping[str, str]:
    """A header map whose values are `${pomerium.*}` templates, each checked here.

    A value that does not compile is a problem at its own header name; the map is kept so
    the other problems of the route are still found.
    """
    headers = parse_header_map(value)
    for name, text in headers.items():
        try:
            Template.compile(text)
        except TemplateError as exc:
            ctx.child(name).add(str(exc))
    return headers


ROUTE_KEYS: tuple[Key, ...] = (
    Key("from", plain(parse_from_url), attr="from_url"),
    Key("to", _parse_to),
    Key("redirect", _parse_redirect),
    Key("response", _parse_response),
    Key("prefix", plain(parse_url_path)),
    Key("path", plain(parse_url_path)),
    Key("regex", plain(parse_regex)),
    Key("prefix_rewrite", plain(parse_str)),
    Key("regex_rewrite_pattern", plain(parse_regex)),
    Key("regex_rewrite_substitution", plain(parse_str)),
    Key("host_rewrite", plain(parse_str)),
    Key("host_rewrite_header", plain(parse_header_name)),
    Key("preserve_host_header", plain(parse_bool)),
    Key("set_request_headers", _parse_set_request_headers),
    Key("remove_request_headers", plain(parse_header_names)),
    Key("set_response_headers", plain(parse_header_map)),
    Key("allow_websockets", plain(parse_bool)),
    Key("timeout", plain(parse_duration)),
    Key("idle_timeout", plain(parse_duration)),
    Key("pass_identity_headers", plain(parse_bool)),
    Key("jwt_groups_filter", plain(parse_jwt_groups_filter)),
    Key("jwt_issuer_format", plain(parse_jwt_issuer_format)),
    Key("policy", plain(freeze)),
    Key("allow_public_unauthenticated_access", plain(parse_bool)),
    Key("allow_any_authenticated_user", plain(parse_bool)),
    Key("cors_allow_preflight", plain(parse_bool)),
    Key("allowed_users", plain(parse_str_list)),
    Key("allowed_domains", plain(parse_str_list)),
    Key("allowed_idp_claims", plain(parse_claims_map)),
    source_key("tls_custom_ca", PemKind.CERT),
    Key("tls_server_name", plain(parse_str)),
    Key("tls_upstream_server_name", plain(parse_str)),
    Key("tls_skip_verify", plain(parse_bool)),
    source_key("tls_client_cert", PemKind.CERT),
    source_key("tls_client_key", PemKind.KEY),
    Key("tls_upstream_allow_renegotiation", plain(parse_bool)),
    # Pomerium's older per-route client CA; see mtls.py for how Vallum treats it.
    source_key("tls_downstream_client_ca", PemKind.CERT, check_ca_bundle),
    Key("name", plain(parse_str)),
    Key("description", plain(parse_str)),
    Key("id", plain(parse_str)),
)


def _check_route(given: Mapping[str, Given], values: Mapping[str, Any], ctx: Ctx) -> None:
    # Presence is judged on what was given, not on what parsed, so one bad value
    # is one problem rather than a cascade of "missing" ones.
    if "from" not in given:
        ctx.child("from").add("required")

    actions = [name for name in ("to", "redirect", "response") if name in given]
    if not actions:
        ctx.child("to").add("required (or set redirect or response)")
    for extra in actions[1:]:
        ctx.child(extra).add(f"not allowed together with {actions[0]}")

    matchers = [name for name in ("prefix", "path", "regex") if name in given]
    for extra in matchers[1:]:
        ctx.child(extra).add(
            f"set at most one of prefix, path and regex (already has {matchers[0]})"
        )

    require_together(given, "regex_rewrite_pattern", "regex_rewrite_substitution", ctx)
    require_together(given, "tls_client_cert", "tls_client_key", ctx)

    # parse_upstream accepts tcp:// and http(s):// alike; which is right depends on `from`.
    tcp_route = str(values.get("from_url", "")).startswith("tcp+")
    for upstream in values.get("to", ()):
        if upstream.url.lower().startswith("tcp:") != tcp_route:
            message = (
                f"a tcp+https route forwards to tcp://host:port, got {upstream.url!r}"
                if tcp_route
                else f"must be an http or https URL, got {upstream.url!r}"
            )
            ctx.child("to").add(message)
            break


def parse_route(raw: Any, ctx: Ctx) -> Route:
    given = read_object(raw, ROUTE_KEYS, ctx)
    values = build(given, ROUTE_KEYS, ctx)
    if isinstance(raw, Mapping):
        _check_route(given, values, ctx)
    # An empty from_url only survives in a configuration that is refused anyway; it
    # keeps routes[i] aligned with the file so later problems name the right index.
    values.setdefault("from_url", "")
    return Route(**values)


def parse_routes(value: Any, ctx: Ctx) -> tuple[Route, ...]:
    if not isinstance(value, list):
        raise FieldError(f"expected a list of routes, got {got(value)}")
    return tuple(parse_route(entry, ctx.item(index)) for index, entry in enumerate(value))
