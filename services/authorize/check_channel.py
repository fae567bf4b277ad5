"""The check channel: authorize's hot-path listener for the proxy's checks.

The same CheckBatch / CheckResultBatch messages as the CheckStream RPC, each in a
length-prefixed frame (shared.frames) on a TLS 1.3 stream with the internal mTLS
material. gRPC costs several times more CPU per message than this, and a message
carries only the few checks of one round trip (make bench: "What one message costs
on the Check hop"). Only the proxy may connect: its certificate must chain to the
internal CA and name spiffe://<trust domain>/proxy, or the connection is closed
before any frame is read. A frame that is too long or not a CheckBatch closes the
connection too. Batches are answered one message each, in any order, as CheckStream
answers them; a batch that waits for a session fetch holds up no other.
"""

from __future__ import annotations

import asyncio
import logging
import time

from google.protobuf.message import DecodeError

from services.authorize.authorizer import AuthorizerServicer, Waiting
from shared.frames import FrameError, FrameReader, frame
from shared.internal_ssl import ServerContext, peer_service
from shared.listen import bind
from shared.pb import authorize_pb2
from shared.rpc import InternalTLS

log = logging.getLogger("vallum.authorize.channel")

ALLOWED = "proxy"


class CheckChannelProtocol(asyncio.Protocol):
    def __init__(self, servicer: AuthorizerServicer, trust_domain: str) -> None:
        self._servicer = servicer
        self._trust_domain = trust_domain
        self._reader = FrameReader()
        self._transport: asyncio.Transport | None = None
        self._fetching: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        who = peer_service(transport.get_extra_info("ssl_object"), self._trust_domain)
        if who != ALLOWED:
            log.warning(
                "check channel: refused %s: service identity %s, only %s may connect",
                peer,
                repr(who) if who else "none",
                ALLOWED,
            )
            transport.close()
            self._transport = None

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            return
        try:
            messages = self._reader.feed(data)
            batches = [authorize_pb2.CheckBatch.FromString(m) for m in messages]
        except (FrameError, DecodeError) as e:
            log.warning("check channel: dropped a connection that sent a bad frame: %s", e)
            self._close()
            return
        for batch in batches:
            out, waiting = self._servicer.decide_cached(batch, time.time())
            if not waiting:
                self._send(out)
                continue
            task = asyncio.get_running_loop().create_task(self._complete(out, waiting))
            self._fetching.add(task)
            task.add_done_callback(self._fetching.discard)

    async def _complete(self, out: authorize_pb2.CheckResultBatch, waiting: list[Waiting]) -> None:
        await self._servicer.decide_waiting(waiting, time.time())
        self._send(out)

    def _send(self, out: authorize_pb2.CheckResultBatch) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(frame(out.SerializeToString()))

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        for task in self._fetching:
            task.cancel()


async def serve_check_channel(
    servicer: AuthorizerServicer, tls: InternalTLS, host: str, port: int
) -> asyncio.Server:
    """Listen on host:port (0: any free port) and tell the servicer the port."""
    context = ServerContext(tls)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    sock = bind(address, "authorize_check_port")
    server = await asyncio.get_running_loop().create_server(
        lambda: CheckChannelProtocol(servicer, tls.trust_domain),
        sock=sock,
        ssl=context.listener,
        backlog=128,
    )
    servicer.channel_port = sock.getsockname()[1]
    return server
