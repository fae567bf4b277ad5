"""The proxy's side of the Check hop: one long-lived stream of batches per worker.

Checks queued while the stream is busy leave together as one batch message;
results come back one message per batch and are matched by id. A message costs
CPU on each side whatever it carries, so the cost per request is that divided by
the batch size. To make batches grow with load instead of staying at the few
checks of one loop turn, at most WINDOW batches are out unanswered at a time
(Nagle's idea): under light load a check leaves at once; under heavy load the
checks that arrive during a round trip leave together.

The stream is authorize's check channel (length-prefixed messages on a plain mTLS
stream, where it listens is asked over gRPC) when it can be reached, else the
CheckStream RPC: a gRPC message costs several times the CPU of a framed one (make
bench, "What one message costs on the Check hop"). An unreachable channel is tried
again every RETRY_CHANNEL seconds.

Every check has a deadline; a check that misses it, or whose stream breaks, fails
with CheckUnavailable and the proxy answers 503: nothing is forwarded without a
decision.
"""

from __future__ import annotations

import abc
import asyncio
import itertools
import logging
import ssl
from collections import deque
from urllib.parse import urlsplit

import grpc
from google.protobuf.message import DecodeError

from shared.frames import FrameError, FrameReader, frame
from shared.internal_ssl import client_context, peer_service
from shared.pb import authorize_pb2, authorize_pb2_grpc
from shared.rpc import ServiceChannel, describe_rpc_error

log = logging.getLogger("vallum.proxy.check")

DEADLINE = 5.0
SWEEP_EVERY = 0.1
MAX_BATCH = 512
# Batches sent and not yet answered, per stream. One would serialise round trips; two
# let one batch fill while the other is out.
WINDOW = 2
CONNECT_TIMEOUT = 2.0
RETRY_CHANNEL = 30.0


class CheckUnavailable(Exception):
    """authorize did not decide in time (or could not be reached)."""


class _NoChannel(Exception):
    """The check channel cannot be used now; the reason is for the log."""


class _Stream(abc.ABC):
    """One open stream to authorize, whichever the transport."""

    kind = ""

    def __init__(self) -> None:
        self.closed = False
        self.unanswered: deque[float] = deque()  # when each unanswered batch left
        # Ids sent on this stream and not yet answered: they fail with it.
        self.sent: set[int] = set()

    @abc.abstractmethod
    async def send(self, batch: authorize_pb2.CheckBatch) -> None:
        """Put `batch` on the stream (answers arrive through CheckClient._answered)."""

    @abc.abstractmethod
    def cancel(self) -> None:
        """Drop the stream at once."""


class _GrpcStream(_Stream):
    kind = "CheckStream RPC"

    def __init__(self, call: grpc.aio.StreamStreamCall) -> None:
        super().__init__()
        self.call = call

    async def send(self, batch: authorize_pb2.CheckBatch) -> None:
        await self.call.write(batch)

    def cancel(self) -> None:
        self.call.cancel()


