"""Downstream mTLS keys: Pomerium's `downstream_mtls` object and its older `client_ca`.

Only what the configuration says: which CA verifies client certificates, what is
revoked, how strictly. Asking for certificates is the proxy's job, and the default
deny is the policy compiler's (see policies.py).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509

from shared.config.errors import FieldError
from shared.config.fields import got, parse_int, parse_str
from shared.config.model import ENFORCEMENT_MODES, SAN_KINDS, Config, DownstreamMTLS, SanMatcher
from shared.config.schema import Ctx, Given, Key, build, plain, read_object, source_key
from shared.config.sources import PemKind

_CRL_BLOCK = re.compile(rb"-----BEGIN X509 CRL-----.*?-----END X509 CRL-----", re.DOTALL)

# Chains are a handful of certificates; a larger limit is a typo, not a PKI.
MAX_VERIFY_DEPTH = 100


def _reason(exc: Exception) -> str:
    # cryptography's messages can run to several lines of ASN.1 detail.
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def check_ca_bundle(data: bytes) -> None:
    """A CA bundle must parse now, not at the first TLS handshake that needs it."""
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise FieldError(f"holds a certificate that does not parse ({_reason(exc)})") from None


def check_crl(data: bytes) -> None:
    blocks = _CRL_BLOCK.findall(data)
    if len(blocks) != data.count(b"-----BEGIN X509 CRL-----"):
        raise FieldError("holds an X509 CRL block without its -----END X509 CRL----- line")
    for number, block in enumerate(blocks, 1):
        try:
            x509.load_pem_x509_crl(block)
        except ValueError as exc:
            raise FieldError(
                f"CRL {number} of {len(blocks)} does not parse ({_reason(exc)})"
            ) from None


def parse_enforcement(value: Any) -> str:
    text = parse_str(value).strip().lower()
    if text not in ENFORCEMENT_MODES:
        raise FieldError(f"must be one of {', '.join(ENFORCEMENT_MODES)}; got {value!r}")
    return text


def _parse_verify_depth(value: Any) -> int:
    return parse_int(value, 0, MAX_VERIFY_DEPTH)


_SAN_TYPES = ", ".join(SAN_KINDS)


def _parse_san_matcher(entry: Any, ctx: Ctx) -> SanMatcher | None:
    if not isinstance(entry, Mapping) or len(entry) != 1:
        found = f"got {got(entry)}"
        if isinstance(entry, Mapping):
            found = f"got {len(entry)} keys" + (f" ({', '.join(map(str, entry))})" if entry else "")
        ctx.add(
            f"must be a mapping with exactly one key, the SAN type ({_SAN_TYPES}), "
            f"whose value is a regular expression; {found}"
        )
        return None
    ((kind, pattern),) = entry.items()
    if kind not in SAN_KINDS:
        close = difflib.get_close_matches(str(kind).lower(), SAN_KINDS, n=1, cutoff=0.6)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        ctx.add(f"unknown SAN type {kind!r}{hint}; the key must be one of {_SAN_TYPES}")
        return None
    where = ctx.child(kind)
    try:
        text = parse_str(pattern)
    except FieldError as exc:
        where.add(str(exc))
        return None
    try:
        re.compile(text)
    except re.error as exc:
        where.add(f"invalid regular expression: {exc}")
        return None
    return SanMatcher(kind, text)


def _parse_san_matchers(value: Any, ctx: Ctx) -> tuple[SanMatcher, ...]:
    if not isinstance(value, list):
        raise FieldError(
            f"expected a list of {{SAN type: regular expression}} mappings, got {got(value)}"
        )
    parsed = (_parse_san_matcher(entry, ctx.item(index)) for index, entry in enumerate(value))
    return tuple(matcher for matcher in parsed if matcher is not None)


DOWNSTREAM_MTLS_KEYS: tuple[Key, ...] = (
    source_key("ca", PemKind.CERT, check_ca_bundle),
    source_key("crl", PemKind.CRL, check_crl),
    Key("enforcement", plain(parse_enforcement)),
    Key("match_subject_alt_names", _parse_san_matchers),
    Key("max_verify_depth", plain(_parse_verify_depth)),
)


def _parse_downstream_mtls(value: Any, ctx: Ctx) -> DownstreamMTLS:
    given = read_object(value, DOWNSTREAM_MTLS_KEYS, ctx)
    return DownstreamMTLS(**build(given, DOWNSTREAM_MTLS_KEYS, ctx))


MTLS_KEYS: tuple[Key, ...] = (
    # Nested, so no environment variable: Vallum's variables are top-level names only.
    Key("downstream_mtls", _parse_downstream_mtls, env=False),
    source_key("client_ca", PemKind.CERT, check_ca_bundle),
)

# The settings that only shape how a CA's certificates are checked.
_NEEDS_CA = ("crl", "crl_file", "enforcement", "match_subject_alt_names", "max_verify_depth")


def _nested_names(given: Mapping[str, Given]) -> set[str]:
    """The keys set inside downstream_mtls, judged on what was given, not on what parsed."""
    entry = given.get("downstream_mtls")
    if entry is None or not isinstance(entry.value, Mapping):
        return set()
    return {name for name, value in entry.value.items() if value is not None}


def _legacy_ca(given: Mapping[str, Given]) -> Given | None:
    return given.get("client_ca") or given.get("client_ca_file")


def check_mtls(given: Mapping[str, Given], ctx: Ctx) -> None:
    legacy = _legacy_ca(given)
    if legacy is not None and {"ca", "ca_file"} & _nested_names(given):
        # Blame the old name: with two global CAs, which one verifies would be a guess.
        ctx.at(legacy.path).add(
            "set one of downstream_mtls.ca and client_ca, not both "
            "(downstream_mtls.ca is the current name; client_ca is Pomerium's older one)"
        )


def mtls_notices(config: Config, given: Mapping[str, Given]) -> list[str]:
    """Warnings about an accepted configuration, each led by the key path it is about."""
    notices: list[str] = []
    for name in ("client_ca", "client_ca_file"):
        if name in given:
            newer = "downstream_mtls.ca" + name.removeprefix("client_ca")
            notices.append(f"{given[name].path}: deprecated (Pomerium's older name); use {newer}")
    for index, route in enumerate(config.routes):
        source = route.tls_downstream_client_ca
        if source is None:
            continue
        name = "tls_downstream_client_ca" + ("_file" if source.path is not None else "")
        host = urlsplit(route.from_url).hostname or "this route's host"
        # Pomerium adds route CAs to the global bundle; Vallum asks per host instead.
        notices.append(
            f"routes[{index}].{name}: Pomerium's older per-route key (the newer key is the "
            f"global downstream_mtls.ca); Vallum keeps honouring it as this route's own "
            f"client CA (only {host} asks for certificates from it and accepts them)"
        )
    has_ca = (
        config.downstream_mtls.ca is not None
        or config.client_ca is not None
        or any(route.tls_downstream_client_ca is not None for route in config.routes)
    )
    if has_ca and config.insecure_server:
        # Behind a TLS-terminating balancer the proxy never sees a client certificate;
        # routes that need one then answer 495 to everyone (closed, not open).
        notices.append(
            "insecure_server: the proxy does not terminate TLS, so it cannot ask for "
            "client certificates; every route with a client CA will answer 495"
        )
    if not has_ca:
        nested = _nested_names(given)
        notices.extend(
            f"downstream_mtls.{name}: has no effect until a client CA is set "
            "(downstream_mtls.ca or downstream_mtls.ca_file)"
            for name in _NEEDS_CA
            if name in nested
        )
    return notices
