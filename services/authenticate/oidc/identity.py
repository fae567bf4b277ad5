"""The user an ID token (and userinfo) describes, in the shape sessions store.

Pomerium reads the user id from `sub`, and groups from the `groups` claim, which
providers send as a list or, with a single group, as a string.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from services.authenticate.oidc.errors import IdTokenError


@dataclass(frozen=True, slots=True)
class OIDCIdentity:
    """Fits shared.jwt.claims.Identity."""

    user_id: str
    email: str
    name: str
    groups: tuple[str, ...]
    # Every claim, read-only: policy's `claim/...` criteria look at them.
    claims: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def groups_of(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        # One group, not a list to split: group names may contain spaces and commas.
        return (value,) if value else ()
    if isinstance(value, list | tuple):
        names = (
            str(item)
            for item in value
            if isinstance(item, str | int) and not isinstance(item, bool) and item != ""
        )
        return tuple(dict.fromkeys(names))
    return ()


def identity_from(claims: Mapping[str, Any]) -> OIDCIdentity:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise IdTokenError("malformed", "no sub")
    name = _text(claims.get("name"))
    if not name:
        name = " ".join(
            part
            for part in (_text(claims.get("given_name")), _text(claims.get("family_name")))
            if part
        )
    return OIDCIdentity(
        user_id=sub,
        email=_text(claims.get("email")),
        name=name,
        groups=groups_of(claims.get("groups")),
        claims=MappingProxyType(dict(claims)),
    )
