"""The proxy's HTTP/1.1 server protocol (uvloop + httptools), one per connection.

It parses requests and hands each to the request handler as it completes its
head; the body is streamed afterwards through `Body`, with back-pressure: while a
body has nowhere to go, reading from the client is paused. Requests on one
connection are served in order (pipelined ones wait their turn). After a 101
Switching Protocols the connection becomes a raw byte pipe.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, cast

import httptools

from services.proxy.client_verify import PeerCertificate

log = logging.getLogger("vallum.proxy.http")

MAX_HEADER_BYTES = 64 * 1024
KEEP_ALIVE_SECONDS = 75.0


class BodySink(Protocol):
    def on_request_body(self, chunk: bytes) -> None: ...

    def on_request_complete(self) -> None: ...


class RawSink(Protocol):
    def on_downstream_raw(self, data: bytes) -> None: ...

    def on_downstream_lost(self) -> None: ...


class Flow(Protocol):
    """Told when the client stops (and resumes) taking what we write."""

    def pause_downstream_writes(self) -> None: ...

    def resume_downstream_writes(self) -> None: ...


class Body:
    """A request body on its way: buffered until a sink is attached, then streamed."""

    __slots__ = ("_chunks", "_conn", "_sink", "complete")

    def __init__(self, conn: HttpConnection) -> None:
        self._conn = conn
        self._chunks: deque[bytes] = deque()
        self._sink: BodySink | None = None
        self.complete = False

    def feed(self, chunk: bytes) -> None:
        if self._sink is not None:
            self._sink.on_request_body(chunk)
        else:
            self._chunks.append(chunk)
            self._conn.pause_reading()

    def finish(self) -> None:
        self.complete = True
        if self._sink is not None:
            self._sink.on_request_complete()

    def attach(self, sink: BodySink) -> None:
        self._sink = sink
        while self._chunks:
            sink.on_request_body(self._chunks.popleft())
        if self.complete:
            sink.on_request_complete()
        else:
            self._conn.resume_reading()

    async def read_all(self, limit: int) -> bytes | None:
        """The whole body (for built-in endpoints), or None if it exceeds `limit`."""
        collector = _Collector(limit)
        self.attach(collector)
        await collector.done
        return collector.data


class _Collector:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.data: bytes | None = None

    def on_request_body(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size <= self._limit:
            self._parts.append(chunk)

    def on_request_complete(self) -> None:
        self.data = b"".join(self._parts) if self._size <= self._limit else None
        if not self.done.done():
            self.done.set_result(None)


@dataclass(slots=True)
class Request:
    method: str
    target: bytes
    # As they arrived (names keep their case), and `keys`, the same names in lower
    # case, position for position: lookups scan `keys` in C (list.index / count).
    headers: list[tuple[bytes, bytes]]
    keys: list[bytes]
    version: str
    keep_alive: bool
    upgrade: bool
    body: Body
    # Set by the handler as it learns them, for the access log and error pages.
    status: int = 0
    request_id: str = ""
    host: str = ""
    path: str = ""
    route: int = -1
    # The route's metric label ("": no route), taken from the table that matched it.
    route_label: str = ""
    decision: str = ""
    # The request's server span while tracing is on (shared.tracing), else None.
    span: Any = None

    def header(self, name: bytes) -> bytes | None:
        """The first line named `name` (lower case)."""
        try:
            return self.headers[self.keys.index(name)][1]
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    peer_ip: str
    tls: bool
    server_name: str | None
    # On hosts that ask for client certificates (their TLS is pyOpenSSL's, not the
    # loop's): what the client presented and the verdict. None: not asked.
    client_cert: PeerCertificate | None = None


Handler = Callable[["HttpConnection", Request], Coroutine[Any, Any, None]]


class HttpConnection(asyncio.Protocol):
    def __init__(self, handler: Handler, connections: set[HttpConnection]) -> None:
        self._handler = handler
        self._connections = connections
        # Looked up once: asyncio.get_running_loop() is a getpid() system call each time.
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.info: ConnectionInfo | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = bytearray()
        self._headers: list[tuple[bytes, bytes]] = []
        self._keys: list[bytes] = []
        self._header_bytes = 0
        self._current: Request | None = None  # being parsed
        self._queue: deque[Request] = deque()  # parsed, waiting to be served
        self._serving: asyncio.Task[None] | None = None
        self._raw: RawSink | None = None
        self._raw_buffer = bytearray()
        self.flow: Flow | None = None  # the exchange streaming a response, if any
        self._reading = True
        # When the connection last fell idle (None while it serves): reap_idle closes
        # it after KEEP_ALIVE_SECONDS. A timer per request would cost more than this.
        self.idle_since: float | None = None
        self.closing = False
        # The proxy is stopping: every response from now on says `connection: close`,
        # so a keep-alive client takes its next request elsewhere instead of here.
        self.draining = False

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self._connections.add(self)
        peer = transport.get_extra_info("peername")
        ssl_object: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.info = ConnectionInfo(
                peer_ip=peer[0] if peer else "",
                tls=True,
                server_name=getattr(ssl_object, "vallum_sni", None),
            )
        else:  # plain HTTP, or OpenSSLTransport
            self.info = ConnectionInfo(
                peer_ip=peer[0] if peer else "",
                tls=bool(transport.get_extra_info("vallum_tls")),
                server_name=transport.get_extra_info("vallum_sni"),
                client_cert=transport.get_extra_info("vallum_client_cert"),
            )
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        if self._raw is not None:
            self._raw.on_downstream_raw(data)
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset = upgrade.args[0] if upgrade.args else len(data)
            self._raw_buffer += data[offset:]
        except httptools.HttpParserError as e:
            self._bad_request(str(e))

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self.closing = True
        self.idle_since = None
        if self._raw is not None:
            self._raw.on_downstream_lost()
        if self._serving is not None and not self._serving.done():
            self._serving.cancel()

    def pause_writing(self) -> None:
        if self.flow is not None:
            self.flow.pause_downstream_writes()

    def resume_writing(self) -> None:
        if self.flow is not None:
            self.flow.resume_downstream_writes()

    # -- httptools callbacks ------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url.clear()
        self._headers = []
        self._keys = []
        self._header_bytes = 0
        self.idle_since = None

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)
        if self._header_bytes > MAX_HEADER_BYTES:
            raise httptools.HttpParserError("request head too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._keys.append(name.lower())
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            raise httptools.HttpParserError("request head too large")

    def on_headers_complete(self) -> None:
        parser = self._parser
        request = Request(
            method=parser.get_method().decode("ascii", "replace"),
            target=bytes(self._url),
            headers=self._headers,
            keys=self._keys,
            version=parser.get_http_version(),
            keep_alive=parser.should_keep_alive() and not self.draining,
            upgrade=parser.should_upgrade(),
            body=Body(self),
        )
        self._current = request
        self._queue.append(request)
        if self._serving is None or self._serving.done():
            self._serving = self.loop.create_task(self._serve())
        if len(self._queue) > 1:
            # A pipelined request: read no further until the ones before it are done.
            self.pause_reading()

    def on_body(self, body: bytes) -> None:
        if self._current is not None:
            self._current.body.feed(body)

    def on_message_complete(self) -> None:
        if self._current is not None:
            self._current.body.finish()
            self._current = None

    # -- serving ------------------------------------------------------------------

    async def _serve(self) -> None:
        while self._queue and not self.closing:
            request = self._queue[0]
            try:
                await self._handler(self, request)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("unexpected error serving a request; closing the connection")
                self.close()
                return
            self._queue.popleft()
            if self._raw is not None:
                return
            if not (request.keep_alive and request.body.complete):
                self.close()
                return
            self.resume_reading()
        self._arm_idle()

    def _arm_idle(self) -> None:
        self.idle_since = self.loop.time()

    def drain(self) -> None:
        """Finish what is in progress, with `connection: close`; nothing after it."""
        self.draining = True
        for request in self._queue:
            request.keep_alive = False
        if not self.busy:
            self.close()

    def close_if_idle_since(self, cutoff: float) -> None:
        idle = self.idle_since is not None and self.idle_since <= cutoff
        if idle and not self._queue and self._raw is None:
            self.close()

    def _bad_request(self, why: str) -> None:
        log.info("malformed request from %s: %s", self.info.peer_ip if self.info else "?", why)
        if not self._queue and self.transport is not None:
            body = b'{"status":400,"error":"Bad Request","detail":"malformed HTTP request"}\n'
            self.transport.write(
                b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
            )
        self.close()

    # -- used by the handler and exchanges ----------------------------------------

    @property
    def busy(self) -> bool:
        """Serving a request (or an upgraded stream): a graceful stop waits for it."""
        return bool(self._queue) or self._raw is not None

    def pause_reading(self) -> None:
        if self._reading and self.transport is not None and not self.closing:
            self._reading = False
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self._reading and self.transport is not None and not self.closing:
            self._reading = True
            self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closing:
            self.transport.write(data)

    def switch_to_raw(self, sink: RawSink) -> None:
        """After 101: every further byte from the client goes to `sink` as is."""
        self._raw = sink
        self.idle_since = None
        pending, self._raw_buffer = bytes(self._raw_buffer), bytearray()
        if pending:
            sink.on_downstream_raw(pending)
        self.resume_reading()

    def send_response(
        self,
        request: Request,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> None:
        """A complete response from Vallum itself (pages, redirects, endpoints)."""
        request.status = status
        keep = request.keep_alive and request.body.complete
        head = [b"HTTP/1.1 %d %s\r\n" % (status, reason_phrase(status))]
        head += [b"%s: %s\r\n" % (n, v) for n, v in headers]
        head.append(b"content-length: %d\r\n" % len(body))
        if not keep:
            head.append(b"connection: close\r\n")
            request.keep_alive = False
        head.append(b"\r\n")
        self.write(b"".join(head) + (body if request.method != "HEAD" else b""))

    def close(self) -> None:
        self.closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()


_PHRASES = {
    100: b"Continue",
    101: b"Switching Protocols",
    200: b"OK",
    201: b"Created",
    202: b"Accepted",
    204: b"No Content",
    206: b"Partial Content",
    301: b"Moved Permanently",
    302: b"Found",
    303: b"See Other",
    304: b"Not Modified",
    307: b"Temporary Redirect",
    308: b"Permanent Redirect",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    421: b"Misdirected Request",
    429: b"Too Many Requests",
    495: b"SSL Certificate Error",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}


def reason_phrase(status: int) -> bytes:
    return _PHRASES.get(status, b"Status")


async def reap_idle(connections: set[HttpConnection], every: float = 5.0) -> None:
    """Close keep-alive connections idle for KEEP_ALIVE_SECONDS (give or take `every`)."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(every)
        cutoff = loop.time() - KEEP_ALIVE_SECONDS
        for conn in list(connections):
            conn.close_if_idle_since(cutoff)
