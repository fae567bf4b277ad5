"""The PPL criteria: each compiles its value once into a leaf node of the policy tree.

Criteria about the user (`authenticated_user`, `email`, `domain`, `user`, `groups`,
`claim/...`) are UNKNOWN without a session (reason `user-unauthenticated`); the rest
look only at the request and are always decided.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from shared.policy.certificates import (
    compile_client_certificate,
    compile_invalid_client_certificate,
)
from shared.policy.clock import compile_date, compile_day_of_week, compile_time_of_day
from shared.policy.errors import Where, is_list, type_name
from shared.policy.inputs import PolicyInput, SessionView
from shared.policy.logic import Node, constant_leaf, request_leaf, session_leaf
from shared.policy.matchers import compile_flag, compile_list_matcher, compile_string_matcher

Compile = Callable[[Any, Where, str], Node | None]


@dataclass(frozen=True, slots=True)
class Criterion:
    compile: Compile
    needs_user: bool
    takes_subpath: bool = False


def _accept(value: Any, where: Where, _sub: str) -> Node | None:
    ok = compile_flag(value, where, "accept")
    return constant_leaf(True, where.label, "accept", "accept") if ok else None


def _reject(value: Any, where: Where, _sub: str) -> Node | None:
    ok = compile_flag(value, where, "reject")
    return constant_leaf(False, where.label, "reject", "reject") if ok else None


def _authenticated_user(value: Any, where: Where, _sub: str) -> Node | None:
    if not compile_flag(value, where, "authenticated_user"):
        return None
    return session_leaf(
        where.label,
        "authenticated_user",
        "user-ok",
        "user-unauthorized",
        lambda s: s.user_id != "",
    )


def _session_string(name: str, ok: str, fail: str, get: Callable[[SessionView], str]) -> Compile:
    def compile_(value: Any, where: Where, _sub: str) -> Node | None:
        compiled = compile_string_matcher(value, where)
        if compiled is None:
            return None
        test, description = compiled
        return session_leaf(where.label, f"{name} {description}", ok, fail, lambda s: test(get(s)))

    return compile_


def _email_domain(session: SessionView) -> str:
    user, at, domain = session.email.rpartition("@")
    return domain if at and user else ""


def _groups(value: Any, where: Where, _sub: str) -> Node | None:
    compiled = compile_list_matcher(value, where, strings_only=True)
    if compiled is None:
        return None
    test, description = compiled
    return session_leaf(
        where.label,
        f"groups {description}",
        "groups-ok",
        "groups-unauthorized",
        lambda s: test(s.groups),
    )


_MISSING: Final = object()
# Where `claim/<name>` looks when the IdP's claims lack the claim itself.
_SESSION_FIELDS: Final[Mapping[str, Callable[[SessionView], object]]] = {
    "sub": lambda s: s.user_id,
    "email": lambda s: s.email,
    "name": lambda s: s.name,
    "groups": lambda s: s.groups,
}


def _as_values(found: object) -> Sequence[object]:
    if isinstance(found, list | tuple):
        return found
    if found is _MISSING or found is None or isinstance(found, Mapping):
        return ()
    return (found,)


def _claim(value: Any, where: Where, sub: str) -> Node | None:
    compiled = compile_list_matcher(value, where, strings_only=False)
    if compiled is None:
        return None
    test, description = compiled
    # Like Pomerium: the whole name first (claim names may be URLs), then a/b or a.b
    # as a path into nested claims.
    segments = tuple(sub.replace(".", "/").split("/"))
    fallback = _SESSION_FIELDS.get(sub)

    def values(session: SessionView) -> Sequence[object]:
        found = session.claims.get(sub, _MISSING)
        if found is _MISSING and len(segments) > 1:
            found = session.claims
            for segment in segments:
                found = found.get(segment, _MISSING) if isinstance(found, Mapping) else _MISSING
        if found is _MISSING and fallback is not None:
            # An empty session field means the IdP did not say, like a missing claim.
            found = fallback(session) or _MISSING
        return _as_values(found)

    return session_leaf(
        where.label,
        f"claim/{sub} {description}",
        "claim-ok",
        "claim-unauthorized",
        lambda s: test(values(s)),
    )


def _http_method(value: Any, where: Where, _sub: str) -> Node | None:
    compiled = compile_string_matcher(value, where, methods=True)
    if compiled is None:
        return None
    test, description = compiled
    return request_leaf(
        where.label,
        f"http_method {description}",
        "http-method-ok",
        "http-method-unauthorized",
        lambda inp: test(inp.method),
    )


def _path_only(path: str) -> str:
    cut = path.find("?")
    return path if cut < 0 else path[:cut]


def _http_path(value: Any, where: Where, _sub: str) -> Node | None:
    compiled = compile_string_matcher(value, where)
    if compiled is None:
        return None
    test, description = compiled
    return request_leaf(
        where.label,
        f"http_path {description}",
        "http-path-ok",
        "http-path-unauthorized",
        lambda inp: test(_path_only(inp.path)),
    )


def _cors_preflight(value: Any, where: Where, _sub: str) -> Node | None:
    if not compile_flag(value, where, "cors_preflight"):
        return None

    def test(inp: PolicyInput) -> bool:
        headers = inp.headers
        return (
            inp.method == "OPTIONS"
            and bool(headers.get("access-control-request-method"))
            and bool(headers.get("origin"))
        )

    return request_leaf(where.label, "cors_preflight", "cors-request", "non-cors-request", test)


def _pomerium_routes(value: Any, where: Where, _sub: str) -> Node | None:
    if not compile_flag(value, where, "pomerium_routes"):
        return None
    return request_leaf(
        where.label,
        "pomerium_routes",
        "pomerium-route",
        "non-pomerium-route",
        lambda inp: inp.path.startswith("/.pomerium/"),
    )


# (version, network as int, netmask as int)
_Network = tuple[int, int, int]


@lru_cache(maxsize=4096)
def _address(text: str) -> tuple[int, int] | None:
    """(version, address as int); memoised because the same clients call again and again."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket's view of an IPv4 client
    return address.version, int(address)


