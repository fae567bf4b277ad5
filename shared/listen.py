"""Listening sockets bound up front, so a taken port is one clear line, not a traceback.

Several proxy workers share a port with SO_REUSEPORT: Linux spreads new connections
across the listening sockets of one user that all set it. That same rule would let an
unrelated program of this user that also sets it share the port silently, so the
supervisor first checks, with `ensure_free`, that nothing holds the port at all.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable

from shared.rpc import StartupError

log = logging.getLogger("vallum.listen")


def bind(address: str, key: str, *, reuse_port: bool = False) -> socket.socket:
    sock = _bound(address, key, reuse_port=reuse_port)
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def ensure_free(address: str, key: str) -> None:
    """Raise the `bind` error if another socket already holds `address`.

    The probe does not set SO_REUSEPORT, so a listener that set it conflicts too, and
    it never listens, so no connection can land on it before it is closed.
    """
    _bound(address, key, reuse_port=False).close()


def _bound(address: str, key: str, *, reuse_port: bool) -> socket.socket:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as e:
        sock.close()
        hint = (
            " (stop the other process or choose another port)"
            if e.errno == errno.EADDRINUSE
            else ""
        )
        raise StartupError(f"{key}: cannot listen on {address}: {e.strerror}{hint}") from None
    return sock


# Connections taken per wake-up of the listening socket, so a burst cannot starve the
# connections already open.
ACCEPTS_PER_WAKEUP = 64
# Out of file descriptors: wait before accepting again rather than spin.
ACCEPT_BACKOFF = 0.1


class AcceptLoop:
    """Accepts connections on a listening socket from the event loop itself, handing
    each (non-blocking, TCP_NODELAY) with its peer address to `on_socket`: for servers
    that must look at a connection before any TLS library does (the proxy's SNI and
    ALPN peek) or hear of every refused handshake (the sidecar)."""

    def __init__(
        self, sock: socket.socket, on_socket: Callable[[socket.socket, str], None]
    ) -> None:
        self._sock = sock
        self._on_socket = on_socket
        self._loop = asyncio.get_running_loop()
        self._closed = False

    def start(self) -> None:
        self._loop.add_reader(self._sock.fileno(), self._accept)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                conn, peer = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.error("accept failed: %s; pausing accepts for %.1fs", e, ACCEPT_BACKOFF)
                self._loop.remove_reader(self._sock.fileno())
                self._loop.call_later(ACCEPT_BACKOFF, self._resume)
                return
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._on_socket(conn, peer[0] if peer else "")

    def _resume(self) -> None:
        if not self._closed:
            self._loop.add_reader(self._sock.fileno(), self._accept)
