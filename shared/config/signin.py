"""The keys of sign-in: the OpenID Connect provider and the session cookie.

Names and meanings are Pomerium's. `idp_provider` accepts only the Pomerium presets
that are plain OpenID Connect (a preset only supplies a default issuer URL here);
providers that are OAuth 2.0 without OIDC, such as github, are refused by name rather
than half-supported. `idp_ca` / `idp_ca_file` is Vallum's own: extra CAs to trust for
the IdP's HTTPS, for private IdPs and the demo IdP.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from shared.config.errors import FieldError
from shared.config.fields import got, kind_of, parse_bool, parse_duration, parse_str
from shared.config.model import Config
from shared.config.schema import Ctx, Given, Key, is_set, plain, source_key, text_secret_key
from shared.config.sources import PemKind
from shared.config.urls import valid_host

# Pomerium presets that are plain OIDC, with the issuer each one implies (None: the
# issuer depends on the tenant, so idp_provider_url must be given).
PROVIDERS: Mapping[str, str | None] = MappingProxyType(
    {
        "oidc": None,
        "auth0": None,
        "azure": None,
        "cognito": None,
        "gitlab": "https://gitlab.com",
        "google": "https://accounts.google.com",
        "keycloak": None,
        "okta": None,
        "onelogin": None,
        "ping": None,
    }
)

# Parameters of the authorization request that Vallum sets itself: letting the
# configuration override state, nonce or the PKCE challenge would undo their purpose.
RESERVED_REQUEST_PARAMS = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
    }
)

SAME_SITE = ("lax", "strict", "none")

# RFC 6749 appendix A.4: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
# RFC 6265 section 4.1.1: cookie-name is an RFC 2616 token.
_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 6749 appendix A.1: client_id = *VSCHAR; Vallum also refuses an empty one.
_VSCHAR = re.compile(r"[\x20-\x7e]+")


def parse_idp_provider(value: Any) -> str:
    text = parse_str(value).strip()
    if text not in PROVIDERS:
        accepted = ", ".join(PROVIDERS)
        raise FieldError(
            f"unknown identity provider {text!r} (accepted: {accepted}; any other "
            "OpenID Connect provider works as oidc with idp_provider_url)"
        )
    return text


def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_issuer_url(value: Any) -> str:
    """The issuer, kept exactly as given: discovery must echo it byte for byte (OIDC
    Discovery section 4.3), so normalising it here would only hide a mismatch."""
    text = parse_str(value).strip()
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    try:
        host = parts.hostname
        parts.port  # noqa: B018 - urlsplit only checks the port when it is read
    except ValueError:
        raise FieldError(f"has an invalid port: {text!r}") from None
    if scheme not in ("https", "http") or not host or not valid_host(host):
        raise FieldError(
            f"must be an absolute https URL such as https://idp.example.com, got {text!r}"
        )
    # OIDC Core section 2 (iss): https, no query, no fragment. Plain http only for a
    # provider on this machine, where there is no network to protect.
    if scheme == "http" and not _loopback(host):
        raise FieldError(f"must use https (http is only allowed for localhost), got {text!r}")
    if parts.query or parts.fragment:
        raise FieldError(f"must not have a query or fragment (OIDC Core section 2), got {text!r}")
    if parts.username is not None or parts.password is not None:
        raise FieldError("must not contain credentials")
    return text


def parse_client_id(value: Any) -> str:
    # YAML reads an all-digit client id as an integer; it is still the same identifier.
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    text = parse_str(value).strip()
    if not _VSCHAR.fullmatch(text):
        raise FieldError(f"must be non-empty printable ASCII, got {got(value)}")
    return text


def parse_client_secret(value: Any) -> str:
    # Never quote the value: it is a secret and messages end up in logs.
    if not isinstance(value, str):
        raise FieldError(f"expected a string, got {kind_of(value)} (quote it)")
    if not value.strip():
        raise FieldError("must not be empty")
    return value.strip()


def parse_scopes(value: Any) -> tuple[str, ...]:
    """A list, or a string split on commas and spaces (the environment form)."""
    if isinstance(value, str):
        items: list[Any] = [part for part in re.split(r"[,\s]+", value) if part]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise FieldError(f"expected a list of scopes, got {got(value)}")
    scopes: list[str] = []
    for index, item in enumerate(items):
        if not isinstance(item, str) or not _SCOPE_TOKEN.fullmatch(item.strip()):
            raise FieldError(f"item {index} is not a scope token: {got(item)}")
        scopes.append(item.strip())
    if "openid" not in scopes:
        raise FieldError(
            "must include openid, or the provider returns no ID token (OIDC Core section 3.1.2.1)"
        )
    return tuple(dict.fromkeys(scopes))


def parse_request_params(value: Any) -> Mapping[str, str]:
    """A mapping of parameter to value; a JSON object is accepted for the environment."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise FieldError("expected a mapping (or, as a string, a JSON object)") from None
    if not isinstance(value, Mapping):
        raise FieldError(f"expected a mapping of parameter name to value, got {got(value)}")
    out: dict[str, str] = {}
    for name, param in value.items():
        if not isinstance(name, str) or not name.strip():
            raise FieldError(f"parameter names must be non-empty strings, got {got(name)}")
        if name in RESERVED_REQUEST_PARAMS:
            hint = " (use idp_scopes)" if name == "scope" else ""
            raise FieldError(f"{name} is set by Vallum itself and cannot be overridden{hint}")
        if isinstance(param, bool) or not isinstance(param, str | int | float):
            # `prompt: yes` reads as a boolean in YAML; guessing its spelling would be wrong.
            raise FieldError(f"value of {name} must be a string, got {got(param)} (quote it)")
        out[name] = str(param)
    return MappingProxyType(out)


