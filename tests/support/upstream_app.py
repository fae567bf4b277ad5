"""A real upstream for proxy tests, served by uvicorn on 127.0.0.1.

/echo            the request as JSON (method, path, query, headers, body size)
/bytes?size=N    N bytes streamed in 1 MiB chunks (a download)
/upload          reads the body as it streams; returns its size and SHA-256
/slow?delay=S    answers after S seconds
/close           answers, then closes the connection (`Connection: close`)
/ws              WebSocket echo
/__hits          how many times each path was requested (not counted itself)
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
from typing import Any

import uvicorn

CHUNK = b"v" * (1024 * 1024)
HITS: dict[str, int] = {}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await websocket(scope, receive, send)
        return
    path = scope["path"]
    if path == "/__hits":
        body = json.dumps(HITS).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return
    HITS[path] = HITS.get(path, 0) + 1
    query = dict(
        part.split("=", 1) for part in scope["query_string"].decode().split("&") if "=" in part
    )
    if path == "/close":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/plain"),
                    (b"content-length", b"4"),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"bye\n"})
        return
    if path == "/bytes":
        size = int(query.get("size", "0"))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/octet-stream"),
                    (b"content-length", str(size).encode()),
                ],
            }
        )
        left = size
        while left > 0:
            part = CHUNK if left >= len(CHUNK) else CHUNK[:left]
            left -= len(part)
            await send({"type": "http.response.body", "body": part, "more_body": left > 0})
        if size == 0:
            await send({"type": "http.response.body", "body": b""})
        return
    digest = hashlib.sha256()
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return
        body = message.get("body", b"")
        size += len(body)
        digest.update(body)
        if not message.get("more_body"):
            break
    if path == "/slow":
        await asyncio.sleep(float(query.get("delay", "1")))
    if path == "/upload":
        payload = {"size": size, "sha256": digest.hexdigest()}
    else:
        payload = {
            "method": scope["method"],
            "path": path,
            "raw_path": scope.get("raw_path", b"").decode("latin-1"),
            "query": scope["query_string"].decode("latin-1"),
            "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]],
            "body_size": size,
            "scheme": scope["scheme"],
        }
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"set-cookie", b"a=1"),
                (b"set-cookie", b"b=2"),
                (b"x-upstream", b"yes"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def websocket(scope: dict[str, Any], receive: Any, send: Any) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": "echo: " + message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    args = parser.parse_args()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        ssl_certfile=args.certfile,
        ssl_keyfile=args.keyfile,
    )


if __name__ == "__main__":
    main()
