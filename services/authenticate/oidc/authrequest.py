"""The authorization request (OIDC Core section 3.1.2.1), with PKCE (RFC 7636 4.3)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from services.authenticate.oidc import pkce
from shared.config.signin import RESERVED_REQUEST_PARAMS

# Set here and nowhere else; configuration (which refuses them too) and the
# endpoint's own query cannot override them.
PROTOCOL_PARAMS = RESERVED_REQUEST_PARAMS


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """Where to send the browser, and the CSRF cookie to set on the way."""

    url: str
    # Already inside `url`; kept for logging its length and for tests.
    state: str = field(repr=False)
    csrf_cookie: str = field(repr=False)


def with_query(url: str, params: Sequence[tuple[str, str]]) -> str:
    """`url` with `params` appended to whatever query it already has."""
    parts = urlsplit(url)
    replaced = {name for name, _ in params}
    query = [
        (name, value)
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
        if name not in replaced
    ]
    # quote, not quote_plus: %20 between scopes reads the same to every server.
    encoded = urlencode([*query, *params], quote_via=quote)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, encoded, parts.fragment))


def authorization_url(
    endpoint: str,
    *,
    client_id: str,
    redirect_uri: str,
    scopes: Sequence[str],
    state: str,
    nonce: str,
    verifier: str,
    extra_params: Mapping[str, str] | None = None,
) -> str:
    extra = [(k, v) for k, v in (extra_params or {}).items() if k not in PROTOCOL_PARAMS]
    protocol = [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("scope", " ".join(scopes)),
        ("state", state),
        ("nonce", nonce),
        ("code_challenge", pkce.challenge(verifier)),
        ("code_challenge_method", pkce.METHOD),
    ]
    return with_query(endpoint, [*extra, *protocol])
