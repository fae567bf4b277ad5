"""The authorize service: the policy decision point, over mTLS gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import grpc

from services import runtime
from services.agreement import ACL as AGREEMENT_ACL
from services.agreement import AgreementServicer, agree
from services.authorize.authorizer import ACL, AuthorizerServicer
from services.authorize.check_channel import serve_check_channel
from services.authorize.decide import Decider
from services.authorize.session_cache import SessionCache
from services.reload import Reloader
from services.topology import grpc_listen_address
from shared.config import Config
from shared.config.reload import routes_version
from shared.pb import agreement_pb2_grpc, authorize_pb2_grpc
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

CATCH_UP_SECONDS = 2.0


@dataclass
class Authorize:
    rpc: RpcServer
    sessions: ServiceChannel
    cache: SessionCache
    channel: asyncio.Server
    channel_port: int
    servicer: AuthorizerServicer
    agreement: AgreementServicer
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    reloader: Reloader | None = None  # set by the runtime when it reloads this service

    def servicer_cache_live(self) -> bool:
        return self.cache.live

    def apply(self, config: Config) -> None:
        """Decide with a reloaded configuration from the next check."""
        decider = Decider(config)  # compiles every policy, signs with the first key
        self.servicer.update(decider, routes_version(config))
        self.agreement.update(config)

    async def catch_up(self) -> None:
        """A proxy sent newer routes than ours: read the config file now, if it changed
        (waiting at most CATCH_UP_SECONDS; the check fails closed if that is not enough)."""
        if self.reloader is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.reloader.reload_if_changed(), CATCH_UP_SECONDS)

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
    if config.shared_secret is None or config.cookie_secret is None:
        raise StartupError(
            "shared_secret, cookie_secret: required (the session cookie is sealed with "
            "cookie_secret; the default JWT key derives from shared_secret)"
        )
    sessions = ServiceChannel(config.databroker_service_url, tls)
    cache = SessionCache(sessions)
    servicer = AuthorizerServicer(
        Decider(config), cache, HandleCodec(config.cookie_secret), routes_version(config)
    )

    agreement = AgreementServicer(config, "authorize")

    def register(server: grpc.aio.Server) -> None:
        authorize_pb2_grpc.add_AuthorizerServicer_to_server(servicer, server)
        agreement_pb2_grpc.add_AgreementServicer_to_server(agreement, server)

    address = grpc_listen_address(config, "authorize")
    rpc = await start_server(address, tls, {**ACL, **AGREEMENT_ACL}, register)
    try:
        asking = await agree(config, "authorize", tls, runtime.refuse)
    except StartupError:
        await rpc.stop(0)
        raise
    host = address.rpartition(":")[0].strip("[]")
    try:
        channel = await serve_check_channel(servicer, tls, host, config.authorize_check_port)
    except StartupError:
        await rpc.stop(0)
        raise
    service = Authorize(rpc, sessions, cache, channel, servicer.channel_port, servicer, agreement)
    servicer.catch_up = service.catch_up
    if asking is not None:
        service.tasks.append(asking)
    service.tasks.append(
        asyncio.create_task(report_reachability(sessions, "authenticate (sessions)"))
    )
    service.tasks.append(asyncio.create_task(cache.watch()))
    return service
