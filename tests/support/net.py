"""Loopback helpers: free ports, waiting for a listener, who holds a connection."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

# Ports this test process has handed out. The kernel may offer a port again as soon as
# the probe socket closes, and a test that asks for several ports (proxy, authorize,
# sessions) before any is bound must get distinct ones.
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def tcp_peer_ports(pid: int) -> set[int]:
    """Remote ports of the established TCP connections process `pid` holds (Linux /proc):
    which process a connection belongs to, without asking the process."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):  # gRPC may use dual-stack IPv6 sockets for IPv4 peers
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            # remote "ADDR:PORT" in hex, state 01 = ESTABLISHED, inode
            if fields[3] == "01" and fields[9] in inodes:
                ports.add(int(fields[2].rsplit(":", 1)[1], 16))
    return ports
