"""The test balancer (tests/support/balancer.py) on its own: round robin, passing over a
backend that refuses, removing and adding backends, and resets passed on as resets."""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.support.balancer import Backend, Balancer
from tests.support.net import free_port

pytestmark = pytest.mark.integration


class _Echo(socketserver.BaseRequestHandler):
    """Says its server's name, then echoes; `reset` as a line makes it send an RST."""

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.sendall(self.server.name + b"\n")  # type: ignore[attr-defined]
        while data := sock.recv(4096):
            if data == b"reset\n":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()  # before socketserver's shutdown(SHUT_WR) would send a FIN
                return
            sock.sendall(data)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@contextmanager
def echo_servers(count: int) -> Iterator[list[Backend]]:
    servers = []
    for i in range(count):
        server = _Server(("127.0.0.1", 0), _Echo)
        server.name = f"b{i}".encode()  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
    try:
        yield [("127.0.0.1", s.server_address[1]) for s in servers]
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()


def who(lb: Balancer, payload: bytes = b"ping\n") -> bytes:
    """Connect through the balancer: the backend's name; checks the bytes come back."""
    with socket.create_connection((lb.host, lb.port), timeout=5) as c:
        f = c.makefile("rb")
        name = f.readline().strip()
        c.sendall(payload)
        assert f.readline() == payload
        c.shutdown(socket.SHUT_WR)  # a half-close is passed on: the backend ends
        assert f.read() == b""
        return name


def test_round_robin_spreads_connections_evenly() -> None:
    with echo_servers(3) as backends, Balancer(backends) as lb:
        names = [who(lb) for _ in range(9)]
        assert names == [b"b0", b"b1", b"b2"] * 3
        assert lb.connections() == {b: 3 for b in backends}
        big = b"x" * 300_000 + b"\n"  # more than one read's worth, both ways
        assert who(lb, big) == b"b0"


def test_a_backend_that_refuses_is_passed_over() -> None:
    dead = ("127.0.0.1", free_port())  # nothing listens there
    with echo_servers(2) as (a, b), Balancer([a, dead, b]) as lb:
        names = [who(lb) for _ in range(6)]
        # Each connection that would have gone to `dead` goes to the next one, `b`.
        assert names == [b"b0", b"b1", b"b1", b"b0", b"b1", b"b1"]
        assert lb.refused() == {dead: 2}
        assert lb.connections() == {a: 2, b: 4}


def test_remove_and_add_backends() -> None:
    with echo_servers(2) as (a, b), Balancer([a, b]) as lb:
        lb.remove(a)
        assert [who(lb) for _ in range(3)] == [b"b1"] * 3
        lb.add(a)
        assert sorted(who(lb) for _ in range(4)) == [b"b0", b"b0", b"b1", b"b1"]
        lb.remove(a)
        lb.remove(b)
        # No backend: the client is reset, with nothing sent (so fast, at times, that
        # connect() itself reports it).
        with (
            pytest.raises(ConnectionResetError),
            socket.create_connection((lb.host, lb.port), timeout=5) as c,
        ):
            c.recv(10)
        assert lb.unserved == 1


def test_a_reset_from_the_backend_resets_the_client() -> None:
    with (
        echo_servers(1) as backends,
        Balancer(backends) as lb,
        socket.create_connection((lb.host, lb.port), timeout=5) as c,
    ):
        f = c.makefile("rb")
        assert f.readline() == b"b0\n"
        c.sendall(b"reset\n")
        with pytest.raises(ConnectionResetError):
            while c.recv(10):
                pass
