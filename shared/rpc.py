"""Mutually authenticated gRPC between Vallum's services.

Every server requires a client certificate chained to the internal CA and admits a
method only to the service identities listed for it (`spiffe://<trust domain>/<name>`
in the certificate's URI SAN). Anything not listed is refused: the access list fails
closed. There is no insecure port. Certificate files are re-read when they change:
servers pick the new pair for the next handshake, clients open a new channel and let
the old one drain.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from shared.material import (
    FileWatch,
    KeyPair,
    MaterialError,
    SourceLike,
    load_ca_bundle,
    load_key_pair,
)
from shared.pki import spiffe_ids

log = logging.getLogger("vallum.rpc")

T = TypeVar("T")

SERVICES = ("authenticate", "authorize", "proxy")
HEALTH_METHODS = ("/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch")

# grpc turns SO_REUSEPORT on by default, which would let a second process bind the
# same port silently and steal half the connections; Vallum wants a clear error.
_SERVER_OPTIONS = (("grpc.so_reuseport", 0),)


def spiffe_id(trust_domain: str, service: str) -> str:
    return f"spiffe://{trust_domain}/{service}"


def service_of(uri: str, trust_domain: str) -> str | None:
    prefix = f"spiffe://{trust_domain}/"
    if uri.startswith(prefix):
        name = uri[len(prefix) :]
        if name and "/" not in name:
            return name
    return None


def first_service(uris: Iterable[str], trust_domain: str) -> str | None:
    """The first service identity among a certificate's URI SANs, in `trust_domain`."""
    for uri in uris:
        name = service_of(uri, trust_domain)
        if name is not None:
            return name
    return None


@dataclass(frozen=True, slots=True)
class InternalTLS:
    """Where this service's internal mTLS material comes from."""

    ca: SourceLike
    cert: SourceLike
    key: SourceLike
    trust_domain: str

    def load(self) -> tuple[bytes, KeyPair]:
        ca_pem, ca_certs = load_ca_bundle(self.ca, "certificate_authority")
        pair = load_key_pair(
            self.cert,
            self.key,
            cert_key="internal_certificate",
            key_key="internal_certificate_key",
        )
        if not any(_issued_by(pair.leaf, ca) for ca in ca_certs):
            where = self.cert.path or "internal_certificate"
            raise MaterialError(
                f"internal_certificate: {where} was not issued by the CA in "
                f"{self.ca.path or 'certificate_authority'}; issue it with `vallum ca issue "
                "--service` from the same CA"
            )
        return ca_pem, pair

    def identity(self, pair: KeyPair) -> str:
        name = first_service(spiffe_ids(pair.leaf), self.trust_domain)
        if name is not None:
            return name
        raise MaterialError(
            f"internal_certificate: {self.cert.path or 'inline certificate'} has no URI SAN "
            f"spiffe://{self.trust_domain}/<service>; issue it with `vallum ca issue --service`"
        )

    def watch(self) -> FileWatch:
        return FileWatch([self.ca.path, self.cert.path, self.key.path])


def _issued_by(leaf: Any, ca: Any) -> bool:
    try:
        leaf.verify_directly_issued_by(ca)
    except Exception:
        return False
    return True


# --- server side -------------------------------------------------------------------

Acl = Mapping[str, frozenset[str]]


def peer_service(context: grpc.aio.ServicerContext, trust_domain: str) -> str | None:
    uris = (uri.decode() for uri in context.auth_context().get("peer_uri", ()))
    return first_service(uris, trust_domain)


class IdentityInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Admits a call only if the caller's service identity is listed for its method."""

    def __init__(self, acl: Acl, trust_domain: str) -> None:
        self._acl = dict(acl)
        for method in HEALTH_METHODS:
            self._acl.setdefault(method, frozenset(SERVICES))
        self._trust_domain = trust_domain

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        return _guarded(handler, details.method, self._acl.get(details.method, frozenset()), self)

    def refusal(
        self, context: grpc.aio.ServicerContext, method: str, allowed: frozenset[str]
    ) -> str | None:
        who = peer_service(context, self._trust_domain)
        if who is not None and who in allowed:
            return None
        if who is None:
            uris = [u.decode() for u in context.auth_context().get("peer_uri", ())]
            return (
                f"caller has no service identity in trust domain {self._trust_domain!r} "
                f"(certificate URI SANs: {uris or 'none'}); {method} is refused"
            )
        names = ", ".join(sorted(allowed)) or "no service"
        return f"service identity {who!r} may not call {method}; only {names} may"


