"""The authenticate service: owner of sessions (SessionService over mTLS gRPC) and,
when an identity provider is configured, the sign-in pages (HTTPS)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass, field

import grpc
import httpx
import uvicorn

from services import runtime
from services.agreement import ACL as AGREEMENT_ACL
from services.agreement import AgreementServicer, agree
from services.authenticate.oidc import ClientSettings, RelyingParty, StateCodec, new_http_client
from services.authenticate.refresh import Refresher
from services.authenticate.sessions_rpc import ACL, SessionServicer
from services.authenticate.stores import SessionStore, open_store
from services.authenticate.stores.timed import TimedStore
from services.authenticate.web import SignInPages
from services.topology import authenticate_http_address, grpc_listen_address
from shared.config import Config
from shared.listen import bind
from shared.material import MaterialError, load_key_pair
from shared.pb import agreement_pb2_grpc, session_pb2_grpc
from shared.rpc import RpcServer, StartupError, internal_tls, start_server
from shared.server_tls import CertificateSet, certificate_sources, context_for

log = logging.getLogger("vallum.authenticate")


@dataclass
class Authenticate:
    rpc: RpcServer
    store: SessionStore
    http: httpx.AsyncClient | None = None
    web: uvicorn.Server | None = None
    web_address: str = ""
    serving: asyncio.Task[None] | None = None  # the sign-in pages' server
    pages: SignInPages | None = None
    agreement: AgreementServicer | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def apply(self, config: Config) -> None:
        """A reloaded configuration: the routes that return-to URLs may name."""
        if self.pages is not None:
            self.pages.use_routes(config)
        if self.agreement is not None:
            self.agreement.update(config)

    def describe(self) -> str:
        pages = f", sign-in pages on {self.web_address}" if self.web_address else ""
        return f"SessionService (gRPC, mTLS) on {self.rpc.address} as {self.rpc.identity}{pages}"

    async def stop(self, grace: float) -> None:
        if self.web is not None:
            self.web.should_exit = True
        for task in self.tasks:
            task.cancel()
        if self.serving is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self.serving, grace)
        await self.rpc.stop(grace)
        if self.http is not None:
            await self.http.aclose()
        await self.store.close()


async def start(config: Config) -> Authenticate:
    # Timed where every caller (SessionService, sign-in, refresher) goes through it.
    store: SessionStore = TimedStore(await open_store(config), config.databroker_storage_type)

    agreement = AgreementServicer(config, "authenticate")

    def register(server: grpc.aio.Server) -> None:
        session_pb2_grpc.add_SessionServiceServicer_to_server(SessionServicer(store), server)
        agreement_pb2_grpc.add_AgreementServicer_to_server(agreement, server)

    address = grpc_listen_address(config, "authenticate")
    tls = internal_tls(config)
    try:
        rpc = await start_server(address, tls, {**ACL, **AGREEMENT_ACL}, register)
    except BaseException:
        await store.close()
        raise
    service = Authenticate(rpc, store, agreement=agreement)
    try:
        # The other replicas (databroker_service_url lists them) must agree too.
        asking = await agree(config, "authenticate", tls, runtime.refuse)
    except BaseException:
        await service.stop(0)
        raise
    if config.idp_provider_url and config.authenticate_service_url:
        try:
            await _start_sign_in(service, config)
        except BaseException:
            await service.stop(0)
            raise
    if asking is not None:
        service.tasks.append(asking)
    return service


async def _start_sign_in(service: Authenticate, config: Config) -> None:
    assert config.shared_secret is not None
    listen = authenticate_http_address(config)
    if listen is None:
        raise StartupError(
            "authenticate_internal_service_url: set it (where the proxy reaches the sign-in "
            "pages), or run authenticate alone with address and a certificate"
        )
    address, public = listen
    service.http = new_http_client(config)
    rp = RelyingParty(
        ClientSettings.from_config(config), service.http, StateCodec(config.shared_secret)
    )
    service.pages = SignInPages(config, service.store, rp)
    app = service.pages.app()
    sock = bind(address, "address" if public else "authenticate_internal_service_url")
    uv = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=5
    )
    uv.load()
    uv.ssl = _server_tls(config, public)
    server = uvicorn.Server(uv)
    service.web = server
    service.web_address = "{}:{}".format(*sock.getsockname()[:2])
    service.serving = serving = asyncio.create_task(server.serve(sockets=[sock]))
    service.tasks.append(asyncio.create_task(Refresher(service.store, rp).run()))
    while not server.started:
        if serving.done():
            serving.result()
            raise StartupError(f"the sign-in pages on {service.web_address} did not start")
        await asyncio.sleep(0.01)


def _server_tls(config: Config, public: bool) -> ssl.SSLContext:
    """Public (split mode): the configured certificates. Internal (behind the proxy):
    this service's own certificate from the internal CA."""
    if public:
        return CertificateSet(certificate_sources(config)).listener
    tls = internal_tls(config)
    try:
        pair = load_key_pair(
            tls.cert, tls.key, cert_key="internal_certificate", key_key="internal_certificate_key"
        )
    except MaterialError as e:
        raise StartupError(str(e)) from None
    return context_for(pair)
