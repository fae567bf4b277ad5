"""The token endpoint (authorization code and refresh grants) and the userinfo endpoint.

Client authentication is client_secret_basic unless discovery says the provider does
not support it, then client_secret_post (OIDC Core section 9). Error answers become
IdPError with the OAuth error code (RFC 6749 section 5.2); server errors and network
faults become IdPUnavailable.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import quote_plus

import httpx

from services.authenticate.oidc.calls import DEFAULT_DEADLINE, Answer, call
from services.authenticate.oidc.discovery import ProviderMetadata
from services.authenticate.oidc.errors import IdPError, IdPUnavailable

BASIC = "client_secret_basic"
POST = "client_secret_post"

# What each grant's invalid_grant means, in words for the log and the error page.
_INVALID_GRANT = {
    "authorization_code": "authorization code invalid, expired or already used",
    "refresh_token": "refresh token invalid, expired or revoked",
}
# RFC 6749 section 5.2: error_description is printable ASCII; keep logs tidy anyway.
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
_MAX_DESCRIPTION = 200


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    client_id: str
    client_secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class TokenResponse:
    """RFC 6749 section 5.1. A refresh answer without refresh_token means: keep the old one."""

    access_token: str = field(repr=False)
    token_type: str
    id_token: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    expires_in: int | None = None
    scope: tuple[str, ...] | None = None
    raw: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), repr=False)

    @classmethod
    def from_answer(cls, data: Mapping[str, Any]) -> TokenResponse:
        access_token = data.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise IdPError("token response malformed", "no access_token")
        token_type = data.get("token_type", "Bearer")
        id_token = data.get("id_token")
        refresh_token = data.get("refresh_token")
        scope = data.get("scope")
        for name, value in (
            ("token_type", token_type),
            ("id_token", id_token),
            ("refresh_token", refresh_token),
            ("scope", scope),
        ):
            if value is not None and not isinstance(value, str):
                raise IdPError("token response malformed", f"{name} is not a string")
        return cls(
            access_token=access_token,
            token_type=str(token_type),
            id_token=id_token or None,
            refresh_token=refresh_token or None,
            expires_in=_expires_in(data.get("expires_in")),
            scope=tuple(scope.split()) if isinstance(scope, str) else None,
            raw=MappingProxyType(dict(data)),
        )

    def expires_at(self, now: float) -> float | None:
        return None if self.expires_in is None else now + self.expires_in


def _expires_in(value: Any) -> int | None:
    # Some providers send a numeric string; the meaning is not in doubt.
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if value is None:
        return None
    raise IdPError("token response malformed", "expires_in is not a number of seconds")


def auth_method(metadata: ProviderMetadata) -> str:
    supported = metadata.token_endpoint_auth_methods_supported
    if BASIC in supported:
        return BASIC
    if POST in supported:
        return POST
    raise IdPError(
        "no usable client authentication",
        f"the provider supports {', '.join(supported) or 'none'}; Vallum uses {BASIC} or {POST}",
    )


def _basic(credentials: ClientCredentials) -> str:
    # RFC 6749 section 2.3.1: both parts are form-urlencoded before Basic encoding.
    pair = f"{quote_plus(credentials.client_id)}:{quote_plus(credentials.client_secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


def _clean(text: Any) -> str:
    if not isinstance(text, str):
        return ""
    return _UNPRINTABLE.sub("?", text)[:_MAX_DESCRIPTION]


def _refusal(answer: Answer, grant: str) -> IdPError:
    if answer.status >= 500:
        return IdPUnavailable("token endpoint failed", f"HTTP {answer.status}")
    try:
        data = answer.json_object("token endpoint")
    except IdPError:
        data = {}
    error = _clean(data.get("error")) or None
    description = _clean(data.get("error_description"))
    if error == "invalid_grant":
        reason = _INVALID_GRANT.get(grant, "grant refused")
    elif error == "invalid_client":
        reason = "client authentication failed (check idp_client_id and idp_client_secret)"
    elif error is not None:
        reason = f"token endpoint refused the request: {error}"
    else:
        reason = f"token endpoint answered HTTP {answer.status}"
    detail = f"{error}: {description}" if error and description else error or description
    return IdPError(reason, detail, error=error, status=answer.status)


async def _token_request(
    http: httpx.AsyncClient,
    metadata: ProviderMetadata,
    credentials: ClientCredentials,
    form: dict[str, str],
    *,
    deadline: float,
) -> TokenResponse:
    headers = {"accept": "application/json"}
    if auth_method(metadata) == BASIC:
        headers["authorization"] = _basic(credentials)
    else:
        form = {
            **form,
            "client_id": credentials.client_id,
            "client_secret": credentials.client_secret,
        }
    answer = await call(
        http,
        "POST",
        metadata.token_endpoint,
        what="token endpoint",
        deadline=deadline,
        headers=headers,
        form=form,
    )
    if not answer.ok:
        raise _refusal(answer, form["grant_type"])
    return TokenResponse.from_answer(answer.json_object("token endpoint"))


async def exchange_code(
    http: httpx.AsyncClient,
    metadata: ProviderMetadata,
    credentials: ClientCredentials,
    *,
    code: str,
    verifier: str,
    redirect_uri: str,
    deadline: float = DEFAULT_DEADLINE,
) -> TokenResponse:
    """OIDC Core section 3.1.3.1, with the PKCE verifier (RFC 7636 section 4.5)."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
    }
    tokens = await _token_request(http, metadata, credentials, form, deadline=deadline)
    if tokens.id_token is None:
        # Section 3.1.3.3: an OpenID Connect code exchange always returns one.
        raise IdPError("token response has no id_token", "is openid in idp_scopes?")
    return tokens