def parse_cookie_name(value: Any) -> str:
    text = parse_str(value)
    if not _COOKIE_NAME.fullmatch(text):
        raise FieldError(f"must be a cookie name token (RFC 6265 section 4.1.1), got {got(value)}")
    return text


def parse_cookie_domain(value: Any) -> str:
    text = parse_str(value).strip().lower()
    # RFC 6265 section 5.2.3: a leading dot is ignored by browsers; drop it here too.
    bare = text.removeprefix(".")
    if not valid_host(bare):
        raise FieldError(f"must be a domain name such as example.com, got {got(value)}")
    return bare


def parse_cookie_expire(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise FieldError("must be longer than 0s (the session cookie lives this long)")
    return seconds


def parse_same_site(value: Any) -> str:
    text = parse_str(value).strip().lower()
    if text not in SAME_SITE:
        raise FieldError(f"must be one of {', '.join(SAME_SITE)}, got {got(value)}")
    return text


SIGN_IN_KEYS: tuple[Key, ...] = (
    Key("idp_provider", plain(parse_idp_provider)),
    Key("idp_provider_url", plain(parse_issuer_url)),
    Key("idp_client_id", plain(parse_client_id)),
    text_secret_key("idp_client_secret", parse_client_secret),
    Key("idp_scopes", plain(parse_scopes)),
    Key("idp_request_params", plain(parse_request_params)),
    source_key("idp_ca", PemKind.CERT),
    Key("cookie_name", plain(parse_cookie_name)),
    Key("cookie_domain", plain(parse_cookie_domain)),
    Key("cookie_expire", plain(parse_cookie_expire)),
    Key("cookie_same_site", plain(parse_same_site)),
    Key("cookie_http_only", plain(parse_bool)),
    Key("cookie_secure", plain(parse_bool)),
)


def check_sign_in(config: Config, given: Mapping[str, Given], ctx: Ctx) -> Config:
    """Checks across keys; returns the config with a preset's default issuer filled in."""
    _check_cookie(config, ctx)
    if config.idp_provider_url is None and PROVIDERS.get(config.idp_provider):
        config = replace(config, idp_provider_url=PROVIDERS[config.idp_provider])
    if "authenticate" not in config.services:
        return config
    if config.idp_provider_url is None:
        named = given.get("idp_provider")
        # A provider name that failed to parse has already been reported.
        if named is not None and all(p.path != named.path for p in ctx.problems):
            ctx.child("idp_provider_url").add(
                f"required when idp_provider is {config.idp_provider} (the issuer URL)"
            )
        return config
    why = "required when idp_provider_url is set"
    if not is_set(given, "idp_client_id"):
        ctx.child("idp_client_id").add(f"{why} (the client id the IdP issued to Vallum)")
    if not is_set(given, "idp_client_secret"):
        ctx.child("idp_client_secret").add(
            f"{why} (set idp_client_secret or idp_client_secret_file)"
        )
    return config


def _check_cookie(config: Config, ctx: Ctx) -> None:
    if config.cookie_same_site == "none" and not config.cookie_secure:
        ctx.child("cookie_same_site").add(
            "none requires cookie_secure: true (browsers drop SameSite=None cookies without Secure)"
        )
    # RFC 6265bis section 4.1.3: browsers refuse prefixed cookies that break these rules.
    name = config.cookie_name
    if name.startswith(("__Secure-", "__Host-")) and not config.cookie_secure:
        ctx.child("cookie_name").add(f"a {name.split('-')[0]}- cookie requires cookie_secure: true")
    if name.startswith("__Host-") and config.cookie_domain is not None:
        ctx.child("cookie_name").add("a __Host- cookie must not have a cookie_domain")
