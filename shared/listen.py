"""Listening sockets bound up front, so a taken port is one clear line, not a traceback.

Several proxy workers share a port with SO_REUSEPORT: Linux spreads new connections
across the listening sockets of one user that all set it. That same rule would let an
unrelated program of this user that also sets it share the port silently, so the
supervisor first checks, with `ensure_free`, that nothing holds the port at all.
"""

from __future__ import annotations

import errno
import socket

from shared.rpc import StartupError


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
