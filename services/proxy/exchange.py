"""One request forwarded to an upstream and its response relayed back, streaming.

Bodies flow in both directions without being held: each side's write buffer
filling up pauses reading on the other side (asyncio's pause_writing /
resume_writing), so a 1 GiB upload or download passes through in constant memory.
After a 101 the two connections become one byte pipe (WebSockets).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass

from services.proxy.headers import downstream_response_headers
from services.proxy.http import HttpConnection, Request, reason_phrase
from services.proxy.upstream import Pool, Target, UpstreamConnection

log = logging.getLogger("vallum.proxy.exchange")

CONNECT_TIMEOUT = 10.0
_NO_BODY_STATUS = frozenset({204, 304})


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything the handler decided about how to forward one request."""

    targets: Sequence[Target]  # in the order to try them
    head: bytes  # request line and headers, ready to send
    request_chunked: bool  # re-encode the body as chunks (the client sent chunks)
    response_headers: tuple[tuple[str, str], ...]  # set_response_headers
    timeout: float  # until the response head arrives
    idle_timeout: float | None
    websocket: bool
    request_id: bytes  # also returned to the client, to quote in a support request


@dataclass(frozen=True, slots=True)
class Failure:
    """Why nothing (or not everything) came back: for the 502/504 page and the log."""

    status: int  # 502 or 504
    error: BaseException | None
    target: Target | None
    head_sent: bool


