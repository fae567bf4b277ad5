"""The proxy's Check stream against a real mTLS gRPC server on 127.0.0.1.

The server is a servicer that holds its answers until the test releases them, so the
stream's behaviour under a slow or silent authorize can be watched: batches grow
while answers are outstanding, and a stream that stops answering fails its checks
closed and is replaced.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from services.authorize.authorizer import ACL as AUTHORIZE_ACL
from services.proxy.check_client import WINDOW, CheckClient, CheckUnavailable
from shared.pb import authorize_pb2, authorize_pb2_grpc
from shared.rpc import RpcServer, ServiceChannel, start_server
from tests.support.certs import make_ca, service_pair

pytestmark = pytest.mark.integration


@dataclass
class Gate(authorize_pb2_grpc.AuthorizerServicer):
    """Records each batch; answers it (ALLOW) only once the test opens the gate."""

    batches: list[list[int]] = field(default_factory=list)
    open: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    streams: int = 0

    async def Check(
        self, request: authorize_pb2.CheckRequest, context: grpc.aio.ServicerContext
    ) -> authorize_pb2.CheckResponse:
        raise NotImplementedError("the proxy checks over CheckStream")

    async def CheckChannel(
        self, request: authorize_pb2.CheckChannelRequest, context: grpc.aio.ServicerContext
    ) -> authorize_pb2.CheckChannelInfo:
        return authorize_pb2.CheckChannelInfo(port=0)  # no channel: CheckStream it is

    async def CheckStream(
        self,
        requests: AsyncIterator[authorize_pb2.CheckBatch],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[authorize_pb2.CheckResultBatch]:
        self.streams += 1
        # Read on while answers are held, as authorize does.
        received: asyncio.Queue[authorize_pb2.CheckBatch | None] = asyncio.Queue()

        async def read() -> None:
            async for batch in requests:
                async with self.arrived:
                    self.batches.append([c.id for c in batch.checks])
                    self.arrived.notify_all()
                received.put_nowait(batch)
            received.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (batch := await received.get()) is not None:
                await self.open.wait()
                yield self.answer(batch)
        finally:
            reader.cancel()

    @staticmethod
    def answer(batch: authorize_pb2.CheckBatch) -> authorize_pb2.CheckResultBatch:
        return authorize_pb2.CheckResultBatch(
            results=[
                authorize_pb2.BatchedResult(
                    id=c.id, response=authorize_pb2.CheckResponse(outcome=authorize_pb2.ALLOW)
                )
                for c in batch.checks
            ]
        )

    async def wait_for_batches(self, count: int) -> None:
        async with self.arrived:
            await asyncio.wait_for(
                self.arrived.wait_for(lambda: len(self.batches) >= count), timeout=10
            )


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Gate, ServiceChannel]]:
    ca = make_ca(tmp_path / "ca")
    ca_pem = tmp_path / "ca" / "ca.pem"
    gate = Gate()
    server: RpcServer = await start_server(
        "127.0.0.1:0",
        service_pair(ca, tmp_path, "authorize").tls(ca_pem),
        AUTHORIZE_ACL,
        lambda s: authorize_pb2_grpc.add_AuthorizerServicer_to_server(gate, s),
    )
    port = int(server.address.rsplit(":", 1)[1])
    channel = ServiceChannel(
        f"https://127.0.0.1:{port}", service_pair(ca, tmp_path, "proxy").tls(ca_pem)
    )
    yield gate, channel
    await channel.close()
    await server.stop(0)


def request(n: int) -> authorize_pb2.CheckRequest:
    return authorize_pb2.CheckRequest(request_id=f"r{n}", host="app.example.com", path="/")


async def test_checks_wait_for_room_in_the_window_and_then_leave_together(
    served: tuple[Gate, ServiceChannel],
) -> None:
    gate, channel = served
    client = CheckClient(channel)
    client.start()
    try:
        first = []
        for n in range(WINDOW):
            first.append(asyncio.create_task(client.check(request(n))))
            await gate.wait_for_batches(n + 1)
        # One batch per check so far: each left at once, as there was room.
        assert [len(b) for b in gate.batches] == [1] * WINDOW
        # The window is full: these wait in the proxy, whatever time passes.
        waiting = [asyncio.create_task(client.check(request(n))) for n in range(100, 110)]
        await asyncio.sleep(0.3)
        assert len(gate.batches) == WINDOW
        gate.open.set()
        answers = await asyncio.wait_for(asyncio.gather(*first, *waiting), timeout=10)
        assert all(a.outcome == authorize_pb2.ALLOW for a in answers)
        assert client.transport == "CheckStream RPC"
        # ...and left as one batch when an answer made room.
        assert [len(b) for b in gate.batches] == [1] * WINDOW + [10]
    finally:
        await client.close()


async def test_a_stream_that_stops_answering_fails_closed_and_is_replaced(
    served: tuple[Gate, ServiceChannel],
) -> None:
    gate, channel = served
    client = CheckClient(channel, deadline=0.5)
    client.start()
    try:
        silent = [asyncio.create_task(client.check(request(n))) for n in range(3)]
        for task in silent:
            with pytest.raises(CheckUnavailable):
                await asyncio.wait_for(task, timeout=10)
        assert gate.streams == 1
        # The stream that left a batch unanswered past the deadline is given up...
        for _ in range(100):
            if client.transport == "":
                break
            await asyncio.sleep(0.05)
        assert client.transport == ""
        # ...so when authorize answers again, the next check goes out on a new stream
        # and is allowed.
        gate.open.set()
        answer = await asyncio.wait_for(client.check(request(99)), timeout=10)
        assert answer.outcome == authorize_pb2.ALLOW
        assert gate.streams == 2
    finally:
        await client.close()
