"""The proxy service: the HTTPS listener users reach.

It serves the built-in endpoints (/ping, /healthz) and keeps a channel to
authorize; /healthz reports whether authorize answers over mTLS gRPC.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import grpc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from services.proxy.accept import SniAcceptor
from services.proxy.autocert.manager import Autocert, self_signed
from services.proxy.autocert.store import StoreError
from services.proxy.check_client import CheckClient
from services.proxy.client_trust import DownstreamTrust
from services.proxy.handler import Handler
from services.proxy.http import HttpConnection, reap_idle
from services.proxy.pages import Pages
from services.proxy.redirect import RedirectToHTTPS
from services.proxy.routes import ProxyRoutes
from services.proxy.session_pages import SessionPages
from services.proxy.upstream import Pool
from services.proxy.user_pages import UserPages
from services.proxy.well_known import WellKnown
from services.topology import format_address
from shared.config import Config
from shared.listen import bind
from shared.material import MaterialError
from shared.rpc import (
    ServiceChannel,
    StartupError,
    check_health,
    describe_rpc_error,
    internal_tls,
    report_reachability,
)
from shared.server_tls import CertificateSet, certificate_sources
from shared.sessions import HandleCodec

log = logging.getLogger("vallum.proxy")

HEALTH_TIMEOUT = 2.0


@dataclass
class Proxy:
    config: Config
    authorize: ServiceChannel
    certificates: CertificateSet | None
    check: CheckClient
    pool: Pool
    sessions: ServiceChannel
    trust: DownstreamTrust | None = None
    autocert: Autocert | None = None
    server: asyncio.Server | None = None
    acceptor: SniAcceptor | None = None
    redirect_server: asyncio.Server | None = None
    redirect_bound: str = ""
    connections: set[HttpConnection] = field(default_factory=set)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    bound: str = ""

    def describe(self) -> str:
        scheme = "http" if self.certificates is None else "https"
        redirect = f", http->https on {self.redirect_bound}" if self.redirect_bound else ""
        return f"{scheme} on {self.bound}{redirect}, authorize at {self.authorize.url}"

    async def healthz(self, request: Request) -> Response:
        try:
            status = await check_health(self.authorize.get(), timeout=HEALTH_TIMEOUT)
        except grpc.aio.AioRpcError as e:
            reason = describe_rpc_error(e, self.authorize.url)
            return JSONResponse({"status": "unavailable", "authorize": reason}, status_code=503)
        code = 200 if status == "SERVING" else 503
        return JSONResponse(
            {"status": "ok" if code == 200 else "unavailable", "authorize": status},
            status_code=code,
        )

    async def stop(self, grace: float) -> None:
        for server in (self.server, self.redirect_server):
            if server is not None:
                server.close()  # no new connections
        if self.acceptor is not None:
            self.acceptor.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        # Idle keep-alive connections go now; busy ones when their request is done.
        while loop.time() < deadline:
            busy = [c for c in self.connections if c.busy]
            for conn in self.connections - set(busy):
                conn.close()
            if not busy:
                break
            await asyncio.sleep(0.05)
        else:
            log.warning("requests still running after %.0fs; closing them", grace)
        for conn in list(self.connections):
            conn.abort()
        if self.autocert is not None:
            await self.autocert.stop()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.check.close()
        await self.pool.close()
        await self.authorize.close()
        await self.sessions.close()


async def ping(request: Request) -> Response:
    return PlainTextResponse("OK")


async def start(config: Config) -> Proxy:
    tls = internal_tls(config)
    sources = certificate_sources(config)
    if not sources and not config.insecure_server and not config.autocert:
        raise StartupError(
            "certificate_file: the proxy needs a server certificate (certificate_file + "
            "certificate_key_file, or certificates), or insecure_server: true behind a "
            "TLS-terminating load balancer"
        )
    autocert: Autocert | None = None
    if config.insecure_server:
        certificates = None
    elif config.autocert:
        hosts = config.autocert_hosts()
        certificates = CertificateSet(
            sources, fallback=self_signed(hosts[0] if hosts else "localhost")
        )
        try:
            autocert = Autocert(config, certificates)
        except (StoreError, MaterialError) as e:
            raise StartupError(str(e)) from None
    else:
        certificates = CertificateSet(sources)
    trust = None
    if certificates is not None:
        try:
            trust = DownstreamTrust(config, certificates)
        except MaterialError as e:
            raise StartupError(str(e)) from None
        if not trust.enabled:
            trust = None
    try:
        well_known = WellKnown(config)
    except ValueError as e:
        raise StartupError(f"shared_secret: {e} (the JWKS publishes the signing keys)") from None
    channel = ServiceChannel(config.authorize_service_url[0], tls)
    sessions = ServiceChannel(config.databroker_service_url[0], tls)
    check = CheckClient(channel)
    pool = Pool()
    proxy = Proxy(config, channel, certificates, check, pool, sessions, trust)
    proxy.autocert = autocert
    assert config.shared_secret is not None  # WellKnown needs it too, checked above
    routes = ProxyRoutes(config)
    user = UserPages(sessions, HandleCodec(config.shared_secret), config.cookie_name)
    session_pages = SessionPages(config)
    builtin = Starlette(
        routes=[
            Route("/ping", ping),
            Route("/healthz", proxy.healthz),
            Route("/.well-known/pomerium", well_known.metadata),
            Route("/.well-known/pomerium/", well_known.metadata),
            Route("/.well-known/pomerium/jwks.json", well_known.jwks),
            Route("/.pomerium/", user.page),
            Route("/.pomerium/user", user.user),
            Route("/.pomerium/callback", session_pages.callback),
            Route("/.pomerium/sign_out", session_pages.sign_out, methods=["GET", "POST"]),
        ]
    )
    handler = Handler(
        routes,
        check,
        pool,
        Pages(sign_in_url(config)),
        builtin,
        session_pages if config.authenticate_service_url else None,
        trust,
    )
    sock = bind(format_address(config.address), "address", reuse_port=config.proxy_workers > 1)
    proxy.bound = "{}:{}".format(*sock.getsockname()[:2])
    loop = asyncio.get_running_loop()
    if (trust is not None or autocert is not None) and certificates is not None:
        # Some hosts ask for client certificates, or TLS-ALPN-01 must be answered:
        # choose the TLS stack by SNI and ALPN.
        proxy.acceptor = SniAcceptor(
            sock,
            lambda: HttpConnection(handler, proxy.connections),
            certificates,
            trust,
            autocert.tls_alpn01_context if autocert is not None else None,
            autocert.stapled_context if autocert is not None else None,
        )
        proxy.acceptor.start()
    else:
        proxy.server = await loop.create_server(
            lambda: HttpConnection(handler, proxy.connections),
            sock=sock,
            ssl=certificates.listener if certificates is not None else None,
            backlog=1024,
        )
    if config.http_redirect_addr is not None and certificates is not None:
        redirect_sock = bind(
            format_address(config.http_redirect_addr),
            "http_redirect_addr",
            reuse_port=config.proxy_workers > 1,
        )
        proxy.redirect_server = await loop.create_server(
            lambda: HttpConnection(
                RedirectToHTTPS(
                    config.address.port, autocert.http01 if autocert is not None else None
                ),
                proxy.connections,
            ),
            sock=redirect_sock,
        )
        proxy.redirect_bound = "{}:{}".format(*redirect_sock.getsockname()[:2])
    check.start()
    pool.start()
    proxy.tasks.append(asyncio.create_task(reap_idle(proxy.connections)))
    if certificates is not None:
        proxy.tasks.append(asyncio.create_task(watch_certificates(certificates, trust)))
    if autocert is not None:
        autocert.start()  # after the listeners: validation requests must find them
    proxy.tasks.append(asyncio.create_task(report_reachability(channel, "authorize")))
    return proxy


async def watch_certificates(
    certificates: CertificateSet, trust: DownstreamTrust | None, interval: float = 1.0
) -> None:
    """Server certificates, client CAs and CRLs: re-read when their files change."""
    while True:
        await asyncio.sleep(interval)
        certificates.reload_if_changed()
        if trust is not None:
            trust.reload_if_changed()


def sign_in_url(config: Config) -> str | None:
    if not config.authenticate_service_url:
        return None
    return config.authenticate_service_url.rstrip("/") + "/.pomerium/sign_in"
