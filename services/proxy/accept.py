"""The HTTPS listener when some hosts ask for client certificates: TLS stack by SNI.

Each accepted socket's ClientHello is peeked at (MSG_PEEK: the bytes stay in the
socket for whichever TLS stack reads them) to learn the server name. Hosts that ask
for client certificates get pyOpenSSL (OpenSSLTransport, a verify callback that lets
the verdict reach a 495 page); every other connection gets the event loop's own TLS
with the usual SNI certificate choice, at no extra cost per request.

Without any client CA configured the proxy does not use this at all: the event
loop's server accepts and handshakes by itself.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from services.proxy.client_hello import MAX_HELLO, Hello, NotTLS, read_hello
from services.proxy.client_trust import DownstreamTrust
from services.proxy.openssl_transport import HANDSHAKE_TIMEOUT, OpenSSLTransport
from shared.server_tls import CertificateSet

log = logging.getLogger("vallum.proxy.tls")

ACCEPTS_PER_WAKEUP = 64
# A ClientHello split across TCP segments is rare; re-reading it every few
# milliseconds keeps the level-triggered reader from spinning meanwhile.
PEEK_AGAIN = 0.005
# Out of file descriptors: wait before accepting again rather than spin.
ACCEPT_BACKOFF = 0.1

ProtocolFactory = Callable[[], asyncio.Protocol]


class SniAcceptor:
    def __init__(
        self,
        sock: socket.socket,
        factory: ProtocolFactory,
        certificates: CertificateSet,
        trust: DownstreamTrust,
    ) -> None:
        self._sock = sock
        self._factory = factory
        self._certificates = certificates
        self._trust = trust
        self._loop = asyncio.get_running_loop()
        self._pending: set[_Peek] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def start(self) -> None:
        self._loop.add_reader(self._sock.fileno(), self._accept)

    def close(self) -> None:
        """Stop accepting; connections already handed over are the protocol's to end."""
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        for peek in list(self._pending):
            peek.give_up("the listener closed")

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.error("accept failed: %s; pausing accepts for %.1fs", e, ACCEPT_BACKOFF)
                self._loop.remove_reader(self._sock.fileno())
                self._loop.call_later(ACCEPT_BACKOFF, self._resume)
                return
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peek = _Peek(self, conn)
            self._pending.add(peek)
            peek.start()

    def _resume(self) -> None:
        if not self._closed:
            self._loop.add_reader(self._sock.fileno(), self._accept)

    def dispatch(self, conn: socket.socket, hello: Hello) -> None:
        name = hello.server_name
        scope = self._trust.scope_for(name)
        if scope is None:
            self._run(
                self._loop.connect_accepted_socket(
                    self._factory,
                    conn,
                    ssl=self._certificates.listener,
                    ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
                )
            )
            return
        tls = self._trust.connection(scope, name)
        self._run(
            self._loop.connect_accepted_socket(
                lambda: OpenSSLTransport(
                    tls, self._factory, self._trust.handshake_done, self._trust.handshake_failed
                ),
                conn,
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
