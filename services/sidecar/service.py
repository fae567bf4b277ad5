"""The verifying sidecar: a TLS listener in front of one app (`vallum run --services sidecar`).

It reuses the proxy's HTTP/1.1 protocol (uvloop + httptools) and its streaming
exchange and upstream pool, with a handler of its own: no routes, no authorize, one
upstream. The client certificate is checked by the stdlib TLS stack in the handshake
(CERT_REQUIRED: a machine peer without a trusted certificate gets a handshake
failure, which is the right answer); its names are checked per request, from the
verified certificate of the connection. Sockets are accepted here, not by a server
created with ssl=, only so that each refused handshake gets its log line.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from services.proxy.http import HttpConnection, reap_idle
from services.proxy.upstream import Pool, Target
from services.proxy.upstream_tls import UpstreamTLS
from services.sidecar.handler import Checks, SidecarHandler
from services.topology import format_address
from shared.config import Config, Route, WeightedURL
from shared.listen import AcceptLoop, bind
from shared.material import (
    FileWatch,
    MaterialError,
    load_ca_bundle,
    load_key_pair,
    read_source,
)
from shared.rpc import StartupError
from shared.server_tls import context_for
from shared.verify import Verifier

log = logging.getLogger("vallum.sidecar")


@dataclass
class Sidecar:
    config: Config
    pool: Pool
    checks: Checks
    verifier: Verifier | None
    context: ssl.SSLContext
    acceptor: Acceptor | None = None
    connections: set[HttpConnection] = field(default_factory=set)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    handshakes: set[asyncio.Task[None]] = field(default_factory=set)
    bound: str = ""

    def describe(self) -> str:
        checks = []
        if self.checks.mtls:
            names = ", ".join(self.checks.allowed_names) or "any name"
            checks.append(f"client certificate ({names})")
        if self.checks.verifier is not None:
            checks.append(f"JWT assertion (keys from {self.config.sidecar_jwks_url})")
        return (
            f"https on {self.bound} -> {self.config.sidecar_upstream}, "
            f"requiring {' and '.join(checks)}"
        )

    async def stop(self, grace: float) -> None:
        if self.acceptor is not None:
            self.acceptor.close()  # no new connections
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while loop.time() < deadline:
            busy = [c for c in self.connections if c.busy]
            for conn in self.connections - set(busy):
                conn.close()
            if not busy:
                break
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.abort()
        for task in [*self.tasks, *self.handshakes]:
            task.cancel()
        await asyncio.gather(*self.tasks, *self.handshakes, return_exceptions=True)
        await self.pool.close()
        if self.verifier is not None:
            await self.verifier.aclose()


HANDSHAKE_TIMEOUT = 10.0


def handshake_refusal(exc: BaseException) -> str:
    """A short reason for a refused handshake, for the one log line it gets."""
    reason = getattr(exc, "reason", None) or ""
    if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
        return "no-client-certificate"
    if reason in ("CERTIFICATE_VERIFY_FAILED", "TLSV1_ALERT_UNKNOWN_CA"):
        return "untrusted-client-certificate"
    if isinstance(exc, TimeoutError) or "taking longer" in str(exc):
        return "handshake-timeout"
    if isinstance(exc, ssl.SSLEOFError | ConnectionError):
        # A TCP health check or port probe looks like this too.
        return "closed-during-handshake"
    return "tls-handshake-failed"


class Acceptor:
    """Accepts sockets itself and hands each to the loop's TLS, so that a refused
    handshake (no client certificate, one from another CA) comes back here as an
    exception and gets its log line; a server created with ssl= ends those
    connections without telling anyone."""

    def __init__(self, sock: socket.socket, sidecar: Sidecar, handler: SidecarHandler) -> None:
        self._accepts = AcceptLoop(sock, self._accepted)
        self._sidecar = sidecar
        self._handler = handler
        self._loop = asyncio.get_running_loop()

    def start(self) -> None:
        self._accepts.start()

    def close(self) -> None:
        self._accepts.close()

    def _accepted(self, conn: socket.socket, peer: str) -> None:
        task = self._loop.create_task(self._handshake(conn, peer))
        self._sidecar.handshakes.add(task)
        task.add_done_callback(self._sidecar.handshakes.discard)

    async def _handshake(self, conn: socket.socket, peer: str) -> None:
        try:
            await self._loop.connect_accepted_socket(
                lambda: HttpConnection(self._handler, self._sidecar.connections),
                conn,
                ssl=self._sidecar.context,  # read per connection: reloads replace it
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
            )
        except (OSError, TimeoutError) as e:
            conn.close()
            detail = str(e) or type(e).__name__
            log.warning(
                "refused handshake reason=%s peer=%s detail=%s", handshake_refusal(e), peer, detail
            )


async def watch_files(sidecar: Sidecar, interval: float = 1.0) -> None:
    """Certificate, key and client CA: re-read when their files change. New
    connections get the new context; open ones keep theirs."""
    config = sidecar.config
    sources = (config.sidecar_certificate, config.sidecar_certificate_key, config.sidecar_client_ca)
    watch = FileWatch([s.path if s is not None else None for s in sources])
    if not watch.watching:
        return
    while True:
        await asyncio.sleep(interval)
        if not watch.changed():
            continue
        try:
            sidecar.context = server_context(config)
        except (MaterialError, ssl.SSLError) as e:
            # A half-written rotation: keep serving with what worked, try on the next change.
            log.warning("sidecar TLS files changed but cannot be used (keeping the old): %s", e)
        else:
            log.info("sidecar TLS files reloaded")


def server_context(config: Config) -> ssl.SSLContext:
    assert config.sidecar_certificate is not None and config.sidecar_certificate_key is not None
    pair = load_key_pair(
        config.sidecar_certificate,
        config.sidecar_certificate_key,
        cert_key="sidecar_certificate",
        key_key="sidecar_certificate_key",
    )
    ctx = context_for(pair)
    if config.sidecar_client_ca is not None:
        pem, _ = load_ca_bundle(config.sidecar_client_ca, "sidecar_client_ca")
        # Only this bundle: the system store's CAs never vouch for a caller.
        ctx.load_verify_locations(cadata=pem.decode("ascii", "replace"))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def upstream_target(url: str) -> tuple[Target, bytes]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    shown = f"[{host}]" if ":" in host else host
    host_header = (shown if port == (443 if secure else 80) else f"{shown}:{port}").encode()
    if not secure:
        return Target(host, port, None, None), host_header
    # The app's certificate is checked against the system store, by the upstream's name.
    tls = UpstreamTLS(Route(from_url="https://sidecar.invalid", to=(WeightedURL(url),)))
    return Target(host, port, tls, tls.server_name(host)), host_header


def make_verifier(config: Config) -> Verifier | None:
    if config.sidecar_jwks_url is None:
        return None
    assert config.sidecar_jwt_issuer is not None and config.sidecar_jwt_audience is not None
    ca = config.sidecar_jwks_ca
    ca_data = None
    if ca is not None:
        ca_data = read_source(ca, "sidecar_jwks_ca").decode("ascii", "replace")
    try:
        return Verifier(
            jwks_url=config.sidecar_jwks_url,
            issuer=config.sidecar_jwt_issuer,
            audience=config.sidecar_jwt_audience,
            ca_data=ca_data,
        )
    except ValueError as e:
        raise StartupError(f"sidecar_jwks_url: {e}") from None
    except ssl.SSLError as e:
        raise MaterialError(f"sidecar_jwks_ca: cannot be used: {e}") from None


async def start(config: Config) -> Sidecar:
    try:
        ctx = server_context(config)
    except ssl.SSLError as e:
        raise MaterialError(f"sidecar TLS settings rejected: {e}") from None
    assert config.sidecar_upstream is not None
    target, host_header = upstream_target(config.sidecar_upstream)
    verifier = make_verifier(config)
    checks = Checks(
        mtls=config.sidecar_client_ca is not None,
        allowed_names=config.sidecar_allowed_client_names,
        verifier=verifier,
        identity=config.sidecar_identity_headers,
    )
    pool = Pool()
    sidecar = Sidecar(config, pool, checks, verifier, ctx)
    handler = SidecarHandler(checks, target, host_header, pool)
    sock = bind(format_address(config.sidecar_address), "sidecar_address")
    sidecar.bound = "{}:{}".format(*sock.getsockname()[:2])
    sidecar.acceptor = Acceptor(sock, sidecar, handler)
    sidecar.acceptor.start()
    pool.start()
    sidecar.tasks.append(asyncio.create_task(reap_idle(sidecar.connections)))
    sidecar.tasks.append(asyncio.create_task(watch_files(sidecar)))
    return sidecar
