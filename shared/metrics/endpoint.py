"""GET /metrics on `metrics_address`: a small HTTP/1.1 server on the event loop.

One request per connection (Prometheus opens one per scrape); a client that sends no
request head within HEAD_TIMEOUT is dropped. The socket is bound at start-up so that
a taken port is the usual one line naming `metrics_address`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST

from shared.config import Address
from shared.listen import bind

log = logging.getLogger("vallum.metrics")

HEAD_TIMEOUT = 10.0
MAX_HEAD = 8192

Collect = Callable[[], Awaitable[bytes]]


def bind_metrics(address: Address) -> socket.socket:
    """The listening socket, or StartupError("metrics_address: cannot listen on ...")."""
    return bind(str(address), "metrics_address")


class MetricsEndpoint:
    def __init__(self, sock: socket.socket, collect: Collect) -> None:
        self._sock = sock
        self._collect = collect
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, sock=self._sock, limit=MAX_HEAD)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._open):
            writer.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                return
            status, body, content_type = await self._answer(head)
            writer.write(
                b"HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n"
                b"connection: close\r\n\r\n%s" % (status, content_type.encode(), len(body), body)
            )
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._open.discard(writer)
            writer.close()

    async def _answer(self, head: bytes) -> tuple[bytes, bytes, str]:
        parts = head.split(b"\r\n", 1)[0].split()
        text = "text/plain; charset=utf-8"
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return b"400 Bad Request", b"bad request\n", text
        method, target = parts[0], parts[1]
        if target.split(b"?", 1)[0] != b"/metrics":
            return b"404 Not Found", b"not found: metrics are at /metrics\n", text
        if method not in (b"GET", b"HEAD"):
            return b"405 Method Not Allowed", b"GET only\n", text
        try:
            body = await self._collect()
        except Exception:
            log.exception("metrics could not be collected")
            return b"500 Internal Server Error", b"metrics could not be collected\n", text
        return b"200 OK", b"" if method == b"HEAD" else body, CONTENT_TYPE_LATEST
