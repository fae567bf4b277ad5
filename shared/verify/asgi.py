"""ASGI middleware: only requests that came through Vallum reach the app.

Every HTTP request and websocket handshake must carry a valid
`X-Pomerium-JWT-Assertion`; otherwise the app is never called and the client gets
401 with `{"error": "unauthorized", "reason": <code>}` (a websocket is closed with
1008, policy violation, RFC 6455 section 7.4.1, or denied with the same 401 where the
server supports the websocket denial response extension). The verified Identity is in
`scope["vallum.identity"]` and `scope["state"]["vallum_identity"]` (Starlette and
FastAPI: `request.state.vallum_identity`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from shared.verify.model import Identity, VerificationError
from shared.verify.verifier import ASSERTION_HEADER, Verifier

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# Given the refusal and the request: an ASGI app to answer instead of the default 401
# (a redirect, a page), or None for the default. The protected app is never called.
OnError = Callable[[VerificationError, Scope], ASGIApp | None]

IDENTITY_KEY = "vallum.identity"
STATE_KEY = "vallum_identity"
_ASSERTION = ASSERTION_HEADER.encode("ascii")
POLICY_VIOLATION = 1008


def is_exempt(path: str, exempt_paths: Sequence[str]) -> bool:
    """An entry ending in "/" exempts everything under it; any other is one exact path.

    A path with a "." or ".." segment is never exempt: "/static/../admin" starts with
    "/static/" but names /admin to anything that resolves it (RFC 3986 section 5.2.4),
    and the path arrives percent-decoded, so "%2e%2e" counts too.
    """
    if not exempt_paths:
        return False
    segments = path.split("/")
    if "." in segments or ".." in segments:
        return False
    return any(
        path.startswith(entry) if entry.endswith("/") else path == entry for entry in exempt_paths
    )


def refusal_body(error: VerificationError) -> bytes:
    return json.dumps({"error": "unauthorized", "reason": error.code}).encode("ascii")


REFUSAL_HEADERS = (
    (b"content-type", b"application/json"),
    (b"www-authenticate", b"Pomerium"),
    (b"cache-control", b"no-store"),
)


class VerifyMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        verifier: Verifier,
        *,
        exempt_paths: Sequence[str] = (),
        on_error: OnError | None = None,
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.exempt_paths = tuple(exempt_paths)
        self.on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or is_exempt(scope["path"], self.exempt_paths):
            await self.app(scope, receive, send)
            return
        try:
            identity = await self.verifier.averify(_token(scope))
        except VerificationError as error:
            await self._refuse(error, scope, receive, send)
            return
        _attach(scope, identity)
        await self.app(scope, receive, send)

    async def _refuse(
        self, error: VerificationError, scope: Scope, receive: Receive, send: Send
    ) -> None:
        other = self.on_error(error, scope) if self.on_error is not None else None
        if other is not None:
            await other(scope, receive, send)
        elif scope["type"] == "http":
            await send({"type": "http.response.start", "status": 401, "headers": REFUSAL_HEADERS})
            await send({"type": "http.response.body", "body": refusal_body(error)})
        else:
            await _deny_websocket(error, scope, receive, send)


def _token(scope: Scope) -> str:
    # ASGI header names are lower-case bytes (ASGI spec, HTTP connection scope).
    for name, value in scope.get("headers", ()):
        if name.lower() == _ASSERTION:
            return bytes(value).decode("latin-1").strip()
    return ""


def _attach(scope: Scope, identity: Identity) -> None:
    scope[IDENTITY_KEY] = identity
    state = scope.get("state")
    if state is None:
        state = scope["state"] = {}
    state[STATE_KEY] = identity


async def _deny_websocket(
    error: VerificationError, scope: Scope, receive: Receive, send: Send
) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        await send(
            {"type": "websocket.http.response.start", "status": 401, "headers": REFUSAL_HEADERS}
        )
        await send({"type": "websocket.http.response.body", "body": refusal_body(error)})
    else:
        await send({"type": "websocket.close", "code": POLICY_VIOLATION, "reason": error.code})
