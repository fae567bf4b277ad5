"""The verifying sidecar's keys (Vallum's own; Pomerium has none).

The sidecar sits in front of one app that cannot verify Vallum's assertion itself and
forwards only requests that prove they come from Vallum: a client certificate from a
CA (mutual TLS), a valid `X-Pomerium-JWT-Assertion`, or both. Only what the
configuration says lives here; the listener and the checks are services/sidecar/.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from shared.config.errors import FieldError
from shared.config.fields import got, parse_header_name, parse_str, parse_str_list
from shared.config.model import SIDECAR_SERVICE, Config
from shared.config.mtls import check_ca_bundle
from shared.config.schema import Ctx, Given, Key, is_set, plain, source_key
from shared.config.sources import PemKind
from shared.config.urls import parse_address, valid_host

# Headers the sidecar itself owns or that frame the message: setting one from a claim
# would let a token's contents change how the app parses the request.
_RESERVED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer"}
)


# The hosts the JWT verifier fetches keys from over plain http (shared/verify/jwks.py).
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def _http_url(value: Any, *, https_only: bool) -> str:
    text = parse_str(value).strip()
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    try:
        host = parts.hostname
        parts.port  # noqa: B018 - urlsplit only checks the port when it is read
    except ValueError:
        raise FieldError(f"has an invalid port: {text!r}") from None
    if scheme not in ("http", "https") or not host or not valid_host(host):
        raise FieldError(f"must be an absolute http or https URL, got {text!r}")
    if parts.username is not None or parts.password is not None:
        raise FieldError("must not contain credentials")
    if parts.fragment:
        raise FieldError(f"must not have a fragment, got {text!r}")
    if https_only and scheme == "http" and host not in _LOOPBACK:
        # The keys that decide who gets in must not travel where anyone can swap them.
        raise FieldError(
            f"must use https (http is only allowed for 127.0.0.1, ::1 or localhost), got {text!r}"
        )
    return text


def parse_sidecar_upstream(value: Any) -> str:
    """The app's base URL; the request's own path and query are sent as they came."""
    text = _http_url(value, https_only=False)
    parts = urlsplit(text)
    if parts.path not in ("", "/") or parts.query:
        raise FieldError(f"must not have a path or query (requests keep their own), got {text!r}")
    return text.rstrip("/")


def parse_jwks_url(value: Any) -> str:
    return _http_url(value, https_only=True)


def parse_client_names(value: Any) -> tuple[str, ...]:
    names = parse_str_list(value)
    if any(not name.strip() for name in names):
        raise FieldError("names must not be empty")
    return tuple(dict.fromkeys(name.strip() for name in names))


def parse_identity_headers(value: Any) -> tuple[tuple[str, str], ...]:
    """Header name → claim name, in the order given."""
    if not isinstance(value, Mapping):
        raise FieldError(
            f"expected a mapping of header name to claim name (X-Remote-User: email), "
            f"got {got(value)}"
        )
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for header, claim in value.items():
        name = parse_header_name(header)
        lowered = name.lower()
        if lowered.startswith("x-pomerium-"):
            raise FieldError(f"{name}: X-Pomerium-* headers are Vallum's own; choose another name")
        if lowered in _RESERVED_HEADERS:
            raise FieldError(f"{name}: cannot be set from a claim")
        if lowered in seen:
            raise FieldError(f"header {name} is named twice")
        seen.add(lowered)
        if not isinstance(claim, str) or not claim.strip():
            raise FieldError(f"the claim for {name} must be a claim name, got {got(claim)}")
        pairs.append((name, claim.strip()))
    return tuple(pairs)


def _parse_str(value: Any) -> str:
    text = parse_str(value).strip()
    if not text:
        raise FieldError("must not be empty")
    return text


SIDECAR_KEYS: tuple[Key, ...] = (
    Key("sidecar_address", plain(parse_address)),
    Key("sidecar_upstream", plain(parse_sidecar_upstream)),
    source_key("sidecar_certificate", PemKind.CERT),
    source_key("sidecar_certificate_key", PemKind.KEY),
    source_key("sidecar_client_ca", PemKind.CERT, check_ca_bundle),
    Key("sidecar_allowed_client_names", plain(parse_client_names)),
    Key("sidecar_jwks_url", plain(parse_jwks_url)),
    Key("sidecar_jwt_issuer", plain(_parse_str)),
    Key("sidecar_jwt_audience", plain(_parse_str)),
    source_key("sidecar_jwks_ca", PemKind.CERT, check_ca_bundle),
    Key("sidecar_identity_headers", plain(parse_identity_headers), env=False),
)

_NAMES = tuple(name for key in SIDECAR_KEYS for name in key.names())


def check_sidecar(config: Config, given: Mapping[str, Given], ctx: Ctx) -> None:
    if SIDECAR_SERVICE not in config.services:
        return
    for name in ("sidecar_upstream", "sidecar_certificate", "sidecar_certificate_key"):
        if not is_set(given, name):
            form = f" or {name}_file" if name != "sidecar_upstream" else ""
            ctx.child(name).add(f"required to run the sidecar (set {name}{form})")
    has_ca = is_set(given, "sidecar_client_ca")
    has_jwks = is_set(given, "sidecar_jwks_url")
    if not has_ca and not has_jwks:
        # A sidecar that checks nothing would be an open door to the app behind it.
        ctx.child("sidecar_client_ca").add(
            "the sidecar needs something to check: set sidecar_client_ca (mutual TLS) "
            "and/or sidecar_jwks_url (the JWT assertion)"
        )
    if has_jwks:
        for name in ("sidecar_jwt_issuer", "sidecar_jwt_audience"):
            if name not in given:
                ctx.child(name).add(
                    "required when sidecar_jwks_url is set (Vallum's assertion has the "
                    "route host as both)"
                )
    else:
        for name in ("sidecar_jwt_issuer", "sidecar_jwt_audience", "sidecar_identity_headers"):
            if name in given:
                ctx.at(given[name].path).add("requires sidecar_jwks_url")
        if is_set(given, "sidecar_jwks_ca"):
            entry = given.get("sidecar_jwks_ca") or given["sidecar_jwks_ca_file"]
            ctx.at(entry.path).add("requires sidecar_jwks_url")
    names = given.get("sidecar_allowed_client_names")
    if names is not None and not has_ca:
        ctx.at(names.path).add("requires sidecar_client_ca (names are read from its certificates)")


def sidecar_notices(config: Config, given: Mapping[str, Given]) -> list[str]:
    if SIDECAR_SERVICE in config.services:
        return []
    return [
        f"{given[name].path}: has no effect unless services is sidecar"
        for name in _NAMES
        if name in given
    ]
