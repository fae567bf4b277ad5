"""Listening sockets bound up front, so a taken port is one clear line, not a traceback."""

from __future__ import annotations

import errno
import socket

from shared.rpc import StartupError


def bind(address: str, key: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
    sock.listen(1024)
    sock.setblocking(False)
    return sock
