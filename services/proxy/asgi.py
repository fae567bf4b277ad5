"""Calling the Starlette app that serves Vallum's own pages and endpoints.

Built-in endpoints are small and not on the hot path, so the request body is read
whole (bounded) and the response collected before it is written.
"""

from __future__ import annotations

from typing import Any

from services.proxy.http import HttpConnection, Request

MAX_BODY = 1024 * 1024


async def call_asgi(
    app: Any, conn: HttpConnection, request: Request, path: str, query: str, host: str, scheme: str
) -> None:
    body = await request.body.read_all(MAX_BODY)
    if body is None:
        conn.send_response(request, 413, [(b"content-type", b"text/plain")], b"body too large\n")
        return
    info = conn.info
    assert info is not None
    hostname, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": request.version,
        "method": request.method,
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode("latin-1"),
        "query_string": query.encode("latin-1"),
        "root_path": "",
        "headers": [(k, v) for k, (_, v) in zip(request.keys, request.headers, strict=True)],
        "client": (info.peer_ip, 0),
        "server": (hostname or host, int(port) if port.isdigit() else (443 if info.tls else 80)),
        "state": {"connection": conn, "request": request},
    }
    sent_body = False

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    status = 500
    headers: list[tuple[bytes, bytes]] = []
    parts: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = [
                (bytes(n), bytes(v))
                for n, v in message.get("headers", [])
                if bytes(n).lower() not in (b"content-length", b"transfer-encoding")
            ]
        elif message["type"] == "http.response.body":
            parts.append(message.get("body", b""))

    await app(scope, receive, send)
    conn.send_response(request, status, headers, b"".join(parts))
