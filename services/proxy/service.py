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

from services import runtime
from services.agreement import agree, peer_routes_version
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
from shared.signing import signing_keys

log = logging.getLogger("vallum.proxy")

HEALTH_TIMEOUT = 2.0
# How often a proxy with reloaded routes asks whether authorize has them, and after how
# long it says so in its log.
SWITCH_POLL = 0.25
SWITCH_PATIENCE = 10.0


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
    handler: Handler | None = None
    well_known: WellKnown | None = None
    # Reloaded routes waiting for authorize to have them too.
    switching: asyncio.Task[None] | None = None
    server: asyncio.Server | None = None
    acceptor: SniAcceptor | None = None
    redirect_server: asyncio.Server | None = None
    redirect_bound: str = ""
    connections: set[HttpConnection] = field(default_factory=set)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    bound: str = ""

    def apply(self, config: Config) -> None:
        """Serve a reloaded configuration from the next request: build it all, then swap."""
        assert self.handler is not None and self.well_known is not None
        routes = ProxyRoutes(config)
        jwks = signing_keys(config).jwks_json
        # Client-certificate trust is per route: rebuilt with the routes. Whether the
        # listener asks for certificates at all is fixed at start.
        trust = None
        if self.certificates is not None:
            trust = DownstreamTrust(config, self.certificates)
            if trust.enabled != (self.trust is not None):
                raise StartupError(
                    "client certificates: the new routes "
                    + ("ask" if trust.enabled else "no longer ask")
                    + " for them; the listener's choice is fixed at start, so restart"
                )
            if not trust.enabled:
                trust = None
        # The last step that can fail, and it keeps the old pairs when it does.
        sources = certificate_sources(config)
        if self.certificates is not None and sources != certificate_sources(self.config):
            self.certificates.replace_sources(sources)
        if config.autocert and config.autocert_hosts() != self.config.autocert_hosts():
            log.warning(
                "autocert: the route hosts changed; certificates for new hosts are "
                "obtained after a restart"
            )
        # From here on nothing can fail.
        self.well_known.publish(jwks)
        self.config = config
        if self.switching is not None:
            self.switching.cancel()
            self.switching = None
        if routes.version == self.handler.routes.version:
            self._use_routes(routes, trust)
        else:
            # authorize decides with the routes the proxy matched (the version rides
            # in each check). New routes are used once authorize has them, so that a
            # proxy that reloads first (a ConfigMap reaches pods at different times)
            # goes on serving the previous routes rather than failing closed.
            self.switching = asyncio.create_task(self._switch_when_authorize_has(routes, trust))

    def _use_routes(self, routes: ProxyRoutes, trust: DownstreamTrust | None) -> None:
        assert self.handler is not None
        self.trust = trust
        self.handler.trust = trust
        if self.acceptor is not None:
            self.acceptor.trust = trust
        self.handler.routes = routes

    async def _switch_when_authorize_has(
        self, routes: ProxyRoutes, trust: DownstreamTrust | None
    ) -> None:
        loop = asyncio.get_running_loop()
        warn_at = loop.time() + SWITCH_PATIENCE
        theirs = ""
        while True:
            try:
                theirs = await peer_routes_version(self.authorize)
            except grpc.aio.AioRpcError as e:
                theirs = f"unknown ({describe_rpc_error(e, self.authorize.url)})"
            if theirs == routes.version:
                self._use_routes(routes, trust)
                log.info("routes %s in use (authorize has them too)", routes.version)
                return
            if warn_at and loop.time() >= warn_at:
                log.warning(
                    "authorize at %s runs routes %s, not this proxy's new routes %s; the "
                    "previous routes keep serving until it has them",
                    self.authorize.url,
                    theirs,
                    routes.version,
                )
                warn_at = 0.0
            await asyncio.sleep(SWITCH_POLL)

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
        # Idle keep-alive connections go now; busy ones when their request is done, and
        # its response tells the client so (`connection: close`).
        while loop.time() < deadline:
            for conn in list(self.connections):
                conn.drain()
            if not any(c.busy for c in self.connections):
                break
            await asyncio.sleep(0.05)
        else:
            log.warning("requests still running after %.0fs; closing them", grace)
        for conn in list(self.connections):
            conn.abort()
        if self.switching is not None:
            self.switching.cancel()
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
    if config.cookie_secret is None:
        raise StartupError("cookie_secret: required (the session cookie is sealed with it)")
    # Before listening: a proxy that disagrees with its peers would serve sign-in loops.
    asking = await agree(config, "proxy", tls, runtime.refuse)
    channel = ServiceChannel(config.authorize_service_url, tls)
    sessions = ServiceChannel(config.databroker_service_url, tls)
    check = CheckClient(channel)
    pool = Pool()
    proxy = Proxy(config, channel, certificates, check, pool, sessions, trust)
    proxy.autocert = autocert
    proxy.well_known = well_known
    routes = ProxyRoutes(config)
    user = UserPages(sessions, HandleCodec(config.cookie_secret), config.cookie_name)
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
    handler = proxy.handler = Handler(
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
        proxy.tasks.append(asyncio.create_task(watch_certificates(proxy)))
    if autocert is not None:
        autocert.start()  # after the listeners: validation requests must find them
    proxy.tasks.append(asyncio.create_task(report_reachability(channel, "authorize")))
    if asking is not None:
        proxy.tasks.append(asking)
    return proxy


async def watch_certificates(proxy: Proxy, interval: float = 1.0) -> None:
    """Server certificates, client CAs and CRLs: re-read when their files change."""
    while True:
        await asyncio.sleep(interval)
        if proxy.certificates is not None:
            proxy.certificates.reload_if_changed()
        if proxy.trust is not None:  # the current one: a reload replaces it
            proxy.trust.reload_if_changed()


def sign_in_url(config: Config) -> str | None:
    if not config.authenticate_service_url:
        return None
    return config.authenticate_service_url.rstrip("/") + "/.pomerium/sign_in"
