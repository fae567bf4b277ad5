"""`/.pomerium/` (who you are, as a page) and `/.pomerium/user` (the same, as JSON).

Served on every route host. The session comes from the handle in the session
cookie, read through SessionService (the proxy may Get, never Put or Delete);
tokens are never shown. A missing, forged or expired handle is "signed out".
"""

from __future__ import annotations

import html
import json
import time
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import json_format
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from shared.pb import session_pb2, session_pb2_grpc
from shared.rpc import ServiceChannel, call_once_each
from shared.sessions import HandleCodec, InvalidHandle

NO_STORE = {"Cache-Control": "no-store"}


class UserPages:
    def __init__(self, sessions: ServiceChannel, handles: HandleCodec, cookie_name: str) -> None:
        self._sessions = sessions
        self._handles = handles
        self._cookie = cookie_name

    async def _identity(self, request: Request) -> dict[str, Any] | None:
        handle = request.cookies.get(self._cookie, "")
        if not handle:
            auth = request.headers.get("authorization", "")
            if auth[:9].lower() == "pomerium ":
                handle = auth[9:].strip()
        if not handle:
            return None
        now = time.time()
        try:
            session_id = self._handles.open(handle, now)
        except InvalidHandle:
            return None
        get = session_pb2.GetRequest(id=session_id)
        response = await call_once_each(
            self._sessions,
            lambda ch: session_pb2_grpc.SessionServiceStub(ch).Get(get, timeout=2.0),
        )
        session = response.session
        if not response.found or session.expires_at.seconds <= now:
            return None
        claims = json_format.MessageToDict(session.claims) if session.HasField("claims") else {}
        return {
            "user": session.user_id,
            "email": session.email,
            "name": session.name,
            "groups": list(session.groups),
            "claims": claims,
            "issued_at": _iso(session.issued_at.seconds),
            "expires_at": _iso(session.expires_at.seconds),
        }

    async def user(self, request: Request) -> Response:
        try:
            identity = await self._identity(request)
        except grpc.aio.AioRpcError:
            return JSONResponse(
                {"error": "sessions unavailable", "detail": "try again in a minute"},
                status_code=503,
                headers=NO_STORE,
            )
        if identity is None:
            return JSONResponse({"signed_in": False}, status_code=401, headers=NO_STORE)
        return JSONResponse({"signed_in": True, **identity}, headers=NO_STORE)

    async def page(self, request: Request) -> Response:
        try:
            identity = await self._identity(request)
        except grpc.aio.AioRpcError:
            return HTMLResponse(
                _page("Sessions unavailable", "<p>Try again in a minute.</p>"),
                status_code=503,
                headers=NO_STORE,
            )
        if identity is None:
            return HTMLResponse(
                _page("Not signed in", "<p>This browser has no Vallum session for this site.</p>"),
                status_code=401,
                headers=NO_STORE,
            )
        rows = "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(_show(v))}</td></tr>"
            for k, v in identity["claims"].items()
        )
        body = (
            f"<p>Signed in as <b>{html.escape(identity['email'] or identity['user'])}</b>"
            f"{' (' + html.escape(identity['name']) + ')' if identity['name'] else ''}.</p>"
            f"<p>Groups: {html.escape(', '.join(identity['groups']) or 'none')}</p>"
            f"<p>Session expires {html.escape(identity['expires_at'])}.</p>"
            f"<table>{rows}</table>"
            '<form method="post" action="/.pomerium/sign_out"><button>Sign out</button></form>'
        )
        return HTMLResponse(_page("Your Vallum session", body), headers=NO_STORE)


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _show(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)} · Vallum</title><style>"
        "body{font:16px/1.5 system-ui,sans-serif;max-width:44rem;margin:3rem auto;padding:0 1rem}"
        "th{text-align:left;padding-right:1rem;vertical-align:top}td{word-break:break-all}"
        "button{font:inherit;padding:.4rem 1rem}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
