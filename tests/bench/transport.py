"""What one message costs on the Check hop: grpc.aio against a plain framed TLS stream.

Both carry the same protobuf messages (a CheckBatch with one check out, a
CheckResultBatch back) between two processes over TLS on loopback, with the
project's CA and a P-256 server certificate, one message in flight (ping-pong),
on uvloop. For each: CPU µs per message in the client (this process) and in the
server process (from /proc), and the round trip. This is the evidence for the
choice of transport: batching divides a message's cost among the checks it carries,
but only a cheaper message makes the hop itself cheaper.

Run alone: python -m tests.bench.transport
"""

from __future__ import annotations

import asyncio
import resource
import ssl
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import uvloop

from shared.pb import authorize_pb2, authorize_pb2_grpc
from shared.pki import init_ca, issue_server, write_issued
from tests.bench.load import cpu_seconds
from tests.support.net import free_port, wait_for_port
from tests.support.procs import Proc

MESSAGES = 3_000
WARMUP = 300
_LENGTH = struct.Struct(">I")


def _answer(batch: authorize_pb2.CheckBatch) -> authorize_pb2.CheckResultBatch:
    return authorize_pb2.CheckResultBatch(
        results=[
            authorize_pb2.BatchedResult(
                id=c.id, response=authorize_pb2.CheckResponse(outcome=authorize_pb2.ALLOW)
            )
            for c in batch.checks
        ]
    )


class _Echo(authorize_pb2_grpc.AuthorizerServicer):
    async def Check(self, request, context):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    async def CheckChannel(self, request, context):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    async def CheckStream(self, requests, context):  # type: ignore[no-untyped-def]
        async for batch in requests:
            yield _answer(batch)


class _Framed(asyncio.Protocol):
    """Length-prefixed protobuf messages; calls `on_message` for each whole one."""

    def __init__(self, on_message: Callable[[_Framed, bytes], None]) -> None:
        self._buffer = bytearray()
        self._on_message = on_message
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= 4:
            (size,) = _LENGTH.unpack_from(self._buffer)
            if len(self._buffer) < 4 + size:
                return
            message = bytes(self._buffer[4 : 4 + size])
            del self._buffer[: 4 + size]
            self._on_message(self, message)

    def send(self, message: bytes) -> None:
        assert self.transport is not None
        self.transport.write(_LENGTH.pack(len(message)) + message)


async def _serve(kind: str, port: int, cert: str, key: str) -> None:
    if kind == "grpc":
        server = grpc.aio.server()
        authorize_pb2_grpc.add_AuthorizerServicer_to_server(_Echo(), server)
        pem = (Path(key).read_bytes(), Path(cert).read_bytes())
        server.add_secure_port(f"127.0.0.1:{port}", grpc.ssl_server_credentials([pem]))
        await server.start()
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)

        def reply(conn: _Framed, message: bytes) -> None:
            batch = authorize_pb2.CheckBatch.FromString(message)
            conn.send(_answer(batch).SerializeToString())

        loop = asyncio.get_running_loop()
        await loop.create_server(lambda: _Framed(reply), "127.0.0.1", port, ssl=context)
    await asyncio.Event().wait()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _ping_pong(send_and_wait: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    for _ in range(WARMUP):
        await send_and_wait()
    cpu, samples = _cpu(), []
    for _ in range(MESSAGES):
        start = time.perf_counter()
        await send_and_wait()
        samples.append(time.perf_counter() - start)
    return (_cpu() - cpu) / MESSAGES * 1e6, statistics.median(samples) * 1e6


def _batch() -> authorize_pb2.CheckBatch:
    batch = authorize_pb2.CheckBatch()
    check = batch.checks.add(id=1).request
    check.request_id, check.scheme, check.host = "0123456789abcdef", "https", "app.example.com"
    check.method, check.path, check.source_ip = "GET", "/", "127.0.0.1"
    check.session_handle = "v1." + "A" * 140
    return batch


async def _client(kind: str, port: int, ca: Path) -> tuple[float, float]:
    batch = _batch()
    if kind == "grpc":
        credentials = grpc.ssl_channel_credentials(ca.read_bytes())
        async with grpc.aio.secure_channel(f"localhost:{port}", credentials) as channel:
            call = authorize_pb2_grpc.AuthorizerStub(channel).CheckStream()

            async def grpc_round() -> None:
                await call.write(batch)
                await call.read()

            result = await _ping_pong(grpc_round)
            call.cancel()
            return result
    context = ssl.create_default_context(cafile=str(ca))
    loop = asyncio.get_running_loop()
    waiting: list[asyncio.Future[bytes]] = []

    def answered(_: _Framed, message: bytes) -> None:
        waiting.pop().set_result(message)

    transport, conn = await loop.create_connection(
        lambda: _Framed(answered), "127.0.0.1", port, ssl=context, server_hostname="localhost"
    )
    wire = batch.SerializeToString()

    async def framed_round() -> None:
        future: asyncio.Future[bytes] = loop.create_future()
        waiting.append(future)
        conn.send(wire)
        authorize_pb2.CheckResultBatch.FromString(await future)

    result = await _ping_pong(framed_round)
    transport.close()
    return result


def run() -> list[tuple[str, float, float, float]]:
    """(transport, client CPU µs/message, server CPU µs/message, round trip µs)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="vallum-transport-") as d:
        ca = init_ca(Path(d) / "ca")
        paths = write_issued(issue_server(ca, ["localhost"]), Path(d), "server")
        for kind, title in (("grpc", "grpc.aio bidi stream"), ("framed", "framed TLS stream")):
            port = free_port()
            server = Proc(
                [
                    sys.executable,
                    "-m",
                    "tests.bench.transport",
                    "serve",
                    kind,
                    str(port),
                    str(paths.cert),
                    str(paths.key),
                ]
            )
            try:
                wait_for_port(port)
                before = cpu_seconds(server.process.pid)
                client_us, rtt_us = uvloop.run(_client(kind, port, Path(d) / "ca" / "ca.pem"))
                server_us = (cpu_seconds(server.process.pid) - before) / (MESSAGES + WARMUP) * 1e6
            finally:
                server.stop()
            rows.append((title, client_us, server_us, rtt_us))
    return rows


def report() -> str:
    lines = [
        "| transport, TLS, one message in flight | client CPU µs / message "
        "| server CPU µs / message | round trip p50 µs |",
        "|---|---|---|---|",
    ]
    lines += [f"| {t} | {c:.0f} | {s:.0f} | {r:.0f} |" for t, c, s, r in run()]
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        kind, port, cert, key = sys.argv[2:6]
        uvloop.run(_serve(kind, int(port), cert, key))
    else:
        print(report())