async def refresh(
    http: httpx.AsyncClient,
    metadata: ProviderMetadata,
    credentials: ClientCredentials,
    refresh_token: str,
    *,
    deadline: float = DEFAULT_DEADLINE,
) -> TokenResponse:
    """RFC 6749 section 6 (OIDC Core section 12). Scope is omitted: the original one stays."""
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return await _token_request(http, metadata, credentials, form, deadline=deadline)


async def userinfo(
    http: httpx.AsyncClient,
    metadata: ProviderMetadata,
    access_token: str,
    *,
    expected_sub: str | None = None,
    deadline: float = DEFAULT_DEADLINE,
) -> dict[str, Any]:
    """OIDC Core section 5.3. With `expected_sub`, the answer must be about that user
    (section 5.3.2: otherwise it must not be used)."""
    if metadata.userinfo_endpoint is None:
        raise IdPError("provider has no userinfo endpoint")
    answer = await call(
        http,
        "GET",
        metadata.userinfo_endpoint,
        what="userinfo",
        deadline=deadline,
        headers={"authorization": f"Bearer {access_token}", "accept": "application/json"},
    )
    if answer.status >= 500:
        raise IdPUnavailable("userinfo failed", f"HTTP {answer.status}")
    if answer.status == 401:
        raise IdPError("userinfo refused the access token", "HTTP 401", status=401)
    if not answer.ok:
        raise IdPError("userinfo failed", f"HTTP {answer.status}", status=answer.status)
    if answer.content_type == "application/jwt":
        raise IdPError("signed userinfo answers are not supported", "configure JSON userinfo")
    claims = answer.json_object("userinfo")
    sub = claims.get("sub")
    if not isinstance(sub, str) or (expected_sub is not None and sub != expected_sub):
        raise IdPError("userinfo sub mismatch", "the answer is about another user")
    return claims


# Claims that describe the ID token itself; userinfo must not replace them.
_TOKEN_CLAIMS = frozenset(
    {
        "iss",
        "sub",
        "aud",
        "azp",
        "exp",
        "iat",
        "nbf",
        "nonce",
        "auth_time",
        "at_hash",
        "c_hash",
        "acr",
        "amr",
        "sid",
        "jti",
    }
)


def merge_userinfo(id_claims: Mapping[str, Any], info: Mapping[str, Any]) -> dict[str, Any]:
    """The ID token's claims, with userinfo's profile claims (e.g. groups) added or updated."""
    merged = dict(id_claims)
    merged.update({name: value for name, value in info.items() if name not in _TOKEN_CLAIMS})
    return merged
