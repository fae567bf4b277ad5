"""The demo IdP's authorization server: requests, codes, PKCE, tokens, sessions.

DEVELOPMENT ONLY. Everything lives in this object's memory and dies with the process.
Pure code: no I/O; the clock and the random source are arguments, so unit tests can
step time. Endpoints (app.py) only translate HTTP to these calls and back.

Followed: RFC 6749 (OAuth 2.0) sections 3.1.2, 4.1 and 6, RFC 7636 (PKCE, S256 only,
always required), RFC 9207 (`iss` in the authorization response), RFC 9700 section
4.14.2 (refresh tokens rotate; a replayed one ends its sign-in), OpenID Connect Core
1.0 sections 3.1 and 12, and RP-Initiated Logout 1.0.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlencode

from services.demo_idp.config import DemoIdPConfig, DemoUser
from services.demo_idp.id_token import IdTokenSigner, at_hash
from shared.jwt.verify import JWTVerifyError, verify

# RFC 7636 section 4.1: 43 to 128 unreserved characters.
_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
_CHALLENGE = re.compile(r"^[A-Za-z0-9\-_]{43}$")


class OAuthError(Exception):
    """An error the token or userinfo endpoint answers as RFC 6749 section 5.2 JSON."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status


class RequestRejected(Exception):
    """An authorization request that must not redirect (unknown client or redirect_uri:
    RFC 6749 section 4.1.2.1); shown to the user as a page."""


class RedirectError(Exception):
    """An authorization error reported to the client at its (verified) redirect_uri."""

    def __init__(self, redirect_uri: str, error: str, description: str, state: str | None):
        super().__init__(f"{error}: {description}")
        self.location = with_query(
            redirect_uri, {"error": error, "error_description": description, "state": state}
        )


def with_query(url: str, params: Mapping[str, str | None]) -> str:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"{url}{'&' if '?' in url else '?'}{query}"


