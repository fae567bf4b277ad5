"""What the identity assertion and the `X-Pomerium-Claim-*` headers say, as Pomerium says it.

The claim set follows Pomerium's headers evaluator: `iss` and `aud` name the route's
host, `sub` and `user` the user id, then `email`, `groups` (always a list, so that
strict JSON decoders upstream never meet a null), `name`, `sid`, and every claim that
`jwt_claims_headers` names. A request without a session (a public route) still gets an
assertion, with empty user fields. `iat`, `exp` and `jti` are added per signature
(sign.py). Pure code: no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol

ASSERTION_HEADER = "X-Pomerium-JWT-Assertion"
CLAIM_HEADER_PREFIX = "X-Pomerium-Claim-"

ISSUER_HOST_ONLY = "hostOnly"
ISSUER_URI = "uri"
ISSUER_FORMATS = (ISSUER_HOST_ONLY, ISSUER_URI)

# Claims the assertion always carries; `jwt_claims_headers` naming one of them reads it
# from the assertion rather than copying the IdP's claim of the same name over it.
BASE_CLAIMS = frozenset(
    {"iss", "aud", "sub", "user", "email", "groups", "name", "sid", "iat", "exp", "jti"}
)


class Identity(Protocol):
    """The signed-in user as a session record describes them (shared.policy.SessionView fits)."""

    @property
    def user_id(self) -> str: ...
    @property
    def email(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def groups(self) -> Sequence[str]: ...
    @property
    def claims(self) -> Mapping[str, object]: ...


def split_host(host: str) -> tuple[str, str | None]:
    """The hostname (lower-case, IPv6 without brackets) and the port, if any, of a Host value."""
    if host.startswith("["):
        end = host.find("]")
        name, rest = (host[1:end], host[end + 1 :]) if end > 0 else (host[1:], "")
        port = rest[1:] if rest.startswith(":") else None
    elif host.count(":") == 1:
        name, port = host.split(":")
    else:
        name, port = host, None
    # DNS names compare case-insensitively; upstreams compare `aud` exactly.
    return name.lower(), port or None


def audience_for(host: str) -> str:
    """`aud`: the route's hostname without a port, as Pomerium sets it."""
    return split_host(host)[0]


def issuer_for(host: str, issuer_format: str = ISSUER_HOST_ONLY) -> str:
    """`iss`: the hostname (`hostOnly`), or `https://host[:port]/` (`uri`).

    Pomerium drops the port in the `uri` form too; a non-default port is kept here so
    that the issuer is a URL an upstream can actually fetch the JWKS from.
    """
    name, port = split_host(host)
    if issuer_format == ISSUER_HOST_ONLY:
        return name
    if issuer_format != ISSUER_URI:
        raise ValueError(
            f"unknown issuer format {issuer_format!r} (use {' or '.join(ISSUER_FORMATS)})"
        )
    authority = f"[{name}]" if ":" in name else name
    if port is not None and port != "443":
        authority = f"{authority}:{port}"
    return f"https://{authority}/"


def _claim_text(value: object) -> str | None:
    """One claim value as Pomerium stores it: strings as they are, scalars spelled in JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return None
    # Pomerium drops nested objects; JSON keeps what they say instead of losing it.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def flatten_claim(value: object) -> str:
    """An IdP claim copied into the assertion: Pomerium joins list items with commas."""
    items = value if isinstance(value, list | tuple) else [value]
    return ",".join(text for text in map(_claim_text, items) if text is not None)


def identity_claims(
    identity: Identity | None,
    *,
    host: str,
    session_id: str = "",
    issuer_format: str = ISSUER_HOST_ONLY,
    groups_filter: Collection[str] = (),
    claims_headers: Iterable[tuple[str, str]] = (),
) -> dict[str, Any]:
    """The claims of one (session, route) pair, without the per-request `iat`/`exp`/`jti`.

    `identity` None is a request without a session. `groups_filter` (the union of the
    global and the route's `jwt_groups_filter`), when not empty, keeps only the groups
    it names. `claims_headers` are the (header, claim) pairs of `jwt_claims_headers`.
    """
    groups: list[str] = []
    if identity is not None:
        groups = list(identity.groups)
        if groups_filter:
            allowed = frozenset(groups_filter)
            groups = [group for group in groups if group in allowed]
    user_id = identity.user_id if identity is not None else ""
    claims: dict[str, Any] = {
        "iss": issuer_for(host, issuer_format),
        "aud": audience_for(host),
        "sub": user_id,
        "user": user_id,
        "email": identity.email if identity is not None else "",
        "groups": groups,
        "name": identity.name if identity is not None else "",
        "sid": session_id,
    }
    if identity is None:
        return claims
    for _, claim in claims_headers:
        # A claim the IdP did not send stays absent; its header is then empty.
        if claim not in BASE_CLAIMS and claim not in claims and claim in identity.claims:
            claims[claim] = flatten_claim(identity.claims[claim])
    return claims


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def header_value(value: object) -> str:
    """A claim as a header value: lists joined with ",", other non-strings as JSON."""
    if isinstance(value, list | tuple):
        text = ",".join(item if isinstance(item, str) else _json(item) for item in value)
    else:
        text = value if isinstance(value, str) else _json(value)
    # A line break from an IdP claim must never start a header of its own.
    return _CONTROL.sub(" ", text)


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def claim_headers(
    claims: Mapping[str, Any], claims_headers: Iterable[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The `jwt_claims_headers` headers for an assertion's claims.

    A claim missing from `claims` gives an empty header, as in Pomerium. `iat`, `exp`
    and `jti` are only found if the caller adds them to `claims`.
    """
    return [
        (header, header_value(claims[claim]) if claim in claims else "")
        for header, claim in claims_headers
    ]


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def claim_header_name(claim: str) -> str:
    """The header for a claim in `jwt_claims_headers` list form: `X-Pomerium-Claim-<claim>`.

    Pomerium names it `x-pomerium-claim-<claim>` and Go canonicalises it (first letter
    and each letter after "-" upper-case, the rest lower): `family_name` becomes
    `X-Pomerium-Claim-Family_name`. HTTP field names are case-insensitive, so only the
    spelling in logs differs; the same rule keeps them identical to Pomerium's.
    """
    name = CLAIM_HEADER_PREFIX + claim
    if not _TOKEN.fullmatch(name):
        # Go leaves a name it cannot canonicalise alone; config rejects it anyway.
        return name
    out: list[str] = []
    upper = True
    for char in name:
        out.append(char.upper() if upper else char.lower())
        upper = char == "-"
    return "".join(out)
