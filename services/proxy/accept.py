"""The HTTPS listener when some hosts ask for client certificates, or autocert is on:
TLS stack by SNI and ALPN.

Each accepted socket's ClientHello is peeked at (MSG_PEEK: the bytes stay in the
socket for whichever TLS stack reads them) to learn the server name and the offered
protocols. Hosts that ask for client certificates get pyOpenSSL (OpenSSLTransport, a
verify callback that lets the verdict reach a 495 page). An ACME server validating
TLS-ALPN-01 (it offers only `acme-tls/1`) gets the validation certificate and a closed
connection. Every other connection gets the event loop's own TLS with the usual SNI
certificate choice, at no extra cost per request.

Without a client CA or autocert the proxy does not use this at all: the event loop's
server accepts and handshakes by itself.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

from OpenSSL import SSL

from services.proxy.autocert.challenges import ACME_TLS_ALPN
from services.proxy.client_hello import MAX_HELLO, Hello, NotTLS, read_hello
from services.proxy.client_trust import DownstreamTrust
from services.proxy.openssl_transport import (
    HANDSHAKE_TIMEOUT,
    OpenSSLTransport,
    server_name_info,
)
from shared.listen import AcceptLoop
from shared.server_tls import CertificateSet

log = logging.getLogger("vallum.proxy.tls")

# A ClientHello split across TCP segments is rare; re-reading it every few
# milliseconds keeps the level-triggered reader from spinning meanwhile.
PEEK_AGAIN = 0.005

ProtocolFactory = Callable[[], asyncio.Protocol]
# host → the TLS-ALPN-01 validation context while a challenge is pending, else None.
AlpnChallenges = Callable[[str], ssl.SSLContext | None]
# host → a pyOpenSSL context that staples OCSP (Must-Staple certificates), else None.
Stapling = Callable[[str], SSL.Context | None]


class SniAcceptor:
    def __init__(
        self,
        sock: socket.socket,
        factory: ProtocolFactory,
        certificates: CertificateSet,
        trust: DownstreamTrust | None,
        acme_tls_alpn: AlpnChallenges | None = None,
        stapling: Stapling | None = None,
    ) -> None:
        self._accepts = AcceptLoop(sock, self._accepted)
        self._factory = factory
        self._certificates = certificates
        self.trust = trust  # replaced when a reloaded config changes the routes
        self._acme_tls_alpn = acme_tls_alpn
        self._stapling = stapling
        self._loop = asyncio.get_running_loop()
        self._pending: set[_Peek] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self) -> None:
        self._accepts.start()

    def close(self) -> None:
        """Stop accepting; connections already handed over are the protocol's to end."""
        self._accepts.close()
        for peek in list(self._pending):
            peek.give_up("the listener closed")

    def _accepted(self, conn: socket.socket, peer: str) -> None:
        peek = _Peek(self, conn)
        self._pending.add(peek)
        peek.start()

    def dispatch(self, conn: socket.socket, hello: Hello) -> None:
        name = hello.server_name
        if ACME_TLS_ALPN in hello.alpn and self._acme_tls_alpn is not None:
            self._acme_validation(conn, name)
            return
        trust = self.trust
        scope = trust.scope_for(name) if trust is not None else None
        stapled = self._stapling(name) if self._stapling and name and scope is None else None
        if stapled is not None:
            conn_tls = SSL.Connection(stapled, None)
            self._run(
                self._loop.connect_accepted_socket(
                    lambda: OpenSSLTransport(
                        conn_tls, self._factory, server_name_info, _handshake_failed
                    ),
                    conn,
                )
            )
            return
        if scope is None or trust is None:
            self._run(
                self._loop.connect_accepted_socket(
                    self._factory,
                    conn,
                    ssl=self._certificates.listener,
                    ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
                )
            )
            return
        tls = trust.connection(scope, name)
        self._run(
            self._loop.connect_accepted_socket(
                lambda: OpenSSLTransport(
                    tls, self._factory, trust.handshake_done, trust.handshake_failed
                ),
                conn,
            )
        )

    def _acme_validation(self, conn: socket.socket, name: str | None) -> None:
        """RFC 8737 section 3: only a pending challenge's host gets a handshake."""
        ctx = self._acme_tls_alpn(name) if name and self._acme_tls_alpn else None
        if ctx is None:
            log.info("TLS-ALPN-01 validation for %s, which has no pending challenge", name)
            conn.close()
            return
        log.info("answering a TLS-ALPN-01 validation for %s", name)
        self._run(
            self._loop.connect_accepted_socket(
                _CloseAfterHandshake, conn, ssl=ctx, ssl_handshake_timeout=HANDSHAKE_TIMEOUT
            )
        )

    def _run(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._handed_over)

    def _handed_over(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # A failed handshake on the loop's own TLS: the client's problem, not ours.
            log.debug("TLS handshake failed: %s", task.exception())


def _handshake_failed(conn: SSL.Connection, error: Exception) -> None:
    log.debug("TLS handshake failed: %s", error)


class _CloseAfterHandshake(asyncio.Protocol):
    """The validation is the handshake itself; nothing is served after it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class _Peek:
    """One accepted socket whose ClientHello has not fully arrived yet."""

    def __init__(self, acceptor: SniAcceptor, conn: socket.socket) -> None:
        self._acceptor = acceptor
        self._conn = conn
        self._loop = acceptor._loop
        self._fd = conn.fileno()
        self._seen = 0
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._timer = self._loop.call_later(HANDSHAKE_TIMEOUT, self.give_up, "no ClientHello")
        self._loop.add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        try:
            data = self._conn.recv(MAX_HELLO + 1024, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self.give_up(str(e))
            return
        if not data:
            self.give_up("closed before the ClientHello")
            return
        try:
            hello = read_hello(data)
        except NotTLS as e:
            self.give_up(f"not TLS: {e}")
            return
        if not isinstance(hello, Hello):
            if len(data) == self._seen:  # nothing new yet: look again shortly
                self._loop.remove_reader(self._fd)
                self._loop.call_later(PEEK_AGAIN, self._again)
            self._seen = len(data)
            return
        self._finish()
        self._acceptor.dispatch(self._conn, hello)

    def _again(self) -> None:
        if self in self._acceptor._pending:
            self._loop.add_reader(self._fd, self._readable)

    def _finish(self) -> None:
        self._loop.remove_reader(self._fd)
        if self._timer is not None:
            self._timer.cancel()
        self._acceptor._pending.discard(self)

    def give_up(self, why: str) -> None:
        if self not in self._acceptor._pending:
            return
        self._finish()
        log.debug("connection closed before TLS: %s", why)
        self._conn.close()
