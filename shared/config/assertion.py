"""Parsers for the keys of the signed identity assertion, in Pomerium's forms.

`signing_key` is checked with the JWT module's own loader, so a key that would fail
at the first signature is refused with the configuration instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from shared.config.errors import FieldError
from shared.config.fields import got, parse_header_name, parse_str, parse_str_list
from shared.jwt.claims import ISSUER_FORMATS, claim_header_name
from shared.jwt.keys import JWTKeyError, SigningKeys

_CLAIMS_SHAPE = "a list of claim names or a mapping of header name to claim name"


def check_signing_key(data: bytes) -> None:
    try:
        SigningKeys.from_pem(data)
    except JWTKeyError as exc:
        raise FieldError(str(exc)) from None


def _claim_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise FieldError(f"{where} must be a claim name, got {got(value)}")
    return value.strip()


def _from_claims(claims: Iterable[str]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for claim in dict.fromkeys(claims):
        header = claim_header_name(claim)
        try:
            parse_header_name(header)
        except FieldError:
            raise FieldError(
                f"claim {claim!r} does not make a valid header name ({header}); "
                f"name the header yourself with the mapping form, e.g. {{X-My-Claim: {claim}}}"
            ) from None
        pairs.append((header, claim))
    return pairs


def parse_jwt_claims_headers(value: Any) -> tuple[tuple[str, str], ...]:
    """(header name, claim name) pairs from a list, a mapping or a comma/space-separated string.

    The list and string forms name each header `X-Pomerium-Claim-<claim>`, as Pomerium does.
    """
    if isinstance(value, str):
        # Pomerium splits the string form on commas and on whitespace alike.
        pairs = _from_claims(part for part in re.split(r"[,\s]+", value) if part)
    elif isinstance(value, list | tuple):
        pairs = _from_claims(_claim_name(item, f"item {i}") for i, item in enumerate(value))
    elif isinstance(value, Mapping):
        pairs = [
            (parse_header_name(header), _claim_name(claim, f"the claim for {header}"))
            for header, claim in value.items()
        ]
    else:
        raise FieldError(f"expected {_CLAIMS_SHAPE}, got {got(value)}")
    seen: dict[str, str] = {}
    for header, _ in pairs:
        if header.lower() in seen:
            raise FieldError(f"header {header} is named twice (also as {seen[header.lower()]})")
        seen[header.lower()] = header
    return tuple(pairs)


def parse_jwt_issuer_format(value: Any) -> str:
    text = parse_str(value)
    if text not in ISSUER_FORMATS:
        raise FieldError(f"must be {' or '.join(ISSUER_FORMATS)}, got {value!r}")
    return text


def parse_jwt_groups_filter(value: Any) -> tuple[str, ...]:
    """Group names (or ids) to keep in the assertion's `groups`; empty keeps every group."""
    groups = parse_str_list(value)
    if any(not group.strip() for group in groups):
        raise FieldError("group names must not be empty")
    return tuple(dict.fromkeys(group.strip() for group in groups))
