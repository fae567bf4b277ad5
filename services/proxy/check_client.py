"""The proxy's side of the Check hop: one long-lived CheckStream per worker.

Checks queued while the stream is busy leave together as one batch message;
results come back one message per batch and are matched by id. A gRPC message
costs a few hundred microseconds of CPU on each side whatever it carries, so the
cost per request is that divided by the batch size: this is what keeps the hop
cheap (DESIGN.md, "The hot path"). To make batches grow with load instead of
staying at the few checks of one loop turn, at most WINDOW batches are out
unanswered at a time (Nagle's idea): under light load a check leaves at once;
under heavy load the checks that arrive during a round trip leave together.

Every check has a deadline; a check that misses it, or whose stream breaks, fails
with CheckUnavailable and the proxy answers 503: nothing is forwarded without a
decision.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque

import grpc

from shared.pb import authorize_pb2, authorize_pb2_grpc
from shared.rpc import ServiceChannel, describe_rpc_error

log = logging.getLogger("vallum.proxy.check")

DEADLINE = 5.0
SWEEP_EVERY = 0.1
MAX_BATCH = 512
# Batches sent and not yet answered, per stream. One would serialise round trips; two
# let one batch fill while the other is out.
WINDOW = 2


class CheckUnavailable(Exception):
    """authorize did not decide in time (or could not be reached)."""


class _Stream:
    """One open CheckStream call with its reader."""

    def __init__(self, call: grpc.aio.StreamStreamCall) -> None:
        self.call = call
        self.closed = False
        self.unanswered: deque[float] = deque()  # when each unanswered batch left
        # Ids sent on this stream and not yet answered: they fail with it.
        self.sent: set[int] = set()


class CheckClient:
    def __init__(self, channel: ServiceChannel, *, deadline: float = DEADLINE) -> None:
        self._channel = channel
        self._deadline = deadline
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[asyncio.Future[authorize_pb2.CheckResponse], float]] = {}
        self._outbox: list[authorize_pb2.BatchedCheck] = []
        self._wake = asyncio.Event()  # checks are waiting, or the window opened
        self._tasks: list[asyncio.Task[None]] = []
        self._stream: _Stream | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

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
            self._stream.call.cancel()
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

    # -- the stream ---------------------------------------------------------------

    def _open(self) -> _Stream:
        stub = authorize_pb2_grpc.AuthorizerStub(self._channel.get())
        stream = _Stream(stub.CheckStream())
        self._tasks.append(asyncio.create_task(self._read_loop(stream)))
        return stream

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._outbox:
                continue
            if self._stream is None or self._stream.closed:
                self._stream = self._open()
            stream = self._stream
            if len(stream.unanswered) >= WINDOW:
                continue  # the reader wakes us when an answer makes room
            checks, self._outbox = self._outbox[:MAX_BATCH], self._outbox[MAX_BATCH:]
            if self._outbox:
                self._wake.set()
            await self._send(stream, authorize_pb2.CheckBatch(checks=checks))

    async def _send(self, stream: _Stream, batch: authorize_pb2.CheckBatch) -> None:
        stream.sent.update(check.id for check in batch.checks)
        stream.unanswered.append((self._loop or asyncio.get_running_loop()).time())
        try:
            await stream.call.write(batch)
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as e:
            why = (
                describe_rpc_error(e, self._channel.url)
                if isinstance(e, grpc.aio.AioRpcError)
                else str(e)
            )
            self._lost(stream, why)

    async def _read_loop(self, stream: _Stream) -> None:
        try:
            async for result in stream.call:
                if stream.unanswered:
                    stream.unanswered.popleft()
                if self._outbox:
                    self._wake.set()
                for item in result.results:
                    stream.sent.discard(item.id)
                    entry = self._pending.pop(item.id, None)
                    if entry is not None and not entry[0].done():
                        entry[0].set_result(item.response)
            self._lost(stream, "authorize closed the check stream")
        except grpc.aio.AioRpcError as e:
            self._lost(stream, describe_rpc_error(e, self._channel.url))

    def _lost(self, stream: _Stream, why: str) -> None:
        if stream.closed:
            return
        stream.closed = True
        log.warning("check stream to authorize lost: %s", why)
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
                stream.call.cancel()
                self._lost(stream, f"no answer to a batch within {self._deadline:.0f}s")

    def _fail(self, check_id: int, why: str) -> None:
        entry = self._pending.pop(check_id, None)
        if entry is not None and not entry[0].done():
            entry[0].set_exception(CheckUnavailable(why))

    def _fail_all(self, why: str) -> None:
        for check_id in list(self._pending):
            self._fail(check_id, why)