def _guarded(handler: Any, method: str, allowed: frozenset[str], gate: IdentityInterceptor) -> Any:
    if handler.unary_unary is not None:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if (why := gate.refusal(context, method, allowed)) is not None:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, why)
            return await inner_uu(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, handler.request_deserializer, handler.response_serializer
        )
    if handler.unary_stream is not None:
        inner_us = handler.unary_stream

        async def unary_stream(
            request: Any, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            if (why := gate.refusal(context, method, allowed)) is not None:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, why)
            async for item in inner_us(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, handler.request_deserializer, handler.response_serializer
        )
    if handler.stream_stream is not None:
        inner_ss = handler.stream_stream

        async def stream_stream(
            requests: Any, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            if (why := gate.refusal(context, method, allowed)) is not None:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, why)
            async for item in inner_ss(requests, context):
                yield item

        return grpc.stream_stream_rpc_method_handler(
            stream_stream, handler.request_deserializer, handler.response_serializer
        )
    # Client-streaming methods are not part of any Vallum contract: refuse them.
    return None


class StartupError(Exception):
    """A service cannot start; the message is one line that says what to do."""


@dataclass(slots=True)
class RpcServer:
    server: grpc.aio.Server
    health: health_aio.HealthServicer
    address: str
    port: int
    identity: str

    async def stop(self, grace: float) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


def _server_credentials(tls: InternalTLS) -> tuple[grpc.ServerCredentials, str]:
    ca_pem, pair = tls.load()
    identity = tls.identity(pair)
    watch = tls.watch()

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        # Called by grpc before each handshake; a stat() per new connection is cheap.
        if not watch.changed():
            return None
        try:
            new_ca, new_pair = tls.load()
            tls.identity(new_pair)
        except MaterialError as e:
            log.error("internal certificate change not applied, keeping the old one: %s", e)
            return None
        log.info("internal certificate reloaded (serial %x)", new_pair.leaf.serial_number)
        return grpc.ssl_server_certificate_configuration(
            [(new_pair.key_pem, new_pair.cert_pem)], root_certificates=new_ca
        )

    initial = grpc.ssl_server_certificate_configuration(
        [(pair.key_pem, pair.cert_pem)], root_certificates=ca_pem
    )
    creds = grpc.dynamic_ssl_server_credentials(initial, fetch, require_client_authentication=True)
    return creds, identity


async def start_server(
    address: str,
    tls: InternalTLS,
    acl: Acl,
    register: Callable[[grpc.aio.Server], None],
    *,
    key: str = "grpc_address",
) -> RpcServer:
    """Start a gRPC server with mTLS, the identity gate and the health service."""
    creds, identity = _server_credentials(tls)
    server = grpc.aio.server(
        interceptors=[IdentityInterceptor(acl, tls.trust_domain)], options=_SERVER_OPTIONS
    )
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    register(server)
    try:
        port = server.add_secure_port(address, creds)
    except RuntimeError:
        raise StartupError(f"{key}: cannot listen on {address}: {_bind_error(address)}") from None
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    if address.endswith(":0"):
        address = f"{address[:-2]}:{port}"
    return RpcServer(server, health, address, port, identity)


def _bind_error(address: str) -> str:
    """grpc says only "failed to bind"; find out why with a plain socket."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - mirrors grpc's own default
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, int(port)))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            return "address already in use (stop the other process or choose another port)"
        return f"{e.strerror}"
    except ValueError:
        return "not a host:port address"
    return "grpc could not bind it"


# --- client side -------------------------------------------------------------------


def target_of(url: str) -> str:
    """`https://authorize.internal:5443` → `authorize.internal:5443` (grpc target)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "grpcs") or not parts.hostname:
        raise ValueError(f"not an https URL: {url!r}")
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{parts.port or 443}"