def s256(verifier: str) -> str:
    """RFC 7636 section 4.2: BASE64URL(SHA256(ASCII(code_verifier)))."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def pkce_matches(verifier: str, challenge: str) -> bool:
    """RFC 7636 section 4.6, S256 only; a malformed verifier never matches."""
    if not _VERIFIER.match(verifier):
        return False
    return hmac.compare_digest(s256(verifier), challenge)


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """client_id and secret from `Authorization: Basic` (RFC 6749 section 2.3.1: each
    form-urlencoded before base64), or None when the header is not Basic."""
    if header is None or header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        return None
    return unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """A checked authorization request (RFC 6749 section 4.1.1 + PKCE + OIDC nonce)."""

    client_id: str
    redirect_uri: str
    scope: tuple[str, ...]
    state: str | None
    nonce: str | None
    code_challenge: str


@dataclass(slots=True)
class SignIn:
    """One successful login: codes, access and refresh tokens all hang off it (`sid`)."""

    sid: str
    user: DemoUser
    request: AuthorizationRequest
    auth_time: int
    ended: bool = False


@dataclass(slots=True)
class _Code:
    sign_in: SignIn
    expires: float
    used: bool = False


@dataclass(slots=True)
class _Token:
    sign_in: SignIn
    expires: float
    used: bool = False


@dataclass(frozen=True, slots=True)
class Tokens:
    """A token response (RFC 6749 section 5.1, OIDC Core section 3.1.3.3)."""

    access_token: str
    expires_in: int
    id_token: str
    refresh_token: str
    scope: str

    def as_json(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "id_token": self.id_token,
            "refresh_token": self.refresh_token,
            "scope": self.scope,
        }


@dataclass
class AuthorizationServer:
    config: DemoIdPConfig
    signer: IdTokenSigner = field(default_factory=IdTokenSigner)
    now: Callable[[], float] = time.time
    token: Callable[[], str] = lambda: secrets.token_urlsafe(32)
    _pending: dict[str, tuple[AuthorizationRequest, float]] = field(default_factory=dict)
    _codes: dict[str, _Code] = field(default_factory=dict)
    _access: dict[str, _Token] = field(default_factory=dict)
    _refresh: dict[str, _Token] = field(default_factory=dict)

    # -- /authorize -------------------------------------------------------------

    def check_request(self, params: Mapping[str, str]) -> AuthorizationRequest:
        """Validate an authorization request. Unknown client or redirect_uri raise
        RequestRejected (never redirect there); other faults raise RedirectError."""
        if params.get("client_id") != self.config.client_id:
            raise RequestRejected(f"unknown client_id {params.get('client_id')!r}")
        redirect_uri = params.get("redirect_uri", "")
        # Exact string match (RFC 9700 section 2.1): no prefix, no normalisation.
        if redirect_uri not in self.config.redirect_uris:
            raise RequestRejected(f"redirect_uri {redirect_uri!r} is not registered")
        state = params.get("state")

        def fail(error: str, description: str) -> RedirectError:
            return RedirectError(redirect_uri, error, description, state)

        if params.get("response_type") != "code":
            raise fail("unsupported_response_type", "only response_type=code is supported")
        requested = params.get("scope", "").split()
        if "openid" not in requested:
            raise fail("invalid_scope", "the openid scope is required")
        challenge = params.get("code_challenge", "")
        if params.get("code_challenge_method") != "S256" or not _CHALLENGE.match(challenge):
            raise fail("invalid_request", "PKCE is required: code_challenge with method S256")
        scope = tuple(s for s in dict.fromkeys(requested) if s in self.config.scopes)
        return AuthorizationRequest(
            self.config.client_id, redirect_uri, scope, state, params.get("nonce"), challenge
        )

    def hold(self, request: AuthorizationRequest) -> str:
        """Keep a checked request while the login page is shown; returns its id."""
        self._expire()
        request_id = self.token()
        self._pending[request_id] = (request, self.now() + self.config.login_page_ttl)
        return request_id

    def held(self, request_id: str) -> AuthorizationRequest:
        entry = self._pending.get(request_id)
        if entry is None or entry[1] <= self.now():
            raise RequestRejected("this sign-in page has expired; start again from the app")
        return entry[0]

    def log_in(self, request_id: str, login: str, password: str) -> str | None:
        """The redirect carrying a new code, or None for a wrong login or password."""
        request = self.held(request_id)
        user = self.config.user(login)
        if user is None or not hmac.compare_digest(user.password.encode(), password.encode()):
            return None
        del self._pending[request_id]
        sign_in = SignIn(self.token(), user, request, int(self.now()))
        code = self.token()
        self._codes[code] = _Code(sign_in, self.now() + self.config.code_ttl)
        params = {"code": code, "state": request.state, "iss": self.config.issuer_url}
        return with_query(request.redirect_uri, params)

    # -- /token -----------------------------------------------------------------

    def authenticate_client(self, authorization: str | None, form: Mapping[str, str]) -> None:
        """client_secret_basic, or client_secret_post (RFC 6749 section 2.3.1)."""
        basic = basic_credentials(authorization)
        if basic is None and "client_secret" in form:
            basic = (form.get("client_id", ""), form["client_secret"])
        if basic is None:
            raise OAuthError("invalid_client", "client authentication is required", 401)
        client_id, secret = basic
        if client_id != self.config.client_id or not hmac.compare_digest(
            secret.encode(), self.config.client_secret.encode()
        ):
            raise OAuthError("invalid_client", "unknown client or wrong secret", 401)
        if form.get("client_id", client_id) != client_id:
            raise OAuthError("invalid_request", "client_id does not match the authentication")

    def exchange_code(self, form: Mapping[str, str]) -> Tokens:
        """RFC 6749 section 4.1.3, with the PKCE check of RFC 7636 section 4.6."""
        code = self._codes.get(form.get("code", ""))
        if code is None or code.expires <= self.now():
            raise OAuthError("invalid_grant", "unknown or expired authorization code")
        if code.used:
            # Section 4.1.2: a replayed code revokes what it was exchanged for.
            code.sign_in.ended = True
            raise OAuthError("invalid_grant", "authorization code already used")
        code.used = True
        request = code.sign_in.request
        if form.get("redirect_uri") != request.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri differs from the authorization request")
        if not pkce_matches(form.get("code_verifier", ""), request.code_challenge):
            raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
        return self._issue(code.sign_in, nonce=request.nonce)

    def refresh(self, form: Mapping[str, str]) -> Tokens:
        """RFC 6749 section 6; the refresh token rotates, a replay ends the sign-in."""
        token = self._refresh.get(form.get("refresh_token", ""))
        if token is None or token.expires <= self.now() or token.sign_in.ended:
            raise OAuthError("invalid_grant", "unknown, expired or revoked refresh token")
        if token.used:
            token.sign_in.ended = True
            raise OAuthError("invalid_grant", "refresh token already used; sign in again")
        token.used = True
        # OIDC Core section 12.2: same subject and auth_time, no nonce.
        return self._issue(token.sign_in, nonce=None)

    def _issue(self, sign_in: SignIn, *, nonce: str | None) -> Tokens:
        self._expire()
        now = self.now()
        access, refresh = self.token(), self.token()
        self._access[access] = _Token(sign_in, now + self.config.access_token_ttl)
        self._refresh[refresh] = _Token(sign_in, now + self.config.refresh_token_ttl)
        claims: dict[str, Any] = {
            "iss": self.config.issuer_url,
            **sign_in.user.claims(),
            "aud": sign_in.request.client_id,
            "azp": sign_in.request.client_id,
            "iat": int(now),
            "exp": int(now) + self.config.id_token_ttl,
            "auth_time": sign_in.auth_time,
            "sid": sign_in.sid,
            "at_hash": at_hash(access),
        }
        if nonce is not None:
            claims["nonce"] = nonce
        return Tokens(
            access_token=access,
            expires_in=self.config.access_token_ttl,
            id_token=self.signer.sign(claims),
            refresh_token=refresh,
            scope=" ".join(sign_in.request.scope),
        )

    # -- /userinfo, /end_session ------------------------------------------------

    def userinfo(self, access_token: str) -> dict[str, object]:
        """OIDC Core section 5.3; errors as RFC 6750 section 3.1."""
        token = self._access.get(access_token)
        if token is None or token.expires <= self.now() or token.sign_in.ended:
            raise OAuthError("invalid_token", "unknown, expired or revoked access token", 401)
        return token.sign_in.user.claims()

    def end_session(self, params: Mapping[str, str]) -> str | None:
        """RP-Initiated Logout 1.0 section 2-3: end the sign-in named by id_token_hint
        (its tokens stop working); redirect only to a registered post-logout URI."""
        hint = params.get("id_token_hint")
        sid = self._sid_of(hint) if hint else None
        if sid is not None:
            for token in (*self._refresh.values(), *self._access.values()):
                if token.sign_in.sid == sid:
                    token.sign_in.ended = True
        target = params.get("post_logout_redirect_uri")
        if target is None:
            return None
        if target not in self.config.post_logout_redirect_uris:
            raise RequestRejected(f"post_logout_redirect_uri {target!r} is not registered")
        return with_query(target, {"state": params.get("state")})

    def _sid_of(self, id_token: str) -> str | None:
        """The sid of an ID token this server signed. Expired ones count too (section 2),
        up to a refresh token's lifetime: an older sign-in has nothing left to end."""
        try:
            claims = verify(
                id_token,
                self.signer.jwks(),
                issuer=self.config.issuer_url,
                audience=self.config.client_id,
                now=self.now(),
                leeway=self.config.refresh_token_ttl,
            )
        except JWTVerifyError:
            raise RequestRejected("id_token_hint is not an ID token from this server") from None
        sid = claims.get("sid")
        return sid if isinstance(sid, str) else None

    def _expire(self) -> None:
        """Drop what has expired; the demo's memory stays small."""
        now = self.now()
        self._pending = {k: v for k, v in self._pending.items() if v[1] > now}
        self._codes = {k: v for k, v in self._codes.items() if v.expires > now}
        self._access = {k: v for k, v in self._access.items() if v.expires > now}
        self._refresh = {k: v for k, v in self._refresh.items() if v.expires > now}
