"""The proxy's and authorize's own Python work per request: no sockets, TLS or gRPC.

One HttpConnection and the real Handler, route table, header processing and
Exchange; the downstream and upstream transports are in-memory stand-ins, the Check
answers ALLOW (with an identity header the size of a real JWT) on the next loop
turn, and the upstream answers `200 ok` on the next loop turn. What is left is what
the proxy's code costs per request, the part that `make bench`'s end-to-end figures
cannot separate from the kernel, TLS and the other processes.

The same for authorize: the real servicer decides batches of checks for a signed-in
session already in its cache (the steady state), signing an assertion for each.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import statistics
import time
from collections.abc import Coroutine
from typing import Any

from services.authorize.active_session import ActiveSession
from services.authorize.authorizer import AuthorizerServicer
from services.authorize.decide import Decider
from services.authorize.session_cache import SessionCache
from services.proxy.handler import Handler
from services.proxy.http import HttpConnection
from services.proxy.pages import Pages
from services.proxy.routes import ProxyRoutes
from services.proxy.upstream import Pool, Target, UpstreamConnection
from shared.config import parse_config
from shared.logs import setup_logging
from shared.pb import authorize_pb2
from shared.policy import SessionView
from shared.sessions import HandleCodec

REQUEST = (
    b"GET /docs/index.html?x=1 HTTP/1.1\r\n"
    b"Host: app.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0 Safari/537.36\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Accept-Language: en-US,en;q=0.9\r\n"
    b"Cookie: _pomerium=" + b"v1." + b"A" * 140 + b"; other=1\r\n"
    b"\r\n"
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Sun, 22 Nov 2026 21:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n"
)
JWT = "eyJhbGciOiJFUzI1NiJ9." + "x" * 420 + "." + "y" * 86


class _Transport:
    """Enough of asyncio.Transport for the protocols: records or forwards writes."""

    def __init__(self, on_write: Any) -> None:
        self._on_write = on_write
        self._closing = False

    def write(self, data: bytes) -> None:
        self._on_write(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def abort(self) -> None:
        self._closing = True


class _Check:
    def __init__(self) -> None:
        self.response = authorize_pb2.CheckResponse(outcome=authorize_pb2.ALLOW)
        self.response.set_headers.add(name="x-pomerium-jwt-assertion", value=JWT)
        self.response.set_headers.add(name="x-pomerium-claim-email", value="alice@example.com")

    async def decide(self, batched: authorize_pb2.BatchedCheck) -> authorize_pb2.CheckResponse:
        batched.id = 1
        batched.SerializeToString()  # as the real client does, to send it
        loop = asyncio.get_running_loop()
        future: asyncio.Future[authorize_pb2.CheckResponse] = loop.create_future()
        loop.call_soon(future.set_result, self.response)
        return await future


class _Pool(Pool):
    """One upstream connection that answers every request on the next loop turn."""

    def __init__(self) -> None:
        super().__init__()
        self._conn: UpstreamConnection | None = None

    async def acquire(self, target: Target, connect_timeout: float) -> UpstreamConnection:
        if self._conn is None:
            conn = UpstreamConnection(target, lambda c: None)
            loop = asyncio.get_running_loop()
            conn.connection_made(
                _Transport(lambda data: loop.call_soon(conn.data_received, RESPONSE))  # type: ignore[arg-type]
            )
            self._conn = conn
        self._conn.reused = True
        return self._conn

    def release(self, conn: UpstreamConnection) -> None:
        conn.events = None


async def _measure(n: int, runs: int) -> float:
    config = parse_config(
        {
            "routes": [
                {
                    "from": "http://app.example.com",
                    "to": "http://127.0.0.1:9",
                    "allow_any_authenticated_user": True,
                    "pass_identity_headers": True,
                }
            ]
        },
        {},
        "/",
    )
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def downstream_write(data: bytes) -> None:
        if data.endswith(b"ok\n") and not done.done():
            done.set_result(None)

    handler = Handler(ProxyRoutes(config), _Check(), _Pool(), Pages(None), None)  # type: ignore[arg-type]
    conn = HttpConnection(handler, set())
    conn.connection_made(_Transport(downstream_write))  # type: ignore[arg-type]
    samples = []
    for _ in range(runs):
        start = time.process_time_ns()
        for _ in range(n):
            done = loop.create_future()
            conn.data_received(REQUEST)
            await done
        samples.append((time.process_time_ns() - start) / n / 1000)
    return statistics.median(samples)


SECRET = base64.b64encode(b"hot-path-bench-secret-not-real!!").decode()


async def _measure_authorize(n: int, runs: int, batch_size: int) -> float:
    config = parse_config(
        {
            "shared_secret": SECRET,
            "routes": [
                {
                    "from": "https://app.example.com",
                    "to": "http://127.0.0.1:9",
                    "allow_any_authenticated_user": True,
                    "pass_identity_headers": True,
                }
            ],
        },
        {},
        "/",
    )
    assert config.shared_secret is not None
    handles = HandleCodec(config.shared_secret)
    now = time.time()
    cache = SessionCache(None)  # type: ignore[arg-type]  # never fetches: all cached
    view = SessionView(user_id="u1", email="alice@example.com", groups=("dev",))
    cache._cache["s1"] = ActiveSession("s1", 1, now + 3600, view)
    cache._live = True
    servicer = AuthorizerServicer(Decider(config), cache, handles)
    batch = authorize_pb2.CheckBatch()
    for i in range(batch_size):
        check = batch.checks.add(id=i).request
        check.request_id, check.scheme, check.host = f"{i:016x}", "https", "app.example.com"
        check.method, check.path, check.source_ip = "GET", "/docs/index.html", "127.0.0.1"
        check.session_handle = handles.seal("s1", int(now) + 3600)
    wire = batch.SerializeToString()
    samples = []
    for _ in range(runs):
        start = time.process_time_ns()
        for _ in range(n // batch_size):
            # As it arrives and leaves: parsed from the wire, answered onto the wire.
            out = await servicer.decide_batch(authorize_pb2.CheckBatch.FromString(wire))
            if out.results[0].response.outcome != authorize_pb2.ALLOW:
                raise RuntimeError(f"the bench check was not allowed: {out.results[0]}")
            out.SerializeToString()
        samples.append((time.process_time_ns() - start) / (n // batch_size * batch_size) / 1000)
    return statistics.median(samples)


def _run(coro: Coroutine[Any, Any, float]) -> float:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def per_request(n: int = 5_000, runs: int = 5, *, access_log: bool = False) -> float:
    """Median CPU µs per request of the proxy's own code; with `access_log`, its access
    line at log_level info too, formatted and written (to /dev/null) as in a service."""
    if not access_log:
        return _run(_measure(n, runs))
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
        setup_logging("info")
        try:
            return _run(_measure(n, runs))
        finally:
            logging.shutdown()
            root.handlers[:], root.level = saved


def report() -> str:
    rows = [
        ("proxy, one request (no sockets, TLS or authorize)", per_request()),
        (
            "proxy, one request, with its access line at log_level info",
            per_request(access_log=True),
        ),
        ("authorize, one check of a batch of 8 (cached session, ES256 assertion)", per_check()),
    ]
    lines = ["| code path, in one process | CPU µs |", "|---|---|"]
    lines += [f"| {name} | {us:.1f} |" for name, us in rows]
    return "\n".join(lines)


def per_check(n: int = 4_000, runs: int = 5, batch_size: int = 8) -> float:
    """Median CPU µs per check of authorize's own code (batches of `batch_size`)."""
    return _run(_measure_authorize(n, runs, batch_size))


if __name__ == "__main__":
    print(report())
