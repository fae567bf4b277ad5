"""Connections to upstream apps: an HTTP/1.1 client protocol and a keep-alive pool.

A connection serves one exchange at a time and reports every event to it (response
head, body chunks, completion, loss, flow control); the exchange decides what the
user sees. Idle connections are reused newest-first and closed after a minute.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, cast

import httptools

log = logging.getLogger("vallum.proxy.upstream")

IDLE_SECONDS = 60.0
MAX_IDLE_PER_KEY = 64
# How often exchange timeouts are looked at: a timeout fires up to this much late.
TICK = 0.1


class Deadlines:
    """Timeouts of many exchanges, looked at together every TICK seconds.

    An event-loop timer per request costs about as much as the rest of a small
    request's bookkeeping; a dict entry costs next to nothing, and a route timeout
    does not need better than a tenth of a second.
    """

    def __init__(self) -> None:
        self._due: dict[object, tuple[float, Callable[[], None]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    def set(self, key: object, delay: float, expired: Callable[[], None]) -> None:
        """Call `expired` about `delay` seconds from now, unless cleared first."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self._due[key] = (self._loop.time() + delay, expired)
        if self._task is None:
            self._task = self._loop.create_task(self._run())

    def clear(self, key: object) -> None:
        self._due.pop(key, None)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        assert self._loop is not None
        while True:
            await asyncio.sleep(TICK)
            now = self._loop.time()
            for key in [k for k, (when, _) in self._due.items() if when <= now]:
                entry = self._due.pop(key, None)
                if entry is None:
                    continue
                try:
                    entry[1]()
                except Exception:
                    # One failed callback must not stop every other timeout for good.
                    log.exception("an exchange timeout failed")


class UpstreamEvents(Protocol):
    """What an exchange hears from its upstream connection."""

    def on_response_head(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        keys: list[bytes],
        keep_alive: bool,
        chunked: bool,
    ) -> None: ...

    def on_response_body(self, chunk: bytes) -> None: ...

    def on_response_complete(self) -> None: ...

    def on_upstream_raw(self, data: bytes) -> None: ...

    def on_upstream_lost(self, exc: BaseException | None) -> None: ...

    def flush(self) -> None:
        """One read of the upstream's bytes has been handled."""

    def pause_upstream_writes(self) -> None: ...

    def resume_upstream_writes(self) -> None: ...