class ServiceChannel:
    """A client channel to one Vallum service that follows certificate rotation and,
    given several URLs (replicas of the service), fails over between them.

    `get()` is what callers use for every call: it returns the current channel,
    opening a new one (and closing the previous after a grace period) when the
    certificate files changed. The check is rate-limited to one stat per second.
    A caller whose call found the peer unavailable says so with `failed(channel)`;
    the next `get()` then returns the next URL's channel, in turn.
    """

    def __init__(
        self, urls: str | Sequence[str], tls: InternalTLS, *, recheck: float = 1.0
    ) -> None:
        self.urls = (urls,) if isinstance(urls, str) else tuple(urls)
        if not self.urls:
            raise ValueError("a service channel needs at least one URL")
        self._targets = tuple(target_of(url) for url in self.urls)
        self._index = 0
        self._tls = tls
        self._watch = tls.watch()
        self._recheck = recheck
        self._next_check = 0.0
        self._closing: set[asyncio.Task[None]] = set()
        self._channels: list[grpc.aio.Channel | None] = [None] * len(self.urls)
        self._channels[0] = self._open(0)

    @property
    def tls(self) -> InternalTLS:
        return self._tls

    @property
    def url(self) -> str:
        """The URL calls go to now."""
        return self.urls[self._index]

    @property
    def target(self) -> str:
        return self._targets[self._index]

    def _open(self, index: int) -> grpc.aio.Channel:
        ca_pem, pair = self._tls.load()
        creds = grpc.ssl_channel_credentials(ca_pem, pair.key_pem, pair.cert_pem)
        return grpc.aio.secure_channel(
            self._targets[index],
            creds,
            options=(
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_permit_without_calls", 1),
            ),
        )

    def get(self) -> grpc.aio.Channel:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._watch.watching and now >= self._next_check:
            self._next_check = now + self._recheck
            if self._watch.changed():
                self._reopen_all(loop)
        channel = self._channels[self._index]
        if channel is None:
            channel = self._channels[self._index] = self._open(self._index)
        return channel

    def _reopen_all(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            fresh = self._open(self._index)
        except MaterialError as e:
            log.error("internal certificate change not applied, keeping the old one: %s", e)
            return
        old = [c for c in self._channels if c is not None]
        # The others open with the new certificate when they are next chosen.
        self._channels = [None] * len(self.urls)
        self._channels[self._index] = fresh
        for channel in old:
            closing = loop.create_task(_close_later(channel, 30.0))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        log.info("internal client certificate reloaded for %s", ", ".join(self.urls))

    def failed(self, channel: grpc.aio.Channel) -> bool:
        """A call on `channel` found its peer unavailable: move on to the next URL.

        Returns whether there is another URL to try. Calls that fail together on the
        same channel move the index once, not once each.
        """
        if len(self.urls) == 1:
            return False
        if channel is self._channels[self._index]:
            before = self.url
            self._index = (self._index + 1) % len(self.urls)
            log.warning("%s unavailable; calls go to %s now", before, self.url)
        return True

    async def close(self) -> None:
        for channel in self._channels:
            if channel is not None:
                await channel.close()


async def call_once_each(
    channel: ServiceChannel, call: Callable[[grpc.aio.Channel], Awaitable[T]]
) -> T:
    """`call` on the current channel; if its peer is unavailable and another replica
    is listed, once more on the next. Raises the last grpc.aio.AioRpcError."""
    current = channel.get()
    try:
        return await call(current)
    except grpc.aio.AioRpcError as e:
        if e.code() != grpc.StatusCode.UNAVAILABLE or not channel.failed(current):
            raise
    return await call(channel.get())


async def _close_later(channel: grpc.aio.Channel, grace: float) -> None:
    await asyncio.sleep(grace)
    await channel.close(grace=None)


async def check_health(channel: grpc.aio.Channel, *, timeout: float) -> str:  # noqa: ASYNC109
    """The peer's health status name, or raise grpc.aio.AioRpcError."""
    response = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=timeout
    )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def describe_rpc_error(e: grpc.aio.AioRpcError, url: str) -> str:
    """One line a person can act on, for an RPC that failed."""
    code = e.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return (
            f"{url} is unreachable or refused the TLS handshake ({e.details()}); check that the "
            "service runs there and that both sides use certificates from the same internal CA"
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"{url} did not answer in time"
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return f"{url} refused this service: {e.details()}"
    return f"{url}: {code.name}: {e.details()}"


def internal_tls(config: Any) -> InternalTLS:
    """The internal mTLS settings of a service; fails with a line per missing key."""
    missing = [
        key
        for key in ("certificate_authority", "internal_certificate", "internal_certificate_key")
        if getattr(config, key) is None
    ]
    if missing:
        raise StartupError(
            f"{', '.join(missing)}: required for mTLS between services; make them with "
            "`vallum ca init` and `vallum ca issue --service NAME`, or run all-in-one, "
            "which makes its own"
        )
    return InternalTLS(
        config.certificate_authority,
        config.internal_certificate,
        config.internal_certificate_key,
        config.trust_domain,
    )


async def report_reachability(channel: ServiceChannel, peer: str) -> None:
    """Log once, clearly, while a peer service cannot be reached, and when it can.

    Start-up does not wait for peers (they may start in any order); requests that
    need an unreachable peer fail closed on their own deadline meanwhile.
    """
    delay, reported = 0.5, False
    tried = 0  # replicas tried since the last pause
    while True:
        current = channel.get()
        try:
            await check_health(current, timeout=2.0)
        except grpc.aio.AioRpcError as e:
            tried += 1
            if channel.failed(current) and tried < len(channel.urls):
                continue  # another replica: try it at once
            tried = 0
            if not reported:
                log.error("%s unreachable: %s; retrying", peer, describe_rpc_error(e, channel.url))
                reported = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
            continue
        log.info("%s reachable%s at %s over mTLS", peer, " again" if reported else "", channel.url)
        return