class _ChannelStream(_Stream, asyncio.Protocol):
    kind = "check channel"

    def __init__(self, client: CheckClient) -> None:
        super().__init__()
        self._client = client
        self._reader = FrameReader()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            results = [
                authorize_pb2.CheckResultBatch.FromString(m) for m in self._reader.feed(data)
            ]
        except (FrameError, DecodeError) as e:
            self.cancel()
            self._client._lost(self, f"authorize sent a bad frame: {e}")
            return
        for result in results:
            self._client._answered(self, result)

    def connection_lost(self, exc: Exception | None) -> None:
        why = f"the check channel closed: {exc}" if exc else "authorize closed the check channel"
        self._client._lost(self, why)

    async def send(self, batch: authorize_pb2.CheckBatch) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError("the check channel is closed")
        self.transport.write(frame(batch.SerializeToString()))

    def cancel(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class CheckClient:
    def __init__(
        self, channel: ServiceChannel, *, deadline: float = DEADLINE, use_channel: bool = True
    ) -> None:
        self._channel = channel
        self._deadline = deadline
        self._use_channel = use_channel
        self._channel_retry_at = 0.0
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[asyncio.Future[authorize_pb2.CheckResponse], float]] = {}
        self._outbox: list[authorize_pb2.BatchedCheck] = []
        self._wake = asyncio.Event()  # checks are waiting, or the window opened
        self._tasks: list[asyncio.Task[None]] = []
        self._stream: _Stream | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def transport(self) -> str:
        """What the current stream runs on ("" before the first check)."""
        return self._stream.kind if self._stream is not None and not self._stream.closed else ""

    def start(self) -> None:
        # Looked up once: asyncio.get_running_loop() is a getpid() system call each time.
        self._loop = asyncio.get_running_loop()
        self._tasks = [
            asyncio.create_task(self._write_loop()),
            asyncio.create_task(self._sweep_loop()),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._stream is not None:
            self._stream.cancel()
        self._fail_all("proxy shutting down")

    async def check(self, request: authorize_pb2.CheckRequest) -> authorize_pb2.CheckResponse:
        """authorize's decision on `request`, or CheckUnavailable."""
        return await self.decide(authorize_pb2.BatchedCheck(request=request))

    async def decide(self, batched: authorize_pb2.BatchedCheck) -> authorize_pb2.CheckResponse:
        """As check(), for a BatchedCheck whose request was filled in place (no copy)."""
        loop = self._loop or asyncio.get_running_loop()
        future: asyncio.Future[authorize_pb2.CheckResponse] = loop.create_future()
        check_id = batched.id = next(self._ids)
        self._pending[check_id] = (future, loop.time() + self._deadline)
        self._outbox.append(batched)
        self._wake.set()
        return await future

    # -- opening a stream ---------------------------------------------------------

    async def _open(self) -> _Stream:
        loop = asyncio.get_running_loop()
        if self._use_channel and loop.time() >= self._channel_retry_at:
            try:
                return await self._open_channel()
            except _NoChannel as e:
                self._channel_retry_at = loop.time() + RETRY_CHANNEL
                log.warning(
                    "check channel to authorize not used (%s); checking over the CheckStream "
                    "RPC, trying the channel again in %.0fs",
                    e,
                    RETRY_CHANNEL,
                )
        stub = authorize_pb2_grpc.AuthorizerStub(self._channel.get())
        stream = _GrpcStream(stub.CheckStream())
        self._tasks.append(asyncio.create_task(self._read_loop(stream)))
        return stream

    async def _open_channel(self) -> _ChannelStream:
        stub = authorize_pb2_grpc.AuthorizerStub(self._channel.get())
        try:
            info = await stub.CheckChannel(
                authorize_pb2.CheckChannelRequest(), timeout=CONNECT_TIMEOUT
            )
        except grpc.aio.AioRpcError as e:
            raise _NoChannel(describe_rpc_error(e, self._channel.url)) from None
        if not info.port:
            raise _NoChannel("authorize has no check channel")
        host = urlsplit(self._channel.url).hostname or ""
        tls = self._channel.tls
        try:
            context = client_context(tls)
            transport, stream = await asyncio.wait_for(
                asyncio.get_running_loop().create_connection(
                    lambda: _ChannelStream(self), host, info.port, ssl=context, server_hostname=host
                ),
                CONNECT_TIMEOUT,
            )
        except (OSError, ssl.SSLError, TimeoutError) as e:
            raise _NoChannel(f"{host}:{info.port}: {e}") from None
        who = peer_service(transport.get_extra_info("ssl_object"), tls.trust_domain)
        if who != "authorize":
            stream.closed = True  # not a stream to report as lost
            transport.abort()
            raise _NoChannel(f"{host}:{info.port} presented identity {who!r}, not 'authorize'")
        log.info("checking over authorize's check channel at %s:%d", host, info.port)
        return stream

    # -- the stream ---------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._outbox:
                continue
            if self._stream is None or self._stream.closed:
                self._stream = await self._open()
            stream = self._stream
            if len(stream.unanswered) >= WINDOW:
                continue  # an answer wakes us when it makes room
            checks, self._outbox = self._outbox[:MAX_BATCH], self._outbox[MAX_BATCH:]
            if self._outbox:
                self._wake.set()
            await self._send(stream, authorize_pb2.CheckBatch(checks=checks))

    async def _send(self, stream: _Stream, batch: authorize_pb2.CheckBatch) -> None:
        stream.sent.update(check.id for check in batch.checks)
        stream.unanswered.append((self._loop or asyncio.get_running_loop()).time())
        try:
            await stream.send(batch)
        except grpc.aio.AioRpcError as e:
            self._lost(stream, describe_rpc_error(e, self._channel.url))
        except (grpc.aio.UsageError, asyncio.InvalidStateError, ConnectionError) as e:
            self._lost(stream, str(e))

    def _answered(self, stream: _Stream, result: authorize_pb2.CheckResultBatch) -> None:
        if stream.unanswered:
            stream.unanswered.popleft()
        if self._outbox:
            self._wake.set()
        for item in result.results:
            stream.sent.discard(item.id)
            entry = self._pending.pop(item.id, None)
            if entry is not None and not entry[0].done():
                entry[0].set_result(item.response)

    async def _read_loop(self, stream: _GrpcStream) -> None:
        try:
            async for result in stream.call:
                self._answered(stream, result)
            self._lost(stream, "authorize closed the check stream")
        except grpc.aio.AioRpcError as e:
            self._lost(stream, describe_rpc_error(e, self._channel.url))

    def _lost(self, stream: _Stream, why: str) -> None:
        if stream.closed:
            return
        stream.closed = True
        log.warning("%s to authorize lost: %s", stream.kind, why)
        # Checks already sent on this stream will never be answered on it; those
        # still queued go out on the next stream.
        for check_id in stream.sent:
            self._fail(check_id, why)
        stream.sent.clear()
        if self._outbox:
            self._wake.set()

    # -- deadlines ----------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_EVERY)
            now = loop.time()
            late = [i for i, (_, deadline) in self._pending.items() if deadline <= now]
            for check_id in late:
                self._fail(check_id, f"authorize did not answer within {self._deadline:.0f}s")
            if late:
                # Checks that timed out in the outbox must not be sent later.
                self._outbox = [c for c in self._outbox if c.id in self._pending]
            stream = self._stream
            stale = stream and stream.unanswered and now - stream.unanswered[0] > self._deadline
            if stream and stale and not stream.closed:
                # A stream that stopped answering would hold the window shut forever:
                # give it up and start another.
                stream.cancel()
                self._lost(stream, f"no answer to a batch within {self._deadline:.0f}s")

    def _fail(self, check_id: int, why: str) -> None:
        entry = self._pending.pop(check_id, None)
        if entry is not None and not entry[0].done():
            entry[0].set_exception(CheckUnavailable(why))

    def _fail_all(self, why: str) -> None:
        for check_id in list(self._pending):
            self._fail(check_id, why)
