"""The authorize service: the policy decision point, over mTLS gRPC."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import grpc

from services.authorize.authorizer import ACL, AuthorizerServicer
from services.authorize.check_channel import serve_check_channel
from services.authorize.decide import Decider
from services.authorize.session_cache import SessionCache
from services.topology import grpc_listen_address
from shared.config import Config
from shared.pb import authorize_pb2_grpc
from shared.rpc import (
    RpcServer,
    ServiceChannel,
    StartupError,
    internal_tls,
    report_reachability,
    start_server,
)
from shared.sessions import HandleCodec

log = logging.getLogger("vallum.authorize")


@dataclass
class Authorize:
    rpc: RpcServer
    sessions: ServiceChannel
    cache: SessionCache
    channel: asyncio.Server
    channel_port: int
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def servicer_cache_live(self) -> bool:
        return self.cache.live

    def describe(self) -> str:
        return (
            f"Authorizer (gRPC, mTLS) on {self.rpc.address} as {self.rpc.identity}, "
            f"check channel on port {self.channel_port}, sessions from {self.sessions.url}"
        )

    async def stop(self, grace: float) -> None:
        for task in self.tasks:
            task.cancel()
        self.channel.close()
        await self.rpc.stop(grace)
        await self.sessions.close()


async def start(config: Config) -> Authorize:
    tls = internal_tls(config)
    if config.shared_secret is None:
        raise StartupError(
            "shared_secret: required (session handles and the JWT key derive from it)"
        )
    sessions = ServiceChannel(config.databroker_service_url[0], tls)
    cache = SessionCache(sessions)
    servicer = AuthorizerServicer(Decider(config), cache, HandleCodec(config.shared_secret))

    def register(server: grpc.aio.Server) -> None:
        authorize_pb2_grpc.add_AuthorizerServicer_to_server(servicer, server)

    address = grpc_listen_address(config, "authorize")
    rpc = await start_server(address, tls, ACL, register)
    host = address.rpartition(":")[0].strip("[]")
    try:
        channel = await serve_check_channel(servicer, tls, host, config.authorize_check_port)
    except StartupError:
        await rpc.stop(0)
        raise
    service = Authorize(rpc, sessions, cache, channel, servicer.channel_port)
    service.tasks.append(
        asyncio.create_task(report_reachability(sessions, "authenticate (sessions)"))
    )
    service.tasks.append(asyncio.create_task(cache.watch()))
    return service
