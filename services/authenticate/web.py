"""authenticate's pages: sign-in, the OIDC callback, sign-out (Pomerium's URLs).

    proxy ──302──▶ /.pomerium/sign_in?pomerium_redirect_uri=…&pomerium_signature=…
          ──302──▶ IdP /authorize (PKCE S256, sealed state, nonce, CSRF cookie)
    IdP   ──302──▶ /oauth2/callback?code=…&state=…
          ──302──▶ <route host>/.pomerium/callback?pomerium_transfer=…  (the proxy sets
                   the session cookie for its own host and returns to the page)

Every failure is a page that says what went wrong and creates no session.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

from google.protobuf import struct_pb2, timestamp_pb2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from services.authenticate import metrics
from services.authenticate.oidc import (
    IdPError,
    IdPUnavailable,
    IdTokenError,
    RelyingParty,
    SignIn,
    StateError,
    csrf_cookie_name,
)
from services.authenticate.stores import SessionStore
from shared.config import Config
from shared.errors import ErrorPage, render
from shared.errors.negotiate import wants_html
from shared.pb import session_pb2
from shared.routing import RouteTable
from shared.sessions import new_session_id
from shared.signed_urls import SignatureError, URLSigner

log = logging.getLogger("vallum.authenticate")

CALLBACK_PATH = "/oauth2/callback"
CSRF_MAX_AGE = 300


class SignInPages:
    def use_routes(self, config: Config) -> None:
        """Return-to URLs are checked against these routes from now on (a reload)."""
        self._routes = RouteTable.compile(config.routes)

    def __init__(self, config: Config, store: SessionStore, rp: RelyingParty) -> None:
        assert config.shared_secret is not None and config.authenticate_service_url
        self._config = config
        self._store = store
        self._rp = rp
        self._signer = URLSigner(config.shared_secret)
        self._routes = RouteTable.compile(config.routes)
        self._base = config.authenticate_service_url.rstrip("/")
        self._csrf = csrf_cookie_name(config.cookie_name)

    @property
    def callback_url(self) -> str:
        return self._base + CALLBACK_PATH

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.pomerium/sign_in", self.sign_in),
                Route(CALLBACK_PATH, self.callback),
                Route("/.pomerium/sign_out", self.sign_out),
                Route("/.pomerium/signed_out", self.signed_out),
                Route("/ping", lambda _: PlainTextResponse("OK")),
            ]
        )

    # -- pages ----------------------------------------------------------------------

    async def sign_in(self, request: Request) -> Response:
        now = time.time()
        try:
            target = self._signer.verify("sign_in", dict(request.query_params), now)
        except SignatureError as e:
            return self._error(request, 400, "sign-in-link-invalid", str(e))
        if not self._is_route(target):
            # Only Vallum's own routes: anything else would be an open redirect.
            return self._error(
                request,
                400,
                "sign-in-redirect-refused",
                "the page to return to is not an app behind Vallum",
            )
        try:
            auth = await self._rp.begin(redirect_uri=self.callback_url, redirect_to=target, now=now)
        except IdPError as e:
            return self._idp_error(request, e)
        response = RedirectResponse(auth.url, status_code=302)
        response.set_cookie(
            self._csrf,
            auth.csrf_cookie,
            max_age=CSRF_MAX_AGE,
            path="/",
            secure=self._config.cookie_secure,
            httponly=True,
            samesite="lax",
        )
        return response

    async def callback(self, request: Request) -> Response:
        response = await self._callback(request)
        result = getattr(request.state, "sign_in_error", "") or (
            "signed-in" if response.status_code == 302 else "error"
        )
        metrics.sign_ins.inc(result)
        return response

    async def _callback(self, request: Request) -> Response:
        query = request.query_params
        if "error" in query:
            detail = query.get("error_description") or query["error"]
            return self._error(request, 403, "idp-refused", f"the identity provider said: {detail}")
        try:
            result = await self._rp.complete(
                state=query.get("state", ""),
                csrf_cookie=request.cookies.get(self._csrf),
                code=query.get("code", ""),
                redirect_uri=self.callback_url,
                now=time.time(),
            )
        except StateError as e:
            return self._error(request, 400, "sign-in-state-invalid", e.detail or e.reason)
        except IdTokenError as e:
            log.warning("ID token refused: %s %s", e.reason, e.detail)
            return self._error(request, 400, "id-token-invalid", e.reason)
        except IdPError as e:
            return self._idp_error(request, e)
        session_id, expires = await self._create_session(result)
        now = time.time()
        transfer = self._signer.seal_transfer(session_id, expires, result.redirect_to, now)
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(result.redirect_to))
        location = f"{origin}/.pomerium/callback?{urlencode({'pomerium_transfer': transfer})}"
        log.info(
            "signed in %s (session expires in %.0fs)",
            result.identity.email or result.identity.user_id,
            expires - now,
        )
        response = RedirectResponse(location, status_code=302)
        response.delete_cookie(self._csrf, path="/")
        return response

    async def sign_out(self, request: Request) -> Response:
        """Reached from a route host's /.pomerium/sign_out with a sealed hand-over."""
        now = time.time()
        id_token = ""
        try:
            transfer = self._signer.open_transfer(
                request.query_params.get("pomerium_transfer", ""), now
            )
        except SignatureError:
            transfer = None
        if transfer is not None:
            record = await self._store.get(transfer.session_id)
            if record is not None:
                id_token = record.id_token
            await self._store.delete(transfer.session_id)
            log.info("signed out session ending %s", transfer.session_id[-6:])
        signed_out = self._base + "/.pomerium/signed_out"
        url = None
        if id_token:
            try:
                url = await self._rp.end_session_url(id_token, signed_out, "")
            except IdPError:
                url = None
        return RedirectResponse(url or signed_out, status_code=302)

    async def signed_out(self, request: Request) -> Response:
        page = ErrorPage(
            status=200,
            title="Signed out",
            detail="You are signed out of Vallum.",
            advice="Close this tab, or go back to an app to sign in again.",
        )
        _, headers, body = render(page, html=wants_html(_accept(request)))
        return Response(body, status_code=200, headers=_str_headers(headers))

    # -- helpers --------------------------------------------------------------------

    def _is_route(self, url: str) -> bool:
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            return False
        return self._routes.match(parts.scheme, parts.netloc, parts.path or "/") is not None

    async def _create_session(self, result: SignIn) -> tuple[str, int]:
        now = int(time.time())
        expires = now + int(self._config.cookie_expire)
        identity, tokens = result.identity, result.tokens
        claims = struct_pb2.Struct()
        claims.update(_jsonable(identity.claims))
        record = session_pb2.Session(
            id=new_session_id(),
            user_id=identity.user_id,
            email=identity.email,
            name=identity.name,
            groups=list(identity.groups),
            claims=claims,
            issued_at=timestamp_pb2.Timestamp(seconds=now),
            expires_at=timestamp_pb2.Timestamp(seconds=expires),
            id_token=tokens.id_token or "",
            access_token=tokens.access_token,
        )
        if tokens.expires_in:
            record.access_token_expires_at.seconds = now + tokens.expires_in
        await self._store.put(record, tokens.refresh_token or "")
        return record.id, expires

    def _idp_error(self, request: Request, e: IdPError) -> Response:
        log.warning("identity provider error: %s %s", e.reason, e.detail)
        if isinstance(e, IdPUnavailable):
            return self._error(
                request,
                502,
                "idp-unavailable",
                "the identity provider could not be reached; try again shortly",
            )
        if getattr(e, "error", "") == "invalid_grant":
            return self._error(
                request,
                400,
                "sign-in-code-invalid",
                "the sign-in code was already used or has expired; sign in again",
            )
        return self._error(request, 502, "idp-error", e.reason)

    def _error(self, request: Request, status: int, reason: str, detail: str) -> Response:
        request.state.sign_in_error = reason  # for the sign-in count
        titles = {400: "Sign-in failed", 403: "Sign-in refused", 502: "Sign-in unavailable"}
        page = ErrorPage(
            status=status,
            title=titles.get(status, "Sign-in failed"),
            detail=f"Vallum could not sign you in: {detail}.",
            reasons=(reason,),
            advice="Go back to the app and try again. No session was created.",
            request_id=request.headers.get("x-request-id", ""),
        )
        code, headers, body = render(page, html=wants_html(_accept(request)))
        return Response(body, status_code=code, headers=_str_headers(headers))


def _accept(request: Request) -> bytes | None:
    value = request.headers.get("accept")
    return value.encode("latin-1") if value is not None else None


def _str_headers(headers: list[tuple[bytes, bytes]]) -> Mapping[str, str]:
    return {n.decode("latin-1"): v.decode("latin-1") for n, v in headers if n != b"content-length"}


def _jsonable(value: object) -> dict[str, Any]:
    """Claims as plain JSON types (protobuf Struct takes nothing else)."""

    def convert(v: object) -> object:
        if isinstance(v, Mapping):
            return {str(k): convert(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [convert(x) for x in v]
        if v is None or isinstance(v, str | int | float | bool):
            return v
        return str(v)

    converted = convert(value)
    return converted if isinstance(converted, dict) else {}
