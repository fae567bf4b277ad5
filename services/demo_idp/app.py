"""The demo IdP's HTTP endpoints: Starlette translating requests to AuthorizationServer.

DEVELOPMENT ONLY. Not on Vallum's hot path, so a framework per request is fine here.
Endpoint paths hang off the issuer's path, so an issuer such as
`https://idp.localhost:5446` serves `/authorize`, `/token`, and so on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from services.demo_idp.authorization import (
    AuthorizationServer,
    OAuthError,
    RedirectError,
    RequestRejected,
)
from services.demo_idp.pages import error_page, login_page, signed_out_page

# RFC 6749 section 5.1: token responses must not be cached; nor should our pages.
NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}
MAX_FORM = 64 * 1024

CLAIMS_SUPPORTED = [
    "iss",
    "aud",
    "azp",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "sid",
    "at_hash",
    "sub",
    "email",
    "email_verified",
    "name",
    "preferred_username",
    "groups",
]


def discovery(server: AuthorizationServer) -> dict[str, Any]:
    """OpenID Connect Discovery 1.0 section 3."""
    issuer = server.config.issuer_url
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "userinfo_endpoint": f"{issuer}/userinfo",
        "jwks_uri": f"{issuer}/jwks",
        "end_session_endpoint": f"{issuer}/end_session",
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [server.signer.alg],
        "scopes_supported": list(server.config.scopes),
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": CLAIMS_SUPPORTED,
        "authorization_response_iss_parameter_supported": True,
    }


def oauth_error(error: OAuthError) -> JSONResponse:
    headers = dict(NO_STORE)
    if error.status == 401:
        # RFC 6749 section 5.2 (invalid_client) and RFC 6750 section 3 (invalid_token).
        scheme = "Basic" if error.error == "invalid_client" else "Bearer"
        headers["www-authenticate"] = f'{scheme} error="{error.error}"'
    body = {"error": error.error, "error_description": error.description}
    return JSONResponse(body, status_code=error.status, headers=headers)


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=NO_STORE)


def _redirect(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303, headers=NO_STORE)


async def _form(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body, the only form OAuth uses (RFC 6749
    section 3.2); parsed here so the demo needs no multipart parser."""
    body = await request.body()
    if len(body) > MAX_FORM:
        raise OAuthError("invalid_request", "request body too large")
    # A repeated parameter is an error (RFC 6749 section 3.1); the first one wins here.
    form: dict[str, str] = {}
    for key, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        form.setdefault(key, value)
    return form


def build_app(server: AuthorizationServer) -> Starlette:
    prefix = urlsplit(server.config.issuer_url).path
    document = discovery(server)

    async def configuration(request: Request) -> Response:
        return JSONResponse(document)

    async def jwks(request: Request) -> Response:
        return JSONResponse(server.signer.jwks())

    # OAuthError answers as JSON and RequestRejected as a page: see the handlers below.
    async def authorize(request: Request) -> Response:
        action = f"{prefix}/authorize"
        if request.method == "GET":
            try:
                held = server.check_request(request.query_params)
            except RedirectError as e:
                return _redirect(e.location)
            request_id = server.hold(held)
            return _html(login_page(action, request_id, held.client_id, server.config.users))
        form = await _form(request)
        request_id = form.get("request_id", "")
        location = server.log_in(request_id, form.get("login", ""), form.get("password", ""))
        if location is None:
            held = server.held(request_id)
            error = "Unknown user or wrong password."
            page = login_page(action, request_id, held.client_id, server.config.users, error)
            return _html(page, 401)
        return _redirect(location)

    async def token(request: Request) -> Response:
        form = await _form(request)
        server.authenticate_client(request.headers.get("authorization"), form)
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            tokens = server.exchange_code(form)
        elif grant_type == "refresh_token":
            tokens = server.refresh(form)
        else:
            raise OAuthError("unsupported_grant_type", f"grant_type {grant_type!r}")
        return JSONResponse(tokens.as_json(), headers=NO_STORE)

    async def userinfo(request: Request) -> Response:
        scheme, _, access_token = request.headers.get("authorization", "").partition(" ")
        if request.method == "POST" and not access_token:
            # RFC 6750 section 2.2: the token may come as a form field.
            scheme, access_token = "bearer", (await _form(request)).get("access_token", "")
        if scheme.lower() != "bearer" or not access_token:
            raise OAuthError("invalid_token", "a Bearer access token is required", 401)
        return JSONResponse(server.userinfo(access_token), headers=NO_STORE)

    async def end_session(request: Request) -> Response:
        params: Mapping[str, str] = request.query_params
        if request.method == "POST":
            params = await _form(request)
        location = server.end_session(params)
        return _redirect(location) if location else _html(signed_out_page())

    async def on_oauth_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, OAuthError)
        return oauth_error(exc)

    async def on_rejected(request: Request, exc: Exception) -> Response:
        return _html(error_page(str(exc)), 400)

    return Starlette(
        routes=[
            Route(f"{prefix}/.well-known/openid-configuration", configuration),
            Route(f"{prefix}/jwks", jwks),
            Route(f"{prefix}/authorize", authorize, methods=["GET", "POST"]),
            Route(f"{prefix}/token", token, methods=["POST"]),
            Route(f"{prefix}/userinfo", userinfo, methods=["GET", "POST"]),
            Route(f"{prefix}/end_session", end_session, methods=["GET", "POST"]),
        ],
        exception_handlers={OAuthError: on_oauth_error, RequestRejected: on_rejected},
    )