def _source_ip(value: Any, where: Where, _sub: str) -> Node | None:
    items = list(value) if is_list(value) else [value]
    if not items:
        where.error("expected an IP address, a CIDR range or a list of them, got an empty list")
        return None
    networks: list[_Network] = []
    shown: list[str] = []
    for i, item in enumerate(items):
        at = where.item(i) if is_list(value) else where
        if not isinstance(item, str):
            at.error(f"expected an IP address or CIDR range as a string, got {type_name(item)}")
            continue
        try:
            net = ipaddress.ip_network(item.strip(), strict=False)
        except ValueError:
            at.error(f'invalid IP address or CIDR range "{item}"')
            continue
        networks.append((net.version, int(net.network_address), int(net.netmask)))
        shown.append(str(net))
    if len(networks) != len(items):
        return None
    frozen = tuple(networks)

    def test(inp: PolicyInput) -> bool:
        found = _address(inp.source_ip)
        if found is None:
            return False
        version, address = found
        return any(v == version and address & mask == net for v, net, mask in frozen)

    return request_leaf(
        where.label,
        f"source_ip in [{', '.join(shown)}]",
        "source-ip-ok",
        "source-ip-unauthorized",
        test,
    )


def _plain(compile_: Callable[[Any, Where], Node | None]) -> Compile:
    return lambda value, where, _sub: compile_(value, where)


CRITERIA: Final[Mapping[str, Criterion]] = {
    "accept": Criterion(_accept, needs_user=False),
    "reject": Criterion(_reject, needs_user=False),
    "authenticated_user": Criterion(_authenticated_user, needs_user=True),
    "email": Criterion(
        _session_string("email", "email-ok", "email-unauthorized", lambda s: s.email),
        needs_user=True,
    ),
    "domain": Criterion(
        _session_string("domain", "domain-ok", "domain-unauthorized", _email_domain),
        needs_user=True,
    ),
    "user": Criterion(
        _session_string("user", "user-ok", "user-unauthorized", lambda s: s.user_id),
        needs_user=True,
    ),
    "groups": Criterion(_groups, needs_user=True),
    "claim": Criterion(_claim, needs_user=True, takes_subpath=True),
    "http_method": Criterion(_http_method, needs_user=False),
    "http_path": Criterion(_http_path, needs_user=False),
    "source_ip": Criterion(_source_ip, needs_user=False),
    "cors_preflight": Criterion(_cors_preflight, needs_user=False),
    "pomerium_routes": Criterion(_pomerium_routes, needs_user=False),
    "client_certificate": Criterion(_plain(compile_client_certificate), needs_user=False),
    "invalid_client_certificate": Criterion(
        _plain(compile_invalid_client_certificate), needs_user=False
    ),
    "date": Criterion(_plain(compile_date), needs_user=False),
    "day_of_week": Criterion(_plain(compile_day_of_week), needs_user=False),
    "time_of_day": Criterion(_plain(compile_time_of_day), needs_user=False),
}

# Likely mistakes that share too few letters with the right name for difflib.
CRITERION_SYNONYMS: Final = {
    "emails": "email",
    "mail": "email",
    "domains": "domain",
    "email_domain": "domain",
    "users": "user",
    "user_id": "user",
    "userid": "user",
    "sub": "user",
    "group": "groups",
    "method": "http_method",
    "methods": "http_method",
    "path": "http_path",
    "ip": "source_ip",
    "ips": "source_ip",
    "source_ips": "source_ip",
    "client_ip": "source_ip",
    "remote_ip": "source_ip",
    "cidr": "source_ip",
    "claims": "claim",
    "authenticated": "authenticated_user",
    "any_authenticated_user": "authenticated_user",
    "public": "accept",
    "allow_all": "accept",
    "deny_all": "reject",
    "cors": "cors_preflight",
    "preflight": "cors_preflight",
    "cert": "client_certificate",
    "client_cert": "client_certificate",
    "mtls": "client_certificate",
    "weekday": "day_of_week",
    "weekdays": "day_of_week",
    "days": "day_of_week",
    "day": "day_of_week",
    "time": "time_of_day",
    "hours": "time_of_day",
    "any": "or",
    "all": "and",
    "none": "not",
    "nand": "nor",
}