class TLSSource(Protocol):
    """A route's upstream TLS settings (services.proxy.upstream_tls.UpstreamTLS)."""

    @property
    def context(self) -> ssl.SSLContext: ...

    def describe_failure(self, exc: BaseException) -> tuple[str, str]: ...


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    tls: TLSSource | None
    server_name: str | None

    @property
    def key(self) -> tuple[str, int, int, str | None]:
        return (self.host, self.port, id(self.tls), self.server_name)


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, target: Target, on_idle_close: Callable[[UpstreamConnection], None]) -> None:
        self.target = target
        self.transport: asyncio.Transport | None = None
        self.events: UpstreamEvents | None = None
        self.raw = False  # after a 101: bytes pass through untouched
        self.reused = False
        self.got_response_bytes = False
        self.idle_since = 0.0
        self._head_only = False
        self._until_close = False  # the response body ends when the upstream closes
        self._parser: httptools.HttpResponseParser | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._keys: list[bytes] = []
        self._closed = False
        self._on_idle_close = on_idle_close

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.got_response_bytes = True
        if self.raw:
            if self.events is not None:
                self.events.on_upstream_raw(data)
            return
        if self._parser is None:
            # Bytes nobody asked for: the upstream is confused; drop the connection.
            self.close()
            return
        try:
            self._parser.feed_data(data)
            events = self.events
            if events is not None:
                events.flush()
        except httptools.HttpParserUpgrade as upgrade:
            # The rest of this chunk already belongs to the upgraded protocol.
            offset = upgrade.args[0] if upgrade.args else len(data)
            self.raw = True
            if offset < len(data) and self.events is not None:
                self.events.on_upstream_raw(data[offset:])
        except httptools.HttpParserError as e:
            events, self.events = self.events, None
            self.close()
            if events is not None:
                events.on_upstream_lost(e)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        events, self.events = self.events, None
        if events is not None and exc is None and self._until_close and not self.raw:
            # A body with neither Content-Length nor chunked coding ends where the
            # connection does (RFC 9112 section 6.3, rule 8), and httptools cannot be
            # told about the end of input: a clean close completes the response.
            self._until_close = False
            events.on_response_complete()
        elif events is not None:
            events.on_upstream_lost(exc)
        else:
            self._on_idle_close(self)

    def pause_writing(self) -> None:
        if self.events is not None:
            self.events.pause_upstream_writes()

    def resume_writing(self) -> None:
        if self.events is not None:
            self.events.resume_upstream_writes()

    # -- httptools callbacks ------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._keys.append(name.lower())

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None
        status = parser.get_status_code()
        headers, self._headers = self._headers, []
        keys, self._keys = self._keys, []
        if 100 <= status < 200 and status != 101:
            return  # an interim response (103 Early Hints): not forwarded
        chunked = b"transfer-encoding" in keys and any(
            b"chunked" in v.lower()
            for k, (_, v) in zip(keys, headers, strict=True)
            if k == b"transfer-encoding"
        )
        self._until_close = not (
            chunked or self._head_only or status in (101, 204, 304) or b"content-length" in keys
        )
        if self.events is not None:
            self.events.on_response_head(status, headers, keys, parser.should_keep_alive(), chunked)
        if self._head_only and self.events is not None:
            # A response to HEAD has no body whatever its Content-Length says, and
            # httptools cannot be told so: finish here and start afresh next time.
            self._parser = None
            self.events.on_response_complete()

    def on_body(self, body: bytes) -> None:
        if self.events is not None:
            self.events.on_response_body(body)

    def on_message_complete(self) -> None:
        parser = self._parser
        if parser is None:
            return
        status = parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return
        self._until_close = False
        if self.events is not None and not self.raw:
            self.events.on_response_complete()

    # -- used by the exchange -----------------------------------------------------

    def start(self, events: UpstreamEvents, *, head_only: bool) -> None:
        self.events = events
        self.got_response_bytes = False
        self._head_only = head_only
        self._until_close = False
        self._headers = []
        self._keys = []
        # A parser reads one response after another on a keep-alive connection; a new
        # one only after HEAD (which ended its parser early) or on a new connection.
        if self._parser is None:
            self._parser = httptools.HttpResponseParser(self)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self._closed:
            self.transport.write(data)

    @property
    def usable(self) -> bool:
        return not self._closed and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        self._closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self._closed = True
        if self.transport is not None:
            self.transport.abort()


class Pool:
    def __init__(self) -> None:
        self._idle: dict[tuple[str, int, int, str | None], list[UpstreamConnection]] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.deadlines = Deadlines()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._reaper = self._loop.create_task(self._reap())

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        self.deadlines.close()
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()

    def idle_connection(self, target: Target) -> UpstreamConnection | None:
        """A pooled connection to `target`, newest first, if one is usable."""
        idle = self._idle.get(target.key)
        while idle:
            conn = idle.pop()
            if conn.usable:
                conn.reused = True
                return conn
        return None

    async def acquire(self, target: Target, connect_timeout: float) -> UpstreamConnection:
        pooled = self.idle_connection(target)
        if pooled is not None:
            return pooled
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(
                lambda: UpstreamConnection(target, self._forget),
                target.host,
                target.port,
                # The context is looked up per new connection so that rotated files
                # (custom CA, client certificate) take effect without a restart.
                ssl=target.tls.context if target.tls is not None else None,
                server_hostname=target.server_name if target.tls is not None else None,
            ),
            connect_timeout,
        )
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        conn.events = None
        if not conn.usable:
            return
        # A response can end while the client is slow and reading from the upstream is
        # paused for it: the next exchange on this connection must hear its answer.
        assert conn.transport is not None
        conn.transport.resume_reading()
        idle = self._idle.setdefault(conn.target.key, [])
        if len(idle) >= MAX_IDLE_PER_KEY:
            conn.close()
            return
        conn.idle_since = (self._loop or asyncio.get_running_loop()).time()
        idle.append(conn)

    def _forget(self, conn: UpstreamConnection) -> None:
        idle = self._idle.get(conn.target.key)
        if idle and conn in idle:
            idle.remove(conn)

    async def _reap(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(IDLE_SECONDS / 4)
            cutoff = loop.time() - IDLE_SECONDS
            for conns in self._idle.values():
                for conn in [c for c in conns if c.idle_since < cutoff]:
                    conns.remove(conn)
                    conn.close()
