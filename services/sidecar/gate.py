"""The sidecar's two pure decisions: whose certificate may call, and what the app is told.

No I/O: the listener hands in what the TLS handshake verified and what the JWT
verifier returned.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# ssl.SSLObject.getpeercert() spells the SAN types this way.
_NAME_TYPES = frozenset({"URI", "DNS"})


def certificate_names(peer: Mapping[str, Any] | None) -> frozenset[str]:
    """The URI and DNS subject alternative names of a verified peer certificate."""
    if not peer:
        return frozenset()
    sans: Iterable[tuple[str, str]] = peer.get("subjectAltName", ())
    return frozenset(value for kind, value in sans if kind in _NAME_TYPES)


def name_allowed(names: frozenset[str], allowed: Sequence[str]) -> bool:
    """Exact matches only: a pattern language here would be one more way to be wrong
    about who may reach an app that trusts the sidecar completely. Empty `allowed`
    admits any certificate the CA issued (the handshake already checked that)."""
    return not allowed or any(name in names for name in allowed)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):
        # Groups and other lists: one header line, comma-joined (X-Remote-Groups: a,b).
        return ",".join(_text(item) for item in value if item is not None)
    return ""


def identity_headers(
    claims: Mapping[str, Any], pairs: Sequence[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The configured headers for these verified claims.

    A claim that is absent or empty (every user claim of an anonymous request on a
    public route) sets no header at all: an empty X-Remote-User could read as a user
    whose name is "" to an app that only tests for presence.
    """
    out: list[tuple[str, str]] = []
    for header, claim in pairs:
        text = _text(claims.get(claim))
        # A header line cannot carry a line break; a claim holding one is not a value.
        if text and "\r" not in text and "\n" not in text:
            out.append((header, text))
    return out
