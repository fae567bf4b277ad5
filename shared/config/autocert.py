"""Autocert keys: certificates for route hosts from an ACME CA (RFC 8555).

Names and meanings are Pomerium's. Only what the configuration says lives here: which
CA, which account details, where the proxy keeps what it obtains. Ordering, renewal and
answering challenges are the proxy's job (services/proxy/autocert/).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from shared.config.errors import FieldError
from shared.config.fields import got, kind_of, parse_bool, parse_str
from shared.config.model import Config, is_ip_literal
from shared.config.mtls import check_ca_bundle
from shared.config.schema import Ctx, FileMode, Given, Key, plain, require_together, source_key
from shared.config.sources import PemKind, resolve_path
from shared.config.urls import valid_host
from shared.routing.authority import parse_from

# The HMAC key of external account binding (RFC 8555 section 7.3.4) signs the account
# key; fewer bytes than this is a truncated paste, not a key a CA would hand out.
EAB_MAC_KEY_MIN_BYTES = 16

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")
# A key id is an opaque ASCII token: printable, no spaces.
_KEY_ID = re.compile(r"[\x21-\x7e]+")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")


def _parse_dir(value: Any, ctx: Ctx) -> str:
    return resolve_path(value, ctx.base_dir, ctx.home)


def parse_acme_directory(value: Any) -> str:
    """An ACME directory URL, kept as given: the account the proxy registers belongs to
    this exact URL, so normalising it would orphan an existing account."""
    text = parse_str(value).strip()
    parts = urlsplit(text)
    try:
        host = parts.hostname
        parts.port  # noqa: B018 - urlsplit only checks the port when it is read
    except ValueError:
        raise FieldError(f"has an invalid port: {text!r}") from None
    # RFC 8555 section 6.1: every ACME request goes over HTTPS.
    if parts.scheme.lower() != "https" or not host or not valid_host(host):
        raise FieldError(
            "must be the https URL of an ACME directory, such as "
            f"https://acme.example.com/directory; got {text!r}"
        )
    if parts.username is not None or parts.password is not None:
        raise FieldError("must not contain credentials")
    if parts.fragment:
        raise FieldError(f"must not have a fragment, got {text!r}")
    return text


def parse_email(value: Any) -> str:
    text = parse_str(value).strip()
    if not _EMAIL.fullmatch(text):
        raise FieldError(f"must be an email address such as ops@example.com, got {got(value)}")
    return text


def parse_eab_key_id(value: Any) -> str:
    # YAML reads an all-digit key id as an integer; it is still the same identifier.
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    text = parse_str(value).strip()
    if not _KEY_ID.fullmatch(text):
        raise FieldError(f"must be printable ASCII without spaces, got {got(value)}")
    return text


def decode_eab_mac_key(text: str) -> bytes:
    """The HMAC key's bytes from its base64url text, padded or not (CAs hand out both).

    Messages never quote the text: it is a secret, and errors end up in logs.
    """
    compact = text.strip()
    if not compact:
        raise FieldError("must not be empty")
    if "+" in compact or "/" in compact:
        raise FieldError(
            "must be base64url (- and _ where standard base64 has + and /), as the CA issued it"
        )
    bare = compact.rstrip("=")
    if not _BASE64URL.fullmatch(compact) or len(bare) % 4 == 1:
        raise FieldError("not valid base64url")
    try:
        data = base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4))
    except (binascii.Error, ValueError):
        raise FieldError("not valid base64url") from None
    if len(data) < EAB_MAC_KEY_MIN_BYTES:
        raise FieldError(
            f"must decode to at least {EAB_MAC_KEY_MIN_BYTES} bytes, got {len(data)} "
            "(copy the whole MAC key the CA issued)"
        )
    return data


def parse_eab_mac_key(value: Any) -> str:
    if not isinstance(value, str):
        raise FieldError(f"expected a base64url string, got {kind_of(value)} (quote it)")
    decode_eab_mac_key(value)
    return value.strip()


def check_eab_mac_key(data: bytes) -> None:
    """The same check for the contents of autocert_eab_mac_key_file."""
    decode_eab_mac_key(data.decode("utf-8", "replace"))


AUTOCERT_KEYS: tuple[Key, ...] = (
    Key("autocert", plain(parse_bool)),
    Key("autocert_dir", _parse_dir),
    Key("autocert_ca", plain(parse_acme_directory)),
    Key("autocert_use_staging", plain(parse_bool)),
    Key("autocert_email", plain(parse_email)),
    Key("autocert_must_staple", plain(parse_bool)),
    Key("autocert_eab_key_id", plain(parse_eab_key_id)),
    Key(
        "autocert_eab_mac_key",
        plain(parse_eab_mac_key),
        file=FileMode.TEXT,
        check=check_eab_mac_key,
    ),
    source_key("autocert_trusted_ca", PemKind.CERT, check_ca_bundle),
)

# Everything but the switch itself: the keys that mean nothing while autocert is off.
_SETTINGS = tuple(name for key in AUTOCERT_KEYS for name in key.names() if name != "autocert")


def check_autocert(config: Config, given: Mapping[str, Given], ctx: Ctx) -> None:
    require_together(given, "autocert_eab_key_id", "autocert_eab_mac_key", ctx)
    switch = given.get("autocert")
    if config.autocert and config.insecure_server and switch is not None:
        # TLS-ALPN-01 is answered inside the TLS handshake (RFC 8737 section 3), and the
        # certificates obtained would have no listener to serve them.
        ctx.at(switch.path).add(
            "cannot be used with insecure_server: true (the proxy does not terminate TLS "
            "then, so it can neither answer the TLS-ALPN-01 challenge nor serve the "
            "certificates); let the load balancer in front obtain them instead"
        )


def autocert_notices(config: Config, given: Mapping[str, Given]) -> list[str]:
    """Warnings about an accepted configuration, each led by the key path it is about."""
    if not config.autocert:
        return [
            f"{given[name].path}: has no effect unless autocert: true"
            for name in _SETTINGS
            if name in given
        ]
    notices: list[str] = []
    staging = given.get("autocert_use_staging")
    if staging is not None and config.autocert_use_staging and config.autocert_ca is not None:
        notices.append(f"{staging.path}: has no effect when autocert_ca is set (autocert_ca wins)")
    switch = given.get("autocert")
    if switch is not None and config.http_redirect_addr is None:
        # RFC 8555 section 8.3: HTTP-01 is always fetched from port 80.
        notices.append(
            f"{switch.path}: only TLS-ALPN-01 can be answered; set http_redirect_addr "
            "(port 80) to allow HTTP-01 too"
        )
    for index, route in enumerate(config.routes):
        try:
            authority = parse_from(route.from_url)
        except ValueError:
            continue  # already refused by the route checks
        if authority.scheme != "https":
            continue
        if authority.is_wildcard:
            notices.append(
                f"routes[{index}].from: autocert cannot obtain a certificate for "
                f"{authority.host} (that needs the DNS-01 challenge); give it one in "
                "certificates"
            )
        elif is_ip_literal(authority.name):
            # Config.autocert_hosts leaves these out: orders name DNS identifiers only.
            notices.append(
                f"routes[{index}].from: autocert obtains certificates for DNS names, not "
                f"for the IP address {authority.name}; give it one in certificates"
            )
    return notices