class Exchange:
    def __init__(self, conn: HttpConnection, request: Request, pool: Pool, plan: Plan) -> None:
        self._conn = conn
        self._request = request
        self._pool = pool
        self._plan = plan
        self._loop = conn.loop
        self._up: UpstreamConnection | None = None
        self._done: asyncio.Future[Failure | None] | None = None
        self._head_timer = False  # the route timeout is running (pool.deadlines)
        self._got_head = False  # this attempt's upstream sent its status line
        self._head_sent = False  # downstream has our status line
        self._chunk_down = False  # we chunk-encode the response body
        self._close_down = False  # the response ends when we close
        self._body_started = False
        self._request_finished = False
        self._upstream_keep_alive = False
        self._idle: asyncio.TimerHandle | None = None
        # Bytes for the client from one read of the upstream, written as one piece
        # (one TLS record, one syscall) when the read is done: see flush().
        self._out: list[bytes] = []
        self.bytes_up = 0
        # Seconds from run() to the upstream's response head (-1: none came).
        self.head_after = -1.0
        self._started = 0.0

    async def run(self) -> Failure | None:
        """Forward; None when the response was relayed in full."""
        failure: Failure | None = None
        # Not loop.time(): uvloop's clock moves in whole milliseconds.
        self._started = time.monotonic()
        for target in self._plan.targets:
            try:
                up = self._pool.idle_connection(target) or await self._pool.acquire(
                    target, min(CONNECT_TIMEOUT, self._plan.timeout)
                )
            except (OSError, TimeoutError, ssl.SSLError) as e:
                failure = Failure(502, e, target, False)
                log.info("upstream %s:%d: %s", target.host, target.port, e)
                continue
            failure = await self._exchange(up)
            if failure is None or not self._retryable(failure, up):
                return failure
        return failure

    def _retryable(self, failure: Failure, up: UpstreamConnection) -> bool:
        # A pooled connection the upstream closed while idle fails before any byte of
        # response; the request can go again if none of its body was streamed yet.
        return (
            up.reused
            and not up.got_response_bytes
            and not self._head_sent
            and self.bytes_up == 0
            and failure.status == 502
        )

    async def _exchange(self, up: UpstreamConnection) -> Failure | None:
        self._up = up
        self._got_head = False
        done: asyncio.Future[Failure | None] = self._loop.create_future()
        self._done = done
        up.start(self, head_only=self._request.method == "HEAD")
        up.write(self._plan.head)
        self._conn.flow = self
        if not self._body_started:
            self._body_started = True
            self._request.body.attach(self)  # may complete the request at once
        elif self._request_finished:
            self._arm_head_timer()
        self._touch()
        try:
            return await done
        finally:
            self._conn.flow = None
            if self._head_timer:
                self._pool.deadlines.clear(self)
                self._head_timer = False
            if self._idle is not None:
                self._idle.cancel()
                self._idle = None

    def _arm_head_timer(self) -> None:
        # As Envoy's route timeout: the clock starts once the whole request is sent (an
        # upload may take longer than `timeout`), unless the upstream answers first.
        done = self._done
        if not self._head_timer and not self._got_head and done and not done.done():
            self._head_timer = True
            self._pool.deadlines.set(self, self._plan.timeout, self._head_late)

    def _head_late(self) -> None:
        up = self._up
        if up is not None:
            up.abort()
        self._finish(Failure(504, None, up.target if up else None, False))

    def _finish(self, failure: Failure | None) -> None:
        done = self._done
        if done is not None and not done.done():
            done.set_result(failure)

    def flush(self) -> None:
        """Write what one upstream read produced (the upstream connection calls this)."""
        out = self._out
        if out:
            self._conn.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def _touch(self) -> None:
        if self._plan.idle_timeout is None:
            return
        if self._idle is not None:
            self._idle.cancel()
        self._idle = self._loop.call_later(self._plan.idle_timeout, self._idle_expired)

    def _idle_expired(self) -> None:
        up = self._up
        if up is not None:
            up.abort()
        self._finish(Failure(504, None, up.target if up else None, self._head_sent))

    # -- request body (BodySink) --------------------------------------------------

    def on_request_body(self, chunk: bytes) -> None:
        if self._up is None or not chunk:
            return
        self.bytes_up += len(chunk)
        self._touch()
        if self._plan.request_chunked:
            self._up.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        else:
            self._up.write(chunk)

    def on_request_complete(self) -> None:
        self._request_finished = True
        if self._up is not None and self._plan.request_chunked:
            self._up.write(b"0\r\n\r\n")
        self._arm_head_timer()

    # -- upstream events ----------------------------------------------------------

    def on_response_head(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        keys: list[bytes],
        keep_alive: bool,
        chunked: bool,
    ) -> None:
        self._got_head = True
        if self.head_after < 0:
            self.head_after = time.monotonic() - self._started
        if self._head_timer:
            self._pool.deadlines.clear(self)
            self._head_timer = False
        self._touch()
        self._upstream_keep_alive = keep_alive
        upgrade = status == 101 and self._plan.websocket
        out = downstream_response_headers(
            headers, set_headers=self._plan.response_headers, upgrade=upgrade, keys=keys
        )
        bodiless = self._request.method == "HEAD" or status in _NO_BODY_STATUS or status < 200
        # downstream_response_headers drops Content-Length beside Transfer-Encoding.
        framed = b"content-length" in keys and b"transfer-encoding" not in keys
        if not bodiless and not framed:
            if self._request.version == "1.1":
                self._chunk_down = True
                out.append((b"transfer-encoding", b"chunked"))
            else:
                self._close_down = True
        out.append((b"x-request-id", self._plan.request_id))
        if self._close_down or not self._request.keep_alive:
            out.append((b"connection", b"close"))
            self._request.keep_alive = False
        self._request.status = status
        self._out.append(
            b"HTTP/1.1 %d %s\r\n%s\r\n"
            % (status, reason_phrase(status), b"".join([b"%s: %s\r\n" % pair for pair in out]))
        )
        self._head_sent = True
        if upgrade and self._up is not None:
            self.flush()
            self._up.raw = True
            self._conn.switch_to_raw(self)
        elif status == 101:
            # An upgrade the route does not allow: never let it through half-way.
            self._fail_midstream(None)

    def on_response_body(self, chunk: bytes) -> None:
        self._touch()
        if self._chunk_down:
            self._out.append(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        else:
            self._out.append(chunk)

    def on_response_complete(self) -> None:
        up = self._up
        if self._chunk_down:
            self._out.append(b"0\r\n\r\n")
        # Now, not at the end of the read: a released connection no longer reports.
        self.flush()
        if self._close_down:
            self._request.keep_alive = False
        if up is not None:
            if self._request_finished and self._upstream_keep_alive and up.usable and not up.raw:
                self._pool.release(up)
            else:
                # Its close is no news to this exchange, and by the time it is reported
                # the client's connection may be serving its next request.
                up.events = None
                up.close()
        self._finish(None)

    def on_upstream_raw(self, data: bytes) -> None:
        self._touch()
        self.flush()
        self._conn.write(data)

    def on_upstream_lost(self, exc: BaseException | None) -> None:
        if self._done is None or self._done.done():
            return  # this exchange is over; what became of its connection is not its news
        up = self._up
        if up is not None and up.raw:
            # The upgraded stream ended on the app's side: end the client's too.
            self.flush()
            self._conn.close()
            self._finish(None)
            return
        if self._head_sent:
            self._fail_midstream(exc)
        else:
            self._finish(Failure(502, exc, up.target if up else None, False))

    def _fail_midstream(self, exc: BaseException | None) -> None:
        # The status line is out: the only honest signal left is to cut the connection.
        self.flush()
        self._request.keep_alive = False
        self._conn.abort()
        if self._up is not None:
            self._up.abort()
        self._finish(Failure(502, exc, self._up.target if self._up else None, True))

    def pause_upstream_writes(self) -> None:
        self._conn.pause_reading()

    def resume_upstream_writes(self) -> None:
        self._conn.resume_reading()

    # -- downstream events (raw pipe and flow control) ----------------------------

    def on_downstream_raw(self, data: bytes) -> None:
        self.bytes_up += len(data)
        self._touch()
        if self._up is not None:
            self._up.write(data)

    def on_downstream_lost(self) -> None:
        if self._up is not None:
            self._up.close()
        self._finish(None)

    def pause_downstream_writes(self) -> None:
        if self._up is not None and self._up.transport is not None:
            self._up.transport.pause_reading()

    def resume_downstream_writes(self) -> None:
        if self._up is not None and self._up.transport is not None:
            self._up.transport.resume_reading()
