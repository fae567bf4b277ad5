"""The route host's half of sign-in and sign-out (`/.pomerium/callback`, `/sign_out`).

The callback turns authenticate's one-minute hand-over into this host's session
cookie, and only for the host it was made for. Sign-out changes state, so it is a
POST from this site (Origin / Sec-Fetch-Site checked); a GET only shows the button.
"""

from __future__ import annotations

import time
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from shared.config import Config
from shared.sessions import HandleCodec, InvalidHandle
from shared.signed_urls import SignatureError, URLSigner

NO_STORE = {"Cache-Control": "no-store"}


class SessionPages:
    def __init__(self, config: Config) -> None:
        assert config.shared_secret is not None and config.cookie_secret is not None
        self._config = config
        self._handles = HandleCodec(config.cookie_secret)
        self._signer = URLSigner(config.shared_secret)
        self._authenticate = (config.authenticate_service_url or "").rstrip("/")

    def sign_in_redirect(self, original_url: str, now: float) -> bytes:
        """Where a signed-out browser goes: authenticate, with a signed way back."""
        url = self._signer.signed_url(
            self._authenticate + "/.pomerium/sign_in", "sign_in", original_url, now
        )
        return url.encode("latin-1")

    def _cookie(self, response: Response, value: str, max_age: int) -> None:
        same_site = self._config.cookie_same_site
        response.set_cookie(
            self._config.cookie_name,
            value,
            max_age=max_age,
            path="/",
            domain=self._config.cookie_domain or None,
            secure=self._config.cookie_secure,
            httponly=self._config.cookie_http_only,
            samesite=same_site if same_site in ("lax", "strict", "none") else "lax",  # type: ignore[arg-type]
        )

    async def callback(self, request: Request) -> Response:
        now = time.time()
        try:
            transfer = self._signer.open_transfer(
                request.query_params.get("pomerium_transfer", ""), now
            )
        except SignatureError as e:
            return _problem(400, str(e))
        if transfer.host != request.headers.get("host", "").lower():
            # A hand-over made for another host must not become a cookie here.
            return _problem(400, "the sign-in hand-over was made for another site")
        handle = self._handles.seal(transfer.session_id, transfer.session_expires)
        response = RedirectResponse(transfer.redirect_uri, status_code=302, headers=NO_STORE)
        self._cookie(response, handle, max(0, transfer.session_expires - int(now)))
        return response

    async def sign_out(self, request: Request) -> Response:
        if request.method != "POST":
            body = (
                "<!doctype html><meta charset=utf-8><title>Sign out · Vallum</title>"
                "<body style='font:16px system-ui;max-width:40rem;margin:3rem auto'>"
                "<h1>Sign out?</h1><form method=post action='/.pomerium/sign_out'>"
                "<button>Sign out</button></form>"
            )
            return HTMLResponse(body, headers=NO_STORE)
        if not _same_site(request):
            return _problem(403, "sign-out must come from this site (cross-site request refused)")
        now = time.time()
        handle = request.cookies.get(self._config.cookie_name, "")
        target = self._authenticate + "/.pomerium/signed_out"
        if handle:
            try:
                session_id = self._handles.open(handle, now)
            except InvalidHandle:
                session_id = ""
            if session_id:
                token = self._signer.seal_transfer(session_id, 0, target, now)
                query = urlencode({"pomerium_transfer": token})
                target = f"{self._authenticate}/.pomerium/sign_out?{query}"
        response = RedirectResponse(target, status_code=303, headers=NO_STORE)
        self._cookie(response, "", 0)
        return response


def _same_site(request: Request) -> bool:
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is not None:
        return origin.lower() == f"{request.url.scheme}://{request.headers.get('host', '')}".lower()
    # No browser sends a cross-site POST without one of the two: a script or curl.
    return True


def _problem(status: int, detail: str) -> Response:
    return JSONResponse({"status": status, "detail": detail}, status_code=status, headers=NO_STORE)
